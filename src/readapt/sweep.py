"""`readapt sweep`: a grid of READ side-network configs on one task, over one state cache.

    readapt sweep --model M --task glue/stsb --output sweeps/stsb --set data_dir=D --set epochs=5 \\
        --grid rnn_dim=64,128,256 --grid lr=1e-3,3e-3 --grid joiner=norm,projection

    OUT/runs/<cell>/     one `readapt train` run directory per grid cell (and seed)
    OUT/results.jsonl    each finished cell's metrics.json, with its grid values
    OUT/sweep.md         one row per cell: validation, test, time, cache; the best on validation marked

The backbone is frozen, so its states do not depend on the side network: the first cell runs the
frozen pass once and writes the state cache (--cache on), and every later cell reads it, whatever
its rnn_dim, lr, rnn_type, joiner or seed. A search over side-network configs costs about one
frozen pass plus the side networks' own training. (Options that change the states themselves --
the model, max_length, layers, pair encoding -- make cells that build their own cache entries.)

Each cell is its own process (its memory is its own; a failed cell does not stop the sweep); a cell
whose metrics.json exists is finished and not rerun, so an interrupted sweep continues where it
stopped. The best cell is picked on validation only; its test score is reported, never used.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from readapt.checkpoint import atomic_write_text

# Options a cell may not set: the sweep owns them (or they would make the cells' runs collide).
OWNED = ("model", "task", "output", "seed", "method", "resume", "overwrite", "cache", "cache_states")
MAX_CELLS = 1000


class SweepError(ValueError):
    """Some cells failed; their logs say why, and rerunning the same command retries them."""


@dataclass
class SweepArgs:
    model: str = field(metadata={"help": "backbone for every cell: a local folder or a Hub id"})
    output: str = field(metadata={"help": "sweep directory (reused: finished cells are kept)"})
    task: Optional[str] = field(default=None, metadata={
        "help": "one task (as readapt train --task); own data: --set train_file=... --set validation_file=..."})
    grid: list[str] = field(default_factory=list, metadata={
        "help": "OPTION=V1,V2,...: a readapt train option and its values (repeat for more options; cells are "
                "every combination), e.g. rnn_dim=64,128 lr=1e-3,3e-3 joiner=norm,projection"})
    set: list[str] = field(default_factory=list, metadata={
        "help": "OPTION=VALUE: a readapt train option for every cell (repeatable), e.g. epochs=5 data_dir=glue"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds, one or more (each cell runs each)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})


def _option(text: str, flag: str, fields: dict) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    if not sep or not name or value == "":
        raise ValueError(f"--{flag} {text!r}: write OPTION=VALUE{',...' if flag == 'grid' else ''}, "
                         f"e.g. {'rnn_dim=64,128' if flag == 'grid' else 'epochs=5'}")
    if name not in fields:
        raise ValueError(f"--{flag} {name}: not a readapt train option (see readapt train --help)")
    if name in OWNED:
        raise ValueError(f"--{flag} {name}: the sweep sets --{name.replace('_', '-')} itself")
    if name == "task_type" and value != "classification":  # its ranking reads task scores, higher is better
        raise ValueError(f"--{flag} task_type={value}: readapt sweep ranks classification scores; train LM tasks "
                         f"with readapt train --task-type")
    return name, value


def _train_option_types() -> dict[str, str]:
    """readapt train's options and their annotations (strings: train.py postpones annotations)."""
    from readapt.train import TrainArgs

    return {f.name: str(f.type) for f in dataclasses.fields(TrainArgs)}


def _flags(name: str, value: str, kind: str) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if kind == "bool":  # store_true flags: present or absent
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{name}={value}: a switch takes true or false")
        return [flag] if value.lower() == "true" else []
    return [flag, *value.split()] if "list" in kind else [flag, value]


def plan(args: SweepArgs) -> tuple[list[dict[str, str]], dict[str, str]]:
    """(the grid's cells as {option: value}, the options every cell shares), all checked."""
    fields = _train_option_types()
    fixed = dict(_option(text, "set", fields) for text in args.set)
    axes: dict[str, list[str]] = {}
    for text in args.grid:
        name, values = _option(text, "grid", fields)
        if name in axes or name in fixed:
            raise ValueError(f"--grid {name}: given twice (once per option; values separated by commas)")
        axes[name] = [v.strip() for v in values.split(",") if v.strip()]
    if not axes:
        raise ValueError("give at least one --grid OPTION=V1,V2 (e.g. --grid rnn_dim=64,128,256)")
    cells = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if len(cells) * len(args.seeds) > MAX_CELLS:
        raise ValueError(f"the grid has {len(cells) * len(args.seeds):,d} runs (cells x seeds); at most {MAX_CELLS}")
    for cell in cells:
        _check_cell(args, {**fixed, **cell}, fields)
    return cells, fixed


def _check_cell(args: SweepArgs, options: dict[str, str], fields: dict[str, str]) -> None:
    """The cell's options parsed and checked as `readapt train` checks them, so a bad value
    (joiner=projecton, rnn_dim=0) fails before any cell runs, not when its turn comes."""
    from readapt.cli import parse_train_options
    from readapt.train import check_args

    flags = [flag for name, value in options.items() for flag in _flags(name, value, fields[name])]
    try:
        check_args(parse_train_options(["--model", args.model, "--output", "cell", *flags]))
    except ValueError as exc:
        raise ValueError(f"{exc} (in the cell {as_flags(options)})") from None


def cell_name(cell: dict[str, str], seed: int) -> str:
    parts = [f"{k}={v}".replace("/", "-").replace(" ", "_") for k, v in cell.items()]
    return "__".join(parts + [f"s{seed}"])


def cell_command(args: SweepArgs, options: dict[str, str], seed: int, run_dir: Path) -> list[str]:
    kinds = _train_option_types()
    cmd = [sys.executable, "-m", "readapt", "train", "--model", args.model, "--method", "read", "--seed", str(seed),
           "--output", str(run_dir), "--device", args.device, "--cache", "on"]
    if args.task:
        cmd += ["--task", args.task]
    for name, value in options.items():
        cmd += _flags(name, value, kinds[name])
    if (run_dir / "run_config.json").is_file():  # started before: continue it
        cmd.append("--resume")
    return cmd


def _score(metrics: dict, split: str) -> Optional[float]:
    scores = metrics.get(split) or {}
    return 100.0 * statistics.fmean(scores.values()) if scores else None


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def summarise(records: list[dict]) -> list[tuple[dict, float, list[dict]]]:
    """(cell, mean validation score over its seeds, its runs), best first."""
    by_cell: dict[tuple, list[dict]] = {}
    for r in records:  # keyed in the grid's own order of options
        by_cell.setdefault(tuple(r["sweep_cell"].items()), []).append(r)
    rows = [(dict(key), statistics.fmean(_score(r, "validation") for r in runs), runs)
            for key, runs in by_cell.items()]
    return sorted(rows, key=lambda row: -row[1])


def table(rows: list[tuple[dict, float, list[dict]]]) -> str:
    """One row per cell, best validation first and in bold."""
    options = list(rows[0][0]) if rows else []
    head = [*options, "validation", "test", "seeds", "train s", "cache"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (cell, _, runs) in enumerate(rows):
        val = _fmt([_score(r, "validation") for r in runs])
        test = _fmt([s for s in (_score(r, "test") for r in runs) if s is not None])
        seconds = statistics.fmean(r.get("train_seconds") or 0.0 for r in runs)
        caches = "/".join(sorted({str(r.get("cache", "-")) for r in runs}))
        lines.append("| " + " | ".join([*(cell[o] for o in options), f"**{val}**" if i == 0 else val, test,
                                         ",".join(str(r["seed"]) for r in runs), f"{seconds:.0f}", caches]) + " |")
    return "\n".join(lines) + "\n"


def as_flags(cell: dict[str, str]) -> str:
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in cell.items())


def run_sweep(args: SweepArgs) -> Path:
    cells, fixed = plan(args)
    out = Path(args.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runs_all = [(cell, seed) for cell in cells for seed in args.seeds]
    env = {**os.environ, "TQDM_DISABLE": "1"}  # one progress bar: the sweep's
    failed, records = [], []
    with tqdm(runs_all, desc="sweep", unit="run") as bar:
        for cell, seed in bar:
            run_dir = out / "runs" / cell_name(cell, seed)
            bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in cell.items()) + f" seed {seed}")
            if not (run_dir / "metrics.json").is_file():
                log = run_dir.with_suffix(".log")
                with open(log, "w") as f:
                    code = subprocess.call(cell_command(args, {**fixed, **cell}, seed, run_dir), stdout=f,
                                           stderr=subprocess.STDOUT, env=env)
                if code != 0:
                    failed.append(f"{run_dir.name} (exit {code}, see {log})")
                    tqdm.write(f"failed: {failed[-1]}")
                    continue
            records.append({**json.loads((run_dir / "metrics.json").read_text()), "sweep_cell": cell})
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    rows = summarise(records)
    atomic_write_text(out / "sweep.md", table(rows))
    print(table(rows))
    if rows:
        cell, score, runs = rows[0]
        print(f"best on validation: {as_flags(cell)} ({score:.1f}, mean of {len(runs)} seed(s)); "
              f"{len(records)}/{len(runs_all)} runs finished; table in {out / 'sweep.md'}")
    if failed:
        raise SweepError(f"{len(failed)} run(s) failed: {failed[0]}; rerun the same command to retry them")
    return out / "sweep.md"
