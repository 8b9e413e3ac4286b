"""Result tables and plots from ``results.jsonl`` (one metrics.json object per line).

The table has the shape of the READ paper's Table 1: a row per method, a column per task with
its official GLUE score (mean +- std over seeds, in points), the average, the share of trainable
parameters, and the cost of training (peak memory, time, energy) with ratios to full fine-tuning
measured in the same run of the benchmark. In each task column the best mean is bold, and so is
every method within one standard deviation of it: a tie, not a win. A last row gives what a model
that learned nothing scores (the training set's majority class; the mean for regression), and a
† marks a method whose run predicted a single class for every example, named in a line below.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

METHOD_ORDER = ("full", "bitfit", "lora", "prompt", "adapter", "lst", "probe", "read")
SHORT = {"glue/cola": "CoLA", "glue/sst2": "SST-2", "glue/mrpc": "MRPC", "glue/qqp": "QQP", "glue/stsb": "STS-B",
         "glue/mnli": "MNLI", "glue/qnli": "QNLI", "glue/rte": "RTE", "glue/wnli": "WNLI",
         "rotten_tomatoes": "RT"}
METRIC_SHORT = {"matthews_correlation": "Mcc", "accuracy": "Acc", "f1": "F1", "pearson": "P", "spearmanr": "S"}


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _score(record: dict, split: str) -> float:
    """GLUE convention: a task's score is the mean of its metrics (MRPC: F1 and accuracy), in points."""
    return 100.0 * statistics.fmean(record[split].values())


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def summarise(records: Iterable[dict], split: str = "test") -> dict:
    """Per method: task -> scores over seeds, average over tasks per seed, and costs."""
    by_method: dict[str, dict] = defaultdict(lambda: {"tasks": defaultdict(list), "cost": defaultdict(list)})
    tasks: list[str] = []
    for r in records:
        if not r.get(split):
            continue
        entry = by_method[r["method"]]
        entry["tasks"][r["task"]].append((r["seed"], _score(r, split)))
        for key in ("peak_memory_mb", "train_seconds", "energy_joules", "trainable_percent", "examples_per_second"):
            if r.get(key) is not None:
                entry["cost"][key].append(r[key])
        tensor_peak = (r.get("cost") or {}).get("peak_tensor_memory_mb")  # first training steps, CPU
        if tensor_peak is not None:
            entry["cost"]["peak_tensor_memory_mb"].append(tensor_peak)
        if r["task"] not in tasks:
            tasks.append(r["task"])
    tasks.sort(key=lambda t: list(SHORT).index(t) if t in SHORT else len(SHORT))
    baselines = defaultdict(list)  # task -> the majority-class score of each run that recorded it
    for r in records:
        if (r.get("majority_baseline") or {}).get(split):
            baselines[r["task"]].append(100.0 * statistics.fmean(r["majority_baseline"][split].values()))
    summary = {}
    for method, entry in by_method.items():
        seeds = sorted({s for scores in entry["tasks"].values() for s, _ in scores})
        complete = all(t in entry["tasks"] for t in tasks)
        averages = []
        for seed in seeds:  # the GLUE average of one seed, over the tasks that seed finished
            per_task = [v for t in tasks for s, v in entry["tasks"].get(t, []) if s == seed]
            if complete and len(per_task) == len(tasks):
                averages.append(statistics.fmean(per_task))
        summary[method] = {"tasks": {t: [v for _, v in entry["tasks"].get(t, [])] for t in tasks},
                           "average": averages, "cost": {k: statistics.fmean(v) for k, v in entry["cost"].items()}}
    baseline = {t: statistics.fmean(v) for t, v in baselines.items()}
    return {"tasks": tasks, "methods": summary, "baseline": baseline, "single_class": single_class(records, split)}


def single_class(records: Iterable[dict], split: str = "test") -> dict[tuple[str, str], list[int]]:
    """(method, task) -> the seeds whose run predicted one class for every ``split`` example: whatever
    its score, such a run has learned nothing (runs from before this was recorded are not flagged)."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in records:
        if r.get(split) and (r.get("distinct_predictions") or {}).get(split) == 1:
            found[(r["method"], r["task"])].append(r["seed"])
    return dict(found)


def best_and_ties(summary: dict, task: str) -> set[str]:
    """The method with the best mean on ``task`` and every method within one standard deviation of
    it (either's): these are tied, and none of them is reported as the winner alone."""
    stats = {m: _mean_std(v["tasks"][task]) for m, v in summary["methods"].items() if v["tasks"].get(task)}
    if not stats:
        return set()
    best = max(stats, key=lambda m: stats[m][0])
    mean, std = stats[best]
    return {m for m, (mu, sd) in stats.items() if mean - mu <= max(std, sd)}


def markdown_table(records: list[dict], split: str = "test") -> str:
    s = summarise(records, split)
    tasks, methods = s["tasks"], s["methods"]
    metric_names = {}
    for r in records:
        if r.get(split):
            metric_names[r["task"]] = "/".join(METRIC_SHORT.get(m, m) for m in r[split])
    order = [m for m in METHOD_ORDER if m in methods] + sorted(set(methods) - set(METHOD_ORDER))
    full_cost = methods.get("full", {}).get("cost", {})
    header = (["Method"] + [f"{SHORT.get(t, t)} ({metric_names.get(t, '')})" for t in tasks]
              + ["Avg", "Trainable %", "Peak mem (MB)", "Mem / full", "Tensor peak (MB)", "Tensor / full",
                 "Train time (s)", "Time / full", "Energy (J)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    leaders = {t: best_and_ties(s, t) if len(methods) > 1 else set() for t in tasks}
    for method in order:
        m = methods[method]
        cost = m["cost"]

        def value(key, digits=0):  # "-" where a run did not measure it
            return f"{cost[key]:.{digits}f}" if key in cost else "-"

        def ratio(key):
            if key in cost and full_cost.get(key):
                return f"{cost[key] / full_cost[key]:.2f}"
            return "-"

        energy = f"{cost['energy_joules']:.0f}" if "energy_joules" in cost else "n/a"
        bold = lambda text, task: f"**{text}**" if method in leaders[task] else text  # noqa: E731
        flag = lambda task: " †" if (method, task) in s["single_class"] else ""  # noqa: E731
        row = ([method] + [bold(_fmt(m["tasks"][t]), t) + flag(t) for t in tasks] + [_fmt(m["average"])]
               + [value("trainable_percent", 3), value("peak_memory_mb"),
                  ratio("peak_memory_mb"), value("peak_tensor_memory_mb"),
                  ratio("peak_tensor_memory_mb"), value("train_seconds"), ratio("train_seconds"),
                  energy])
        lines.append("| " + " | ".join(row) + " |")
    if s["baseline"] and all(t in s["baseline"] for t in tasks):  # what learning nothing scores
        scores = [s["baseline"][t] for t in tasks]
        lines.append("| majority class | " + " | ".join(f"{v:.1f}" for v in scores)
                     + f" | {statistics.fmean(scores):.1f} |" + " - |" * (len(header) - len(tasks) - 2))
    if s["single_class"]:  # one line under the table, naming every such cell
        cells = [f"{method} on {SHORT.get(task, task)} (seed {', '.join(map(str, seeds))})"
                 for (method, task), seeds in sorted(s["single_class"].items())]
        lines += ["", f"† predicted a single class for every {split} example (learned nothing): {'; '.join(cells)}"]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], out_dir: Path, split: str = "test") -> list[Path]:
    """Accuracy vs peak memory, and vs training time (and energy where measured): Pareto views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(records, split)
    points = {m: v for m, v in s["methods"].items() if v["average"]}
    written = []
    axes = [("peak_memory_mb", "peak training memory (MB)", "score_vs_memory.png"),
            ("train_seconds", "training time (s)", "score_vs_time.png"),
            ("energy_joules", "training energy (J)", "score_vs_energy.png")]
    for key, label, name in axes:
        data = [(v["cost"][key], statistics.fmean(v["average"]), m) for m, v in points.items() if key in v["cost"]]
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for x, y, m in data:
            ax.scatter(x, y, s=50, color="C3" if m == "read" else "C0", zorder=3)
            ax.annotate(m, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
        frontier = _pareto(sorted((x, y) for x, y, _ in data))
        ax.plot(*zip(*frontier), color="C3", alpha=0.4, lw=1, zorder=2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel(f"average {split} score (points)")
        ax.set_title(plot_title(split, s["tasks"], label), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def plot_title(split: str, tasks: list[str], x_label: str) -> str:
    """Which axis is what, in the title itself (a plot is often seen without its caption)."""
    return (f"y: average {split} score over {', '.join(SHORT.get(t, t) for t in tasks)}\n"
            f"x: {x_label}, log scale; one point per method")


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by a cheaper one (x ascending, best y so far)."""
    front, best = [], float("-inf")
    for x, y in points:
        if y > best:
            front.append((x, y))
            best = y
    return front


def write_report(results_path: Path, out_dir: Optional[Path] = None, split: str = "test") -> tuple[Path, list[Path]]:
    records = read_results(results_path)
    out_dir = Path(out_dir or Path(results_path).parent)
    table = out_dir / "table.md"
    table.write_text(markdown_table(records, split))
    return table, plot(records, out_dir, split)
