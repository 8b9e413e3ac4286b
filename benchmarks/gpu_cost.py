"""Training cost of READ vs full fine-tuning vs LoRA on a T5-base-shaped model, side by side.

    python benchmarks/gpu_cost.py [--steps 30] [--batch-size 32] [--source-length 128] [--out DIR]

Random weights (cost does not depend on their values), a synthetic text-to-text batch shaped like
GLUE (source 128 tokens, target 4), the same batches for every method. Each method runs in a
fresh child process so its peak memory is its own. Per method: peak allocated and reserved GPU
memory over the measured steps (weights and optimizer state included), seconds per step,
examples per second, and energy from NVML's total-energy counter (null with the reason where
NVML cannot be read). Prints a Markdown table with ratios to full fine-tuning and writes
gpu_cost.json / gpu_cost.md to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = ("full", "lora", "read")


def t5_base_shaped():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                      num_heads=12, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config)


def measure_one(method: str, steps: int, warmup: int, batch_size: int, source_length: int, target_length: int,
                device: str) -> dict:
    import torch

    from readapt import microbatch
    from readapt.measure import Meter, device_name
    from readapt.methods import count_parameters, get_method

    torch.manual_seed(0)
    model = get_method(method).build(t5_base_shaped(), None, {}).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=get_method(method).default_lr)
    generator = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, 32128, (batch_size, source_length), generator=generator),
                "attention_mask": torch.ones(batch_size, source_length, dtype=torch.long),
                "labels": torch.randint(2, 32128, (batch_size, target_length), generator=generator)}
               for _ in range(4)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    model.train()

    def step(i):  # as readapt train steps: READ in parts of whole examples (readapt.microbatch)
        microbatch.backward(model, batches[i % len(batches)])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):  # allocator, kernels and optimizer state reach steady state
        step(i)
    with Meter(device) as meter:
        for i in range(steps):
            step(i)
    cost = meter.result()
    trainable, total = count_parameters(model)
    return {"method": method, "device": device_name(device), "steps": steps, "batch_size": batch_size,
            "source_length": source_length, "target_length": target_length,
            "trainable_params": trainable, "total_params": total,
            "peak_memory_mb": cost["peak_memory_mb"], "peak_memory_reserved_mb": cost["peak_memory_reserved_mb"],
            "seconds_per_step": cost["seconds"] / steps, "examples_per_second": steps * batch_size / cost["seconds"],
            "energy_joules": cost["energy_joules"], "energy_source": cost["energy_source"],
            "energy_unavailable_reason": cost["energy_unavailable_reason"],
            "energy_joules_per_step": None if cost["energy_joules"] is None else cost["energy_joules"] / steps}


def table(rows: list[dict]) -> str:
    full = next((r for r in rows if r["method"] == "full"), None)

    def ratio(r, key):
        return f"{r[key] / full[key]:.2f}" if full and r[key] is not None and full[key] else "-"

    lines = ["| method | trainable params | peak alloc (MB) | / full | peak reserved (MB) | s/step | / full | "
             "examples/s | energy/step (J) | / full |", "|" + "---|" * 10]
    for r in rows:
        energy = "n/a" if r["energy_joules_per_step"] is None else f"{r['energy_joules_per_step']:.1f}"
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {r['peak_memory_mb']:.0f} | {ratio(r, 'peak_memory_mb')} | "
                     f"{r['peak_memory_reserved_mb'] or 0:.0f} | {r['seconds_per_step']:.3f} | {ratio(r, 'seconds_per_step')} | "
                     f"{r['examples_per_second']:.1f} | {energy} | {ratio(r, 'energy_joules_per_step')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--source-length", type=int, default=128)
    parser.add_argument("--target-length", type=int, default=4)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: measure one method, print JSON
    args = parser.parse_args()
    shape = (args.steps, args.warmup, args.batch_size, args.source_length, args.target_length, args.device)
    if args.one:
        print(json.dumps(measure_one(args.one, *shape)))
        return
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--one", method, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--source-length", str(args.source_length),
               "--target-length", str(args.target_length), "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{method}: {rows[-1]['peak_memory_mb']:.0f} MB, {rows[-1]['seconds_per_step']:.3f} s/step", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_cost.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = f"{rows[0]['device'] if rows else args.device}; T5-base shape, batch {args.batch_size}, source " \
           f"{args.source_length}, target {args.target_length}, {args.steps} measured steps after {args.warmup} warm-up\n\n"
    (out / "gpu_cost.md").write_text(text + table(rows))
    print(text + table(rows))


if __name__ == "__main__":
    main()
