"""`readapt bench`: a grid of tasks x methods x seeds, each cell its own process.

    OUT/runs/<task>__<method>__s<seed>/   one `readapt train` run directory per cell
    OUT/results.jsonl                     one metrics.json per finished cell (argv and seed inside)
    OUT/table.md, OUT/*.png               the paper-shaped table and the Pareto plots (report.py)

A separate process per cell keeps each run's peak memory its own. A cell whose metrics.json
exists is finished and is not rerun, so an interrupted benchmark picks up where it stopped; a
cell that was killed mid-way resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from readapt.checkpoint import atomic_write_text
from readapt.methods import get_method
from readapt.report import write_report

class BenchError(ValueError):
    """Some cells failed; their logs say why, and rerunning the same command retries them."""


DEFAULT_TASKS = ["glue/cola", "glue/sst2", "glue/mrpc", "glue/rte", "glue/stsb"]
DEFAULT_METHODS = ["full", "bitfit", "lora", "prompt", "adapter", "lst", "read"]


@dataclass
class BenchArgs:
    model: str = field(metadata={"help": "backbone for every cell: a local folder or a Hub id"})
    output: str = field(metadata={"help": "benchmark directory (reused: finished cells are kept)"})
    tasks: Optional[list[str]] = field(default=None, metadata={
        "help": f"tasks, one or more (default: {' '.join(DEFAULT_TASKS)}; with --train-file: that file's data)"})
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS), metadata={"help": "methods, one or more"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds, one or more"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "GLUE folder in the glue_data layout"})
    train_file: Optional[str] = field(default=None, metadata={
        "help": "own data instead of --tasks: CSV, TSV or JSONL (the grid's one task, named after the file)"})
    validation_file: Optional[str] = field(default=None, metadata={"help": "own data: validation file"})
    test_file: Optional[str] = field(default=None, metadata={"help": "own data: test file (the table's scores)"})
    text_column: Optional[list[str]] = field(default=None, metadata={
        "help": "own data: one or two text columns (default: text)"})
    label_column: Optional[str] = field(default=None, metadata={"help": "own data: label column"})
    lr: Optional[float] = field(default=None, metadata={
        "help": "peak learning rate for every method (default: each method's own)"})
    epochs: int = field(default=3, metadata={"help": "epochs, the same for every method"})
    batch_size: int = field(default=32, metadata={"help": "batch size, the same for every method"})
    max_length: int = field(default=128, metadata={"help": "tokens per example"})
    max_train_examples: Optional[int] = field(default=None, metadata={"help": "budget cut: a seeded subset of train"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "head pooling for every method (default: each run's own default)"})
    pair_encoding: Optional[str] = field(default=None, metadata={
        "help": "two-text tasks, every method: joint or separate (default: readapt train's)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})


def cell_name(task: str, method: str, seed: int) -> str:
    return f"{task.replace('/', '-')}__{method}__s{seed}"


def grid_tasks(args: BenchArgs) -> list[str]:
    """The task column of each cell: --tasks, or the --train-file's name (its one task)."""
    if args.train_file is None:
        for flag, value in (("--validation-file", args.validation_file), ("--test-file", args.test_file),
                            ("--text-column", args.text_column), ("--label-column", args.label_column)):
            if value is not None:
                raise ValueError(f"{flag} describes own data: give --train-file too")
        return list(args.tasks or DEFAULT_TASKS)
    if args.tasks:
        raise ValueError("--tasks and --train-file are two sources of data: give one of them")
    return [Path(args.train_file).stem]


def cell_command(args: BenchArgs, task: str, method: str, seed: int, run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "readapt", "train", "--model", args.model, "--method", method,
           "--seed", str(seed), "--output", str(run_dir), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--device", args.device]
    if args.train_file is None:
        cmd += ["--task", task]
    options = (("--data-dir", args.data_dir), ("--train-file", args.train_file),
               ("--validation-file", args.validation_file), ("--test-file", args.test_file),
               ("--label-column", args.label_column), ("--max-train-examples", args.max_train_examples),
               ("--lr", args.lr), ("--pooling", args.pooling), ("--pair-encoding", args.pair_encoding))
    for flag, value in options:
        if value is not None:
            cmd += [flag, str(value)]
    if args.text_column:
        cmd += ["--text-column", *args.text_column]
    if (run_dir / "run_config.json").is_file():  # started before: continue it (from step 0 if no checkpoint yet)
        cmd.append("--resume")
    return cmd


def check_cells(args: BenchArgs, tasks: list[str]) -> None:
    """Each method's `readapt train` options, checked as train checks them, before any cell runs."""
    from readapt.train import TrainArgs, check_args

    for method in args.methods:
        get_method(method)  # an unknown method: one line listing the known ones
        check_args(TrainArgs(model=args.model, output=args.output, method=method, epochs=args.epochs,
                             batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                             pooling=args.pooling, pair_encoding=args.pair_encoding,
                             max_train_examples=args.max_train_examples, device=args.device,
                             task=None if args.train_file else tasks[0], train_file=args.train_file))


def run_bench(args: BenchArgs) -> Path:
    tasks = grid_tasks(args)
    check_cells(args, tasks)
    out = Path(args.output)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    cells = [(t, m, s) for t in tasks for s in args.seeds for m in args.methods]
    failed = []
    env = {**os.environ, "TQDM_DISABLE": "1"}  # one progress bar: the grid's
    with tqdm(cells, desc="bench", unit="run") as bar:
        for task, method, seed in bar:
            run_dir = out / "runs" / cell_name(task, method, seed)
            bar.set_postfix_str(f"{task} {method} seed {seed}")
            if (run_dir / "metrics.json").is_file():
                continue
            log = run_dir.with_suffix(".log")
            with open(log, "w") as f:
                code = subprocess.call(cell_command(args, task, method, seed, run_dir), stdout=f, stderr=subprocess.STDOUT, env=env)
            if code != 0:
                failed.append(f"{cell_name(task, method, seed)} (exit {code}, see {log})")
                tqdm.write(f"failed: {failed[-1]}")
    records = [{**json.loads((out / "runs" / cell_name(t, m, s) / "metrics.json").read_text()),
                **({"task": t} if args.train_file else {})}  # own data: the file's name, not "files"
               for t, m, s in cells if (out / "runs" / cell_name(t, m, s) / "metrics.json").is_file()]
    results = out / "results.jsonl"
    atomic_write_text(results, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    table, plots = write_report(results, out)
    print(table.read_text())
    print(f"{len(records)}/{len(cells)} cells finished; results in {results}, table in {table}, "
          f"plots: {', '.join(p.name for p in plots) or 'none'}")
    if failed:
        raise BenchError(f"{len(failed)} cell(s) failed: {failed[0]}; rerun the same command to retry them")
    return results
