"""The README's GLUE table after the sentence-pair work: one table from the committed run folders.

    python benchmarks/glue_table.py [--out benchmarks/results/glue_combined]

Rows (each cell mean ± std over the seeds that ran; the table's seeds column says which):
  full, bitfit, lora, prompt, adapter, lst   benchmarks/results/glue (bash benchmarks/glue.sh): each
                                            method's defaults (one sequence per pair, mean pooling), seed
                                            0; seeds 1-2 from benchmarks/results/glue_seeds (glue_seeds.sh)
                                            where they ran
  read (paper)                              READ as in the paper: benchmarks/results/read_variants "plain"
  read                                      READ's default today: on the pair tasks separately encoded
                                            pairs, pair pooling, the projecting Joiner, a GRU, every
                                            second layer ("separate-projection-gru-even": --layers 2 4 6
                                            is --layer-stride 2 on MiniLM); on single sentences the
                                            paper's network at r = 96 ("plain-r96")
  read (separate, projection, LSTM)         an earlier default: "separate-projection" on the pair
                                            tasks (an LSTM), plain READ (r = 128) on single sentences
  read_top (hybrid, not READ)               READ's default plus the backbone's top layer fine-tuned
                                            (benchmarks/results/glue_hybrid: bash benchmarks/glue_hybrid.sh),
                                            live runs, 3 seeds
  read_top, 2 layers (hybrid, not READ)     the same with the top two layers (benchmarks/results/top_layers:
                                            bash benchmarks/top_layers.sh "" "<the five tasks>" 2), 3 seeds
Every run used the same budget (packaged MiniLM, 2,000 seeded training examples, 3 epochs, batch 32).
The READ runs cached the backbone's states (--cache-states) and ran beside other benchmarks: their
time, memory and tensor peak are not a live run's, so READ's cost columns are left empty here;
benchmarks/cost.py compares live training steps side by side, and the table of
benchmarks/glue.sh has plain READ's live costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from readapt.report import write_report

PAIR_TASKS = {"glue/stsb", "glue/mrpc", "glue/rte"}
ROOT = Path("benchmarks/results")


def load(folder: Path) -> list[dict]:
    """A bench folder's cells: its run folders' metrics.json where they are here, else its results.jsonl."""
    runs = sorted((folder / "runs").glob("*/metrics.json"))
    if runs:
        return [json.loads(p.read_text()) for p in runs]
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "glue_combined"))
    args = parser.parse_args()
    records = [json.loads(line) for line in (ROOT / "glue" / "results.jsonl").read_text().splitlines()]
    records = [r for r in records if r["method"] != "read"]
    if (ROOT / "glue_seeds" / "results.jsonl").is_file():  # bash benchmarks/glue_seeds.sh: seeds 1-2
        records += load(ROOT / "glue_seeds")
    variants = ROOT / "read_variants" / "results.jsonl"  # written by variants_table.py
    for r in (json.loads(line) for line in variants.read_text().splitlines()):
        variant = r["variant"]
        # These READ runs cached the backbone's states and shared the machine with other jobs:
        # their time and memory are not a live run's, so the table leaves them out (see above).
        r = {k: v for k, v in r.items() if k not in ("peak_memory_mb", "train_seconds", "energy_joules", "cost")}
        if variant == "plain":
            records.append({**r, "method": "read (paper)"})
        if variant == ("separate-projection-gru-even" if r["task"] in PAIR_TASKS else "plain-r96"):
            records.append({**r, "method": "read"})
        if variant == ("separate-projection" if r["task"] in PAIR_TASKS else "plain"):
            records.append({**r, "method": "read (separate, projection, LSTM)"})
    if (ROOT / "glue_hybrid").is_dir():  # bash benchmarks/glue_hybrid.sh
        records += [{**r, "method": "read_top (hybrid, not READ)"} for r in load(ROOT / "glue_hybrid")]
    if (ROOT / "top_layers").is_dir():  # bash benchmarks/top_layers.sh: the same hybrid, top K layers
        for r in load(ROOT / "top_layers"):
            if r["argv"][r["argv"].index("--top-layers") + 1] == "2":
                records.append({**r, "method": "read_top, 2 layers (hybrid, not READ)"})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    results.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    table, _ = write_report(results, out)
    print(table.read_text())


if __name__ == "__main__":
    main()
