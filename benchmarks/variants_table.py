"""Table of READ side-network variants from benchmarks/read_variants.sh's run folders.

One row per variant: each task's validation and test score (GLUE convention, in points, mean ± std
over seeds), the average over the tasks the variant ran, the trainable parameter count and the
training time. The default is picked by the validation average over the pair tasks and single
tasks alike; the test columns are only reported.
Usage: python benchmarks/variants_table.py OUT "name|flags" ...
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

SHORT = {"glue/stsb": "STS-B", "glue/mrpc": "MRPC", "glue/rte": "RTE", "glue/sst2": "SST-2", "glue/cola": "CoLA",
         "rotten_tomatoes": "RT"}
PAIRS = ("glue/stsb", "glue/mrpc", "glue/rte")


def score(record: dict, split: str) -> float:
    return 100.0 * statistics.fmean(record[split].values())


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def main(out: Path, variants: list[str]) -> str:
    # the committed results.jsonl first (run folders are not committed: a fresh checkout has none),
    # then every run folder, which replaces the record of the same (variant, task, seed)
    records = {}
    kept = out / "results.jsonl"
    for line in kept.read_text().splitlines() if kept.exists() else []:
        record = json.loads(line)
        records[(record["variant"], record["task"], record["seed"])] = record
    for path in sorted((out / "runs").glob("*/metrics.json")):
        task, variant, _seed = path.parent.name.split("__")
        record = {**json.loads(path.read_text()), "variant": variant}
        records[(variant, record["task"], record["seed"])] = record
    found = list(records.values())
    cells = defaultdict(list)  # (variant, task) -> records
    for record in found:
        cells[(record["variant"], record["task"])].append(record)
    # every cell's metrics.json, one per line: what the table (and glue_table.py) is made from
    (out / "results.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in found))
    tasks = [t for t in SHORT if any(t == task for _, task in cells)]
    pairs = any(t in PAIRS for t in tasks)
    head = ["variant", "flags", *[f"{SHORT[t]} val" for t in tasks], *(["pair tasks val avg"] if pairs else []),
            *[f"{SHORT[t]} test" for t in tasks], "seeds", "trainable params", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen = set()
    for v in variants:
        name, flags = v.split("|", 1)
        rows = {t: cells.get((name, t), []) for t in tasks}
        if name in seen or not any(rows.values()):
            continue
        seen.add(name)
        val = [fmt([score(r, "validation") for r in rows[t]]) for t in tasks]
        # the pair tasks' validation average, per seed that finished all three (what picks a default)
        seeds_done = set.intersection(*[{r["seed"] for r in rows.get(t, [])} for t in PAIRS if t in rows] or [set()])
        pair_avg = [statistics.fmean(score(r, "validation") for t in PAIRS if t in rows for r in rows[t]
                                     if r["seed"] == seed) for seed in sorted(seeds_done)]
        if pairs:
            val.append(fmt(pair_avg) if all(t in rows and rows[t] for t in PAIRS) else "-")
        test = [fmt([score(r, "test") for r in rows[t]]) for t in tasks]
        records = [r for rs in rows.values() for r in rs]
        seeds = sorted({r["seed"] for r in records})
        params = sorted({r["trainable_params"] for r in records})
        seconds = statistics.fmean(r["train_seconds"] for r in records)
        lines.append(f"| {name} | {f'`{flags}`' if flags else '(the defaults)'} | " + " | ".join(val + test)
                     + f" | {','.join(map(str, seeds))} | {'/'.join(f'{p:,}' for p in params)} | {seconds:.0f} |")
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2:]))
