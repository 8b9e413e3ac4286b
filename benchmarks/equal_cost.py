"""Equal-cost view: what READ reaches on validation within full fine-tuning's training time.

    python benchmarks/equal_cost.py --full DIR [DIR ...] --read DIR [--out FILE]

--full: folders of full fine-tuning run folders, or results.jsonl files (e.g. benchmarks/results/glue/
        results.jsonl); where several
        hold a run of the same task and seed (other heads), the one with the best validation
        score is the reference: full fine-tuning at its best
--read: run folders of a long READ run on the same tasks and seeds (benchmarks/equal_cost.sh)

Per task (mean over the seeds both have): full fine-tuning's training time and best validation
score; READ's best validation score within that time, the epochs that took, and the time READ
needed to come within 1 point of full fine-tuning's best validation score ("not reached" if it
never did). READ's clock starts with its one frozen pass (cache_seconds: the backbone's states for
every split, computed once) and adds each epoch's training time; evaluation is not counted for
either method. Validation only: the test split plays no part here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

SHORT = {"glue/stsb": "STS-B", "glue/mrpc": "MRPC", "glue/rte": "RTE", "glue/sst2": "SST-2", "glue/cola": "CoLA"}


def runs(folders: list[Path], method: str) -> dict:
    """(task, seed) -> metrics of ``method``'s run with the best validation score among ``folders``."""
    found = {}
    for folder in folders:
        if folder.is_file():  # a results.jsonl (readapt bench's, one metrics.json per line)
            records = [json.loads(line) for line in folder.read_text().splitlines() if line.strip()]
        else:
            records = [json.loads(path.read_text()) for path in sorted(folder.glob("*/metrics.json"))]
        for m in records:
            key = (m["task"], m["seed"])
            if m["method"] == method and (key not in found or best(m) > best(found[key])):
                found[key] = m
    return found


def best(metrics: dict) -> float:
    return max(points(h["validation"]) for h in metrics["history"])


def points(scores: dict) -> float:
    return 100.0 * statistics.fmean(scores.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", required=True, nargs="+")
    parser.add_argument("--read", required=True)
    parser.add_argument("--out", default="benchmarks/results/equal_cost/table.md")
    args = parser.parse_args()
    full, read = runs([Path(f) for f in args.full], "full"), runs([Path(args.read)], "read")
    rows = defaultdict(list)
    for key in sorted(set(full) & set(read)):
        f, r = full[key], read[key]
        budget = f["train_seconds"]
        best_full = best(f)
        clock = [(r.get("cache_seconds") or 0.0) + h["train_seconds"] for h in r["history"]]
        scores = [points(h["validation"]) for h in r["history"]]
        within = [i for i, t in enumerate(clock) if t <= budget]
        best_within = max((scores[i] for i in within), default=float("nan"))
        reached = next((t for t, s in zip(clock, scores) if s >= best_full - 1.0), None)
        rows[key[0]].append({"budget": budget, "full": best_full, "read": best_within,
                             "epochs": len(within), "reached": reached, "read_epochs": len(scores),
                             "read_best": max(scores)})
    lines = ["| task | seeds | full FT train s | full FT best val | READ best val within that time | READ epochs in it "
             "| READ s to within 1 pt of full | READ best val, all epochs |", "|---|---|---|---|---|---|---|---|"]
    for task in [t for t in SHORT if t in rows]:
        rs = rows[task]
        mean = lambda k: statistics.fmean(r[k] for r in rs)  # noqa: E731
        reached = [r["reached"] for r in rs]
        when = (f"{statistics.fmean(reached):.0f}" if all(t is not None for t in reached)
                else f"not reached ({sum(t is None for t in reached)} of {len(rs)} seeds)")
        lines.append(f"| {SHORT[task]} | {len(rs)} | {mean('budget'):.0f} | {mean('full'):.1f} | {mean('read'):.1f} | "
                     f"{mean('epochs'):.1f} of {rs[0]['read_epochs']} | {when} | {mean('read_best'):.1f} |")
    table = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
