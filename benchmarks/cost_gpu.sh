#!/usr/bin/env bash
# The README's GPU cost tables, on one CUDA device, in four sections:
#   steps   benchmarks/cost.py on MiniLM's shape and the larger shapes (random weights: BERT-base,
#           BERT-large, T5-base, a 1.1B decoder), single sentences and sentence pairs
#   energy  benchmarks/gpu_cost.py (T5-base, each method in its own process, energy from NVML)
#   chunk   READ's side chunk size: 1,024 tokens (the default: on a GPU the side network checkpoints
#           chunks of it), 4,096, or the whole batch at once (--side-chunk-tokens none)
#   bf16    the frozen backbone in bfloat16 for the rows that do not train it
#   parts   the steps section's READ rows with the batch in parts of whole examples, as readapt
#           trains on a CPU (readapt.microbatch; cost.py --side-parts always)
#   side    READ's side network in float32 and in bfloat16 autocast (--side-dtype), from MiniLM's
#           width to the 1.1B decoder
# The other sections run READ's side network in float32 (--side-dtype float32, what auto picks on a
# GPU); the side section compares it with bfloat16.
# Needs torch, transformers and peft; readapt itself is read from src/.
# Usage: [PYTHON=python3] bash benchmarks/cost_gpu.sh [output dir] [section ...]   (default: all six)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/cost_gpu}
SECTIONS=" ${*:2} "
[[ $SECTIONS == "  " ]] && SECTIONS=" steps energy chunk bf16 parts side "
want() { [[ $SECTIONS == *" $1 "* ]]; }
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
cost() {  # name, then cost.py options (a later --side-dtype wins)
  SECONDS=0
  $PY benchmarks/cost.py --device cuda --steps 10 --side-dtype float32 "${@:2}" --out "$OUT/$1.md" \
    || echo "($1 failed: exit $?)"
  echo "($1: ${SECONDS} s)"
}
if want steps; then
  cost bert_large --shape bert-large
  cost decoder_1b --shape decoder-1b
  cost bert_large_pairs --shape bert-large --pairs
  cost minilm_random --shape minilm-random
  cost minilm_random_pairs --shape minilm-random --pairs
  cost bert_base --shape bert-base
  cost t5_base --shape t5-base
fi
if want energy; then
  $PY benchmarks/gpu_cost.py --methods full lora adapter prompt read --out "$OUT"
fi
if want chunk; then
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
fi
if want parts; then
  # the batch in parts of whole examples on the GPU too (readapt does it on CPUs only): the steps
  # section's shapes again, to show why
  mkdir -p "$OUT/parts_on_gpu"
  for shape in bert-large decoder-1b minilm-random bert-base t5-base; do
    cost "parts_on_gpu/${shape//-/_}" --shape "$shape" --side-parts always
  done
  for shape in bert-large minilm-random; do
    cost "parts_on_gpu/${shape//-/_}_pairs" --shape "$shape" --pairs --side-parts always
  done
fi
if want bf16; then
  # the frozen backbone in bfloat16 (readapt train --backbone-dtype bfloat16) for the rows that do not
  # train it; full fine-tuning, LoRA and adapters stay float32, as readapt trains them
  cost bert_large_bf16 --shape bert-large --backbone-dtype bfloat16
  cost decoder_1b_bf16 --shape decoder-1b --backbone-dtype bfloat16
fi
if want side; then
  # READ's side network in float32 against bfloat16 autocast (readapt train --side-dtype; auto keeps
  # float32 on a GPU because of what this measures), the frozen backbone in float32 either way
  mkdir -p "$OUT/side_dtype"
  for shape in minilm-random bert-large t5-base decoder-1b; do
    for dtype in float32 bfloat16; do
      cost "side_dtype/${shape//-/_}_$dtype" --shape "$shape" --rows "paper Joiner), mean|paper Joiner), LM" \
        --side-dtype "$dtype"
    done
  done
  for dtype in float32 bfloat16; do
    cost "side_dtype/bert_large_pairs_$dtype" --shape bert-large --pairs --rows GRU --side-dtype "$dtype"
  done
  # the same with the frozen backbone in bfloat16 (--backbone-dtype bfloat16), whose states are bf16
  for shape in bert-large decoder-1b; do
    for dtype in float32 bfloat16; do
      cost "side_dtype/${shape//-/_}_bf16_backbone_$dtype" --shape "$shape" --backbone-dtype bfloat16 \
        --rows "paper Joiner), mean|paper Joiner), LM" --side-dtype "$dtype"
    done
  done
fi
