"""Paired validation differences between two READ variants, seed by seed (the same data split and
initialisation seed for both), from the results.jsonl files variants_table.py writes.

    python benchmarks/paired.py FOLDER:BASE:CANDIDATE [FOLDER:BASE:CANDIDATE ...]

Each argument names a results folder and two variants in it; every (task, seed) that both ran gives
one difference, candidate minus base, in validation points (the mean of the task's validation
metrics x 100, as in variants_table.py). Prints them per task, then their mean, standard deviation,
standard error and how many are below zero. Validation only: the test split is not read.
"""

import json
import statistics
import sys
from pathlib import Path


def validation(record: dict) -> float:
    return 100.0 * statistics.fmean(record["validation"].values())


def differences(folder: Path, base: str, candidate: str) -> dict[str, list[float]]:
    cells = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        cells[(r["variant"], r["task"], r["seed"])] = validation(r)
    found: dict[str, list[float]] = {}
    for (variant, task, seed), score in sorted(cells.items()):
        if variant == candidate and (base, task, seed) in cells:
            found.setdefault(task, []).append(score - cells[(base, task, seed)])
    return found


def main(specs: list[str]) -> None:
    every = []
    for spec in specs:
        folder, base, candidate = spec.split(":")
        for task, diffs in differences(Path(folder), base, candidate).items():
            print(f"{task}: {candidate} - {base}: " + ", ".join(f"{d:+.2f}" for d in diffs))
            every += diffs
    sd = statistics.stdev(every)
    print(f"all {len(every)} pairs: mean {statistics.fmean(every):+.2f}, sd {sd:.2f}, "
          f"se {sd / len(every) ** 0.5:.2f}, {sum(d < 0 for d in every)} below zero")


if __name__ == "__main__":
    main(sys.argv[1:])
