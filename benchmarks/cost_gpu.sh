#!/usr/bin/env bash
# The README's GPU cost tables, on one CUDA device: benchmarks/cost.py on MiniLM's shape and the
# larger shapes (random weights: BERT-base, BERT-large, T5-base, a 1.1B decoder), single sentences
# and sentence pairs, then benchmarks/gpu_cost.py (T5-base, each method in its own process, energy
# from NVML), then the side network's chunk size (READ trains it over at most 1,024 tokens at a
# time, recomputing each chunk in backward: the time that costs against the memory it saves).
# Needs torch, transformers and peft; readapt itself is read from src/.
# Usage: [PYTHON=python3] bash benchmarks/cost_gpu.sh [output dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/cost_gpu}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
cost() {  # name, then cost.py options
  SECONDS=0
  $PY benchmarks/cost.py --device cuda --steps 10 "${@:2}" --out "$OUT/$1.md"
  echo "($1: ${SECONDS} s)"
}
cost bert_large --shape bert-large
cost t5_base --shape t5-base
cost decoder_1b --shape decoder-1b
cost minilm_random --shape minilm-random
cost bert_large_pairs --shape bert-large --pairs
cost minilm_random_pairs --shape minilm-random --pairs
cost bert_base --shape bert-base
$PY benchmarks/gpu_cost.py --methods full lora adapter prompt read --out "$OUT"
mkdir -p "$OUT/side_chunk"
for chunk in 1024 4096 none; do
  for shape in minilm-random bert-large; do
    cost "side_chunk/${shape//-/_}_$chunk" --shape "$shape" --rows "mean pooling" --side-chunk-tokens "$chunk"
  done
done
for chunk in 1024 none; do
  cost "side_chunk/bert_large_pairs_$chunk" --shape bert-large --pairs --rows GRU --side-chunk-tokens "$chunk"
  cost "side_chunk/decoder_1b_$chunk" --shape decoder-1b --rows paper --side-chunk-tokens "$chunk"
done
# the frozen backbone in bfloat16 (readapt train --backbone-dtype bfloat16) for the rows that do not
# train it; full fine-tuning, LoRA and adapters stay float32, as readapt trains them
cost bert_large_bf16 --shape bert-large --backbone-dtype bfloat16
cost decoder_1b_bf16 --shape decoder-1b --backbone-dtype bfloat16
