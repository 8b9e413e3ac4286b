"""Task metrics, named as Hugging Face ``evaluate``'s GLUE metric names them, as fractions.

Thin wrappers over scikit-learn and SciPy. Two deliberate departures from calling them bare:

* ``f1`` is the F1 of class 1 (GLUE's binary F1) computed with ``labels=[1]``, so predictions of
  -1 (a text-to-text model that generated no class name) count as wrong instead of raising.
* A correlation that is undefined (constant predictions or labels, fewer than two examples, NaN)
  is reported as 0.0 -- "no linear/rank relation" -- without SciPy's warnings, so an early
  collapsed model scores 0 rather than crashing model selection.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from readapt.data.tasks import DataError, TaskSpec


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return accuracy_score(gold, pred)


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    return f1_score(gold, pred, labels=[1], average="micro", zero_division=0.0)


def _matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    return matthews_corrcoef(gold, pred)


def _correlation(fn: Callable[..., Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, gold: np.ndarray) -> float:
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(pred, gold)[0]
    return metric


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _correlation(stats.pearsonr),
    "spearmanr": _correlation(stats.spearmanr),
}


def compute_metrics(spec: TaskSpec, predictions: Any, labels: Any) -> dict[str, float]:
    """Every metric of ``spec`` on predictions (class indices, or floats for regression)."""
    pred, gold = np.asarray(predictions), np.asarray(labels)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise DataError(f"got {pred.shape} predictions for {gold.shape} labels; pass one prediction "
                        "per example as a flat list (class indices, or numbers for regression)")
    if len(gold) == 0:
        raise DataError("cannot score zero examples; evaluate on a non-empty split")
    dtype = float if spec.is_regression else int
    pred, gold = pred.astype(dtype), gold.astype(dtype)
    results = {}
    for name in spec.metrics:
        if name not in METRICS:
            raise DataError(f"task {spec.name!r} asks for unknown metric {name!r}; "
                            f"use one of {', '.join(METRICS)}")
        value = float(METRICS[name](pred, gold))
        results[name] = value if math.isfinite(value) else 0.0
    return results


def majority_baseline(spec: TaskSpec, train_labels: Any, labels: Any) -> dict[str, float]:
    """The scores of a model that learned nothing: it always answers the training set's most frequent
    class (regression: the training mean, whose correlations are 0). A method at this level has
    not learned the task, however its number looks."""
    train = np.asarray(train_labels)
    if spec.is_regression:
        constant = float(train.astype(float).mean())
    else:
        values, counts = np.unique(train.astype(int), return_counts=True)
        constant = int(values[counts.argmax()])
    return compute_metrics(spec, np.full(len(labels), constant), labels)


def task_score(spec: TaskSpec, metrics: dict[str, float]) -> float:
    """One number per task, GLUE style: the mean of the task's metrics (e.g. MRPC: F1 and accuracy)."""
    missing = [name for name in spec.metrics if name not in metrics]
    if missing:
        raise DataError(f"metrics for task {spec.name!r} lack {', '.join(missing)}; "
                        "compute them with readapt.data.compute_metrics")
    return float(np.mean([metrics[name] for name in spec.metrics]))
