"""Task data for READ: built-in tasks (Rotten Tomatoes, GLUE), your own files, metrics, batching.

    from readapt.data import load_task, compute_metrics, task_score
    data = load_task("glue/rte", data_dir="glue_data")   # or load_task(None, train_file="a.csv")

Loading data needs only numpy; the metric (scikit-learn, SciPy) and batching (torch) modules are
imported on first use so that CLI start-up and `--help` stay fast.
"""

from importlib import import_module
from typing import Any

from readapt.data.builtin import BUILTIN_TASKS
from readapt.data.tasks import DataError, Example, TaskData, TaskSpec, available_tasks, load_task

_LAZY = {
    "collate": "readapt.data.batching",
    "encode": "readapt.data.batching",
    "encode_text_to_text": "readapt.data.batching",
    "compute_metrics": "readapt.data.metrics",
    "majority_baseline": "readapt.data.metrics",
    "task_score": "readapt.data.metrics",
}

__all__ = [
    "BUILTIN_TASKS",
    "DataError",
    "Example",
    "TaskData",
    "TaskSpec",
    "available_tasks",
    "collate",
    "compute_metrics",
    "encode",
    "encode_text_to_text",
    "load_task",
    "majority_baseline",
    "task_score",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'readapt.data' has no attribute {name!r}")
