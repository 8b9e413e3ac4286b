#!/usr/bin/env bash
# The README's "One training step" tables: benchmarks/cost.py on the packaged MiniLM, one thread,
# batch 32 x 128, single sentences (with per-row RSS in child processes) and sentence pairs.
# Run it on an otherwise idle machine: the steps are interleaved, but a busy machine still adds noise.
# Usage: bash benchmarks/cost.sh [output dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/cost}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
.venv/bin/python benchmarks/cost.py --shape minilm --rss --out "$OUT/minilm.md"
.venv/bin/python benchmarks/cost.py --shape minilm --pairs --out "$OUT/minilm_pairs.md"
# READ's side network in float32 beside the default (--side-dtype auto: bfloat16 on a CPU with AMX)
mkdir -p "$OUT/side_float32"
.venv/bin/python benchmarks/cost.py --shape minilm --rows READ --side-dtype float32 --out "$OUT/side_float32/minilm.md"
.venv/bin/python benchmarks/cost.py --shape minilm --pairs --rows READ --side-dtype float32 \
  --out "$OUT/side_float32/minilm_pairs.md"
# a repeat of the single-sentence default's rows (r = 96), to show the run-to-run spread of its ratios
.venv/bin/python benchmarks/cost.py --shape minilm --rows "r=96" --out "$OUT/single_r96_repeat.md"
# the paper's network on every second layer (--layer-stride 2; a tie on single sentences' validation)
.venv/bin/python benchmarks/cost.py --shape minilm --rows "paper Joiner), mean|every 2nd layer), mean" \
  --out "$OUT/single_stride2.md"
# bfloat16 everywhere it can go: the frozen backbone's weights in bf16 for the frozen forward and READ
# (--backbone-dtype bfloat16), beside the frozen forward and the peers under bf16 autocast (readapt
# trains the peers in float32; these rows show what mixed precision would buy them on this CPU)
.venv/bin/python benchmarks/cost.py --shape minilm --backbone-dtype bfloat16 \
  --rows "paper Joiner), mean pooling|autocast" --out "$OUT/bf16_everywhere.md"
# The size of READ's parts on the CPU (readapt.microbatch; the default, 256 side tokens, against 1,024
# and 128): the READ rows over mean pooling and separate pairs, beside their own frozen forward
mkdir -p "$OUT/part_tokens"
for tokens in 1024 256 128; do
  .venv/bin/python benchmarks/cost.py --shape minilm --rows "mean pooling" --side-chunk-tokens "$tokens" \
    --out "$OUT/part_tokens/single_$tokens.md"
  .venv/bin/python benchmarks/cost.py --shape minilm --pairs --rows "separate pairs" \
    --side-chunk-tokens "$tokens" --out "$OUT/part_tokens/pairs_$tokens.md"
done
