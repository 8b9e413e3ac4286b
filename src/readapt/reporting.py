"""`--report-to tensorboard|wandb|none`: training loss and learning rate per optimizer step,
validation scores per epoch, sent to experiment trackers through their own maintained clients.

    tensorboard   event files in <run>/tensorboard/ (`tensorboard --logdir runs/`); readapt owns the
                  folder (rundir.py), so --overwrite clears it, and --resume drops the events a killed
                  run wrote after its last checkpoint (SummaryWriter's purge_step)
    wandb         a Weights & Biases run named after the run folder, its config the run's options;
                  wandb keeps its files where it always does (WANDB_DIR, else ./wandb), not in the
                  run folder: its tree holds symlinks, which --overwrite never deletes

The metric names are the same for both: train/loss, train/lr, validation/<metric>, with the
optimizer step as the x axis.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Optional

REPORTERS = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # reporter -> the package it needs


def reporter_names(report_to: Optional[list[str]]) -> list[str]:
    """--report-to values (repeatable, or comma-separated) -> the trackers to use, checked."""
    names = [name.strip() for value in report_to or [] for name in value.split(",") if name.strip()]
    for name in names:
        if name not in REPORTERS:
            raise ValueError(f"--report-to {name}: choose one or more of {', '.join(REPORTERS)}")
    if "none" in names and len(set(names)) > 1:
        raise ValueError(f"--report-to none cannot be combined with {', '.join(n for n in names if n != 'none')}")
    return sorted(set(names) - {"none"}, key=REPORTERS.index)


def check_installed(names: list[str]) -> None:
    """A missing client is one line naming the pip install, before the run folder gets any file."""
    for name in names:
        package = _PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"--report-to {name} needs the {package} package: pip install {package}")


class Reporter:
    """Every chosen tracker behind one log() call; a no-op when none was chosen."""

    def __init__(self, names: list[str], run_dir: Path, args, resume_step: int = 0):
        self._writers = []
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events past the checkpoint a resumed run continues from are dropped
            self._writers.append(_TensorBoard(SummaryWriter(str(run_dir / TENSORBOARD_DIR),
                                                            purge_step=resume_step + 1 if resume_step else None)))
        if "wandb" in names:
            import wandb

            # a resumed run is a new W&B run whose steps continue from the checkpoint's
            run = wandb.init(project="readapt", name=run_dir.name, config=dataclasses.asdict(args))
            self._writers.append(_WandB(run))

    def log(self, values: dict[str, float], step: int) -> None:
        for writer in self._writers:
            writer.log(values, step)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def log(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self):
        self.writer.close()


class _WandB:
    def __init__(self, run):
        self.run = run

    def log(self, values, step):
        self.run.log(values, step=step)

    def close(self):
        self.run.finish()
