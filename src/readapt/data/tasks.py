"""What a task is: its examples, its label space, how it is scored, and how its splits are cut.

Every loader (built-in sets in :mod:`readapt.data.builtin`, user files in
:mod:`readapt.data.files`) returns the same :class:`TaskData`, so training and evaluation code never
needs to know where the examples came from. :class:`TaskSpec` is the part that must survive a run:
it is saved as JSON in the run directory so ``readapt eval``/``predict`` can rebuild the label space
without the training data.

Split protocol (shared by every loader, so budget-cut benchmarks are comparable):

* ``test`` is the held-out set the final score is reported on (GLUE: the official dev set).
* When a task has no validation set of its own, ``validation`` is carved from train for model
  selection: 10% of train, at most 1,000 examples, chosen with ``numpy.random.default_rng(split_seed)``;
  ``train`` keeps the rest.
* ``max_train_examples`` then draws a subset of the remaining train with the *same* generator.
* Both selections keep the original file order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

VALIDATION_FRACTION = 0.1
MAX_VALIDATION_EXAMPLES = 1000

# T5 casts STS-B regression as text: scores rounded to the nearest 0.2 in 0..5, written "%.1f".
REGRESSION_STEP = 0.2
REGRESSION_MAX = 5.0
_REGRESSION_TARGETS = tuple(f"{i * REGRESSION_STEP:.1f}" for i in range(26))
INVALID_CLASS = -1          # from_target() result for text that names no class (counts as wrong)
INVALID_VALUE = -1.0        # from_target() result for text that is not a number (T5's convention)


class DataError(ValueError):
    """Task data is missing or malformed; the one-line message names the problem and the fix."""


@dataclass(frozen=True)
class Example:
    """One labelled input: a single text, or a (first, second) pair for sentence-pair tasks."""

    texts: tuple[str, ...]
    label: int | float

    def __post_init__(self) -> None:
        if not isinstance(self.texts, tuple):
            object.__setattr__(self, "texts", tuple(self.texts))


@dataclass(frozen=True)
class TaskSpec:
    """Everything about a task that a trained model needs at eval/predict time (JSON round trip)."""

    name: str
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    text_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for field in ("label_names", "metrics", "text_names"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, field, tuple(value))
        if not self.metrics:
            raise DataError(f"task {self.name!r} has no metrics; give at least one metric name")
        if len(self.text_names) not in (1, 2):
            raise DataError(f"task {self.name!r} has {len(self.text_names)} text fields "
                            f"{list(self.text_names)}; use one text or a pair of two")
        if self.label_names is not None and len(self.label_names) < 2:
            raise DataError(f"task {self.name!r} has fewer than two classes {list(self.label_names)}; "
                            "a classifier needs at least two")

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label_names": None if self.label_names is None else list(self.label_names),
            "metrics": list(self.metrics),
            "text_names": list(self.text_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Strict inverse of :meth:`to_dict`: a damaged run directory should fail loudly here."""
        expected = {"name", "label_names", "metrics", "text_names"}
        if not isinstance(d, dict) or set(d) != expected:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise DataError(f"saved task spec has keys {got}, expected {sorted(expected)}; "
                            "re-create the run directory with `readapt train`")
        return cls(name=d["name"], label_names=d["label_names"], metrics=d["metrics"],
                   text_names=d["text_names"])

    # ---- text-to-text (T5) targets -------------------------------------------------------------
    def target_texts(self) -> list[str]:
        """All target strings a text-to-text model may emit (classes, or the 26 STS-B score steps)."""
        return list(_REGRESSION_TARGETS) if self.label_names is None else list(self.label_names)

    def to_target(self, label: int | float) -> str:
        """Label -> target text. Regression rounds to the nearest 0.2 (T5 on STS-B), so labels must
        lie in 0..5; other ranges would be silently distorted, hence the error."""
        if self.label_names is None:
            value = float(label)
            if not (-1e-6 <= value <= REGRESSION_MAX + 1e-6):
                raise DataError(f"regression label {value} is outside 0..5, which text-to-text targets "
                                "cover (STS-B convention); rescale the labels to 0..5")
            steps = round(min(max(value, 0.0), REGRESSION_MAX) / REGRESSION_STEP)
            return _REGRESSION_TARGETS[steps]
        index = int(label)
        if not 0 <= index < len(self.label_names):
            raise DataError(f"class index {index} is out of range for task {self.name!r} "
                            f"({len(self.label_names)} classes: {', '.join(self.label_names)})")
        return self.label_names[index]

    def from_target(self, text: str) -> int | float:
        """Generated text -> label. Unrecognised text maps to -1 / -1.0 (T5's convention), which
        metrics count as wrong instead of crashing."""
        text = text.strip()
        if self.label_names is None:
            try:
                value = float(text)
            except ValueError:
                return INVALID_VALUE
            return value if math.isfinite(value) else INVALID_VALUE
        if text in self.label_names:
            return self.label_names.index(text)
        lowered = [name.lower() for name in self.label_names]
        return lowered.index(text.lower()) if text.lower() in lowered else INVALID_CLASS


@dataclass
class TaskData:
    """A loaded task. ``test`` is None when no held-out set exists (user files without --test-file)."""

    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example] | None


# ---- split protocol ------------------------------------------------------------------------------
def validation_size(num_train: int) -> int:
    """10% of train, at most 1,000, at least 1."""
    return max(1, min(MAX_VALIDATION_EXAMPLES, int(num_train * VALIDATION_FRACTION)))


def split_train(
    examples: Sequence[Example],
    *,
    carve_validation: bool,
    max_train_examples: int | None,
    split_seed: int,
    source: str,
) -> tuple[list[Example], list[Example]]:
    """Apply the module-level split protocol; returns (train, validation carved from train or [])."""
    if max_train_examples is not None and max_train_examples < 1:
        raise DataError(f"max_train_examples is {max_train_examples}; pass a positive number "
                        "(or leave it out to use all training examples)")
    rng = np.random.default_rng(split_seed)
    train, validation = list(examples), []
    if carve_validation:
        if len(train) < 2:
            raise DataError(f"{source} has {len(train)} example(s), too few to carve a validation "
                            "set from; add rows or pass --validation-file")
        order = rng.permutation(len(train))
        held = set(order[: validation_size(len(train))].tolist())
        validation = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
    if max_train_examples is not None and max_train_examples < len(train):
        keep = np.sort(rng.choice(len(train), size=max_train_examples, replace=False))
        train = [train[i] for i in keep]
    return train, validation


# ---- entry points --------------------------------------------------------------------------------
def available_tasks() -> list[str]:
    """Names accepted by :func:`load_task` (besides "files" for your own train/validation files)."""
    from readapt.data.builtin import BUILTIN_TASKS

    return list(BUILTIN_TASKS)


def load_task(
    task: str | None,
    *,
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    max_train_examples: int | None = None,
    split_seed: int = 0,
) -> TaskData:
    """Load a built-in task by name, or your own files (task None or "files").

    ``data_dir`` only matters for GLUE (a local ``glue_data`` folder instead of the Hub); the file
    and column options only apply to "files" and are rejected elsewhere so they are never ignored.
    """
    from readapt.data import builtin, files

    if task is None or task == "files":
        if train_file is None:
            raise DataError("no task given; pass --task (one of: "
                            f"{', '.join(available_tasks())}) or --train-file for your own data")
        return files.load_files(
            train_file=train_file, validation_file=validation_file, test_file=test_file,
            text_columns=text_columns, label_column=label_column,
            max_train_examples=max_train_examples, split_seed=split_seed,
        )
    given = [flag for flag, value in (("--train-file", train_file), ("--validation-file", validation_file),
                                      ("--test-file", test_file), ("--text-column", text_columns),
                                      ("--label-column", label_column)) if value is not None]
    if given:
        raise DataError(f"{', '.join(given)} only apply to your own data files, not to task {task!r}; "
                        "drop --task to train on the files, or drop the file options")
    return builtin.load_builtin(task, data_dir=data_dir, max_train_examples=max_train_examples,
                                split_seed=split_seed)
