"""Your own data: CSV, TSV or JSON Lines files with one or two text columns and a label column.

The label kind is read off the training file, so users never declare it:

* every label an integer (``3``, ``"3"``, ``3.0``) -> classes = the sorted distinct integers;
* every label a number, some not integers         -> regression (Pearson / Spearman);
* every label a non-numeric string                -> classes = the sorted distinct strings;
* a mix of numbers and words                      -> error (almost always a data bug).

Validation and test labels must use the training file's classes. Without ``--validation-file`` a
validation set is carved from train (split protocol in :mod:`readapt.data.tasks`); without
``--test-file`` there is no held-out set (``TaskData.test`` is None).
Every problem is reported as a :class:`DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal, InvalidOperation
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from readapt.config import MAX_NUM_LABELS
from readapt.data.tasks import DataError, Example, TaskData, TaskSpec, split_train
from readapt.inputs import DATA_FILE_MAX_BYTES, InputFileError, open_user_file

TASK_NAME = "files"
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json-lines": "jsonl"}
_FLAGS = {"train": "--train-file", "validation": "--validation-file", "test": "--test-file", "input": "--input-file"}
_SHOWN = 5  # how many unknown labels an error message lists


@dataclass
class Table:
    """The rows of one file, each with the line number a user would look at in an editor."""

    path: Path
    role: str                       # "train", "validation" or "test"
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]

    @property
    def where(self) -> str:
        return f"{self.role} file {self.path}"


def read_table(path: str | Path, role: str = "train", max_bytes: int = DATA_FILE_MAX_BYTES) -> Table:
    """Read a .csv/.tsv/.jsonl file into rows of column -> value (no interpretation yet)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{role} file {path} has unsupported extension {path.suffix or '(none)'!r}; "
                        f"use one of {', '.join(FORMATS)}")
    try:
        with open_user_file(path, max_bytes, encoding="utf-8-sig", newline="") as f:
            return parse_table(f, fmt, path, role)
    except InputFileError as err:
        fix = ("split it or sample it" if err.too_large else f"check the path given to {_FLAGS[role]}")
        raise DataError(f"{role} file {err}; {fix}") from None


def parse_table(f, fmt: str, path: str | Path, role: str) -> Table:
    """The rows of an open text stream in ``fmt`` (csv, tsv or jsonl); ``path`` names it in errors."""
    try:
        if fmt == "jsonl":
            columns, rows = _read_jsonl(f, path, role)
        else:
            columns, rows = _read_delimited(f, fmt, f"{role} file {path}")
    except UnicodeDecodeError as err:
        raise DataError(f"{role} file {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                        "re-save it as UTF-8") from err
    except (OSError, csv.Error) as err:
        raise DataError(f"cannot read {role} file {path} ({err}); check the file "
                        "and its permissions") from err
    if columns is None:
        what = "one JSON object per line" if fmt == "jsonl" else "a header line and examples"
        raise DataError(f"{role} file {path} is empty; add {what}")
    if not rows:
        raise DataError(f"{role} file {path} has no data rows (columns: {shown(columns)}); "
                        "add examples")
    return Table(Path(path), role, columns, rows)


def table_texts(table: Table, text_columns: tuple[str, ...] | list[str]) -> list[tuple[str, ...]]:
    """The texts of every row (labels, if any, are ignored): what `readapt predict` reads from a
    file in the training format. A one-text task also takes a column named 'text'."""
    columns = list(text_columns)
    if len(columns) == 1 and columns[0] not in table.columns and "text" in table.columns:
        columns = ["text"]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{table.where} has no column {', '.join(repr(c) for c in missing)} (columns: "
                        f"{shown(table.columns)}); this run reads {', '.join(repr(c) for c in columns)}, as in training")
    return [_texts(table, line, row, columns) for line, row in table.rows]


def shown(names: list[str], limit: int = 10) -> str:
    """A list for an error message: the first ``limit`` names and how many more there are."""
    names = [str(n) for n in names]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _read_delimited(f, fmt: str, where: str) -> tuple[list[str] | None, list[tuple[int, dict[str, Any]]]]:
    # TSV: tabs only, quotes are ordinary characters (as in GLUE); CSV: standard quoting.
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(f, **options)
    header = next(reader, None)
    if header is None:
        return None, []
    columns = [c.strip() for c in header]  # tolerate "text, label" headers
    duplicates = sorted(name for name, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise DataError(f"{where} has duplicate column names in its header: {shown([repr(c) for c in duplicates])}; "
                        "give every column its own name")
    rows, end = [], reader.line_num
    for fields in reader:
        start, end = end + 1, reader.line_num  # a quoted field may span lines: report the first
        if not fields:
            continue  # a blank line
        if len(fields) != len(columns):
            hint = ("quote fields that contain a comma" if fmt == "csv" and len(fields) > len(columns)
                    else "every row needs one value per column")
            raise DataError(f"{where} line {start} has {len(fields)} fields, the header has {len(columns)}; {hint}")
        rows.append((start, dict(zip(columns, fields))))
    return columns, rows


def _read_jsonl(f, path: Path, role: str) -> tuple[list[str] | None, list[tuple[int, dict[str, Any]]]]:
    rows, columns = [], {}
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{role} file {path} line {number} is not valid JSON ({err.msg}); "
                            "JSON Lines needs one complete JSON object per line") from err
        except (RecursionError, ValueError) as err:  # absurd nesting, or an int past Python's digit limit
            raise DataError(f"{role} file {path} line {number} is not a usable JSON object "
                            f"({type(err).__name__}); write each example as a flat object") from None
        if not isinstance(record, dict):
            raise DataError(f"{role} file {path} line {number} is a JSON {type(record).__name__}, "
                            'not an object; write each example as {"text": ..., "label": ...}')
        columns.update(dict.fromkeys(record))
        rows.append((number, record))
    return (list(columns) if rows else None), rows


# ---- labels --------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """The value as a finite number, or None if it is text (bools count as text: true/false)."""
    if isinstance(value, bool):
        return None
    try:  # ints too large for a float (10**400) are no usable number either
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    """The value as an exact integer (``3``, ``"3"``, ``3.0``, ``"1e3"``), or None. Never through a
    float: integers above 2**53 keep every digit, so 2**53 and 2**53 + 1 stay two classes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if not isinstance(value, str):
        return None
    try:
        exact = Decimal(value.strip())
    except InvalidOperation:
        return None
    # adjusted(): the exponent; past ~4,000 digits an int cannot even be printed (Python's limit)
    if exact.is_finite() and exact.adjusted() < 4000 and exact == exact.to_integral_value():
        return int(exact)
    return None


def _key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _quoted(value: Any, limit: int = 60) -> str:
    """A label or text for an error message: quoted, and cut if long."""
    text = repr(_key(value))
    return text if len(text) <= limit else text[:limit - 4] + "...'"


@dataclass(frozen=True)
class LabelSpace:
    """How raw label values map to Example labels; inferred from the training file."""

    kind: str                        # "integers", "strings" or "regression"
    names: tuple[str, ...] | None    # class names in index order; None for regression

    @classmethod
    def infer(cls, table: Table, raw: list[tuple[int, Any]]) -> LabelSpace:
        numeric = [(line, v) for line, v in raw if _number(v) is not None or _integer(v) is not None]
        textual = [(line, v) for line, v in raw if _number(v) is None and _integer(v) is None]
        if numeric and textual:
            raise DataError(f"{table.where} has mixed label types: numbers (e.g. {_quoted(numeric[0][1])} "
                            f"on line {numeric[0][0]}) and text (e.g. {_quoted(textual[0][1])} on line "
                            f"{textual[0][0]}); make every label a class name or every label a number")
        if textual:
            space = cls("strings", tuple(sorted({_key(v) for _, v in raw})))
        elif all(_integer(v) is not None for _, v in numeric):
            space = cls("integers", tuple(str(i) for i in sorted({_integer(v) for _, v in numeric})))
        else:
            return cls("regression", None)
        if len(space.names) < 2:
            raise DataError(f"{table.where} has only one class ({_quoted(space.names[0])}); "
                            "a classifier needs examples of at least two classes")
        if len(space.names) > MAX_NUM_LABELS:  # a head that size is rarely meant: usually the wrong column
            raise DataError(f"{table.where} has {len(space.names):,d} distinct labels, more than the "
                            f"{MAX_NUM_LABELS:,d} classes readapt trains; check --label-column")
        return space

    def encode(self, value: Any) -> int | float | None:
        """Label for an Example, or None when the value is not in this label space."""
        if self.kind == "regression":
            return _number(value)
        if self.kind == "integers":
            integer = _integer(value)
            if integer is None:
                return None
            key = str(integer)
        else:
            key = _key(value)
        return self._index.get(key)

    @cached_property
    def _index(self) -> dict[str, int]:  # name -> class index: fast with many classes
        return {name: i for i, name in enumerate(self.names)}


# ---- loading -------------------------------------------------------------------------------------
def load_files(
    *,
    train_file: str | Path,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    max_train_examples: int | None = None,
    split_seed: int = 0,
) -> TaskData:
    """Load user files as task "files" (see the module docstring for label and split rules)."""
    train_table = read_table(train_file, "train")
    text_columns = _text_columns(train_table, text_columns)
    label_column = label_column or "label"
    if label_column in text_columns:
        raise DataError(f"column {label_column!r} is both a text column and the label column; "
                        "pass a different --label-column or --text-column")
    _require_columns(train_table, text_columns, label_column)

    space = LabelSpace.infer(train_table, _raw_labels(train_table, label_column))
    train = _examples(train_table, space, text_columns, label_column)
    validation = test = None
    if validation_file is not None:
        validation = _examples(read_table(validation_file, "validation"), space, text_columns, label_column)
    if test_file is not None:
        test = _examples(read_table(test_file, "test"), space, text_columns, label_column)
    train, carved = split_train(train, carve_validation=validation is None,
                                max_train_examples=max_train_examples, split_seed=split_seed,
                                source=train_table.where)
    if space.names is None:
        metrics = ("pearson", "spearmanr")
    else:
        metrics = ("accuracy", "f1") if len(space.names) == 2 else ("accuracy",)
    spec = TaskSpec(TASK_NAME, space.names, metrics, tuple(text_columns))
    return TaskData(spec, train, carved if validation is None else validation, test)


def _text_columns(table: Table, text_columns: list[str] | None) -> list[str]:
    if text_columns is None:
        if "text" not in table.columns:
            raise DataError(f"{table.where} has no column 'text' (columns: {shown(table.columns)}); "
                            "pass --text-column NAME, or two names for sentence pairs")
        return ["text"]
    text_columns = list(text_columns)
    if len(text_columns) not in (1, 2):
        raise DataError(f"--text-column takes one or two column names, got {len(text_columns)} "
                        f"({shown(text_columns)}); join extra text into one column")
    return text_columns


def _require_columns(table: Table, text_columns: list[str], label_column: str) -> None:
    missing = [c for c in text_columns if c not in table.columns]
    flag = "--text-column"
    if not missing and label_column not in table.columns:
        missing, flag = [label_column], "--label-column"
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise DataError(f"{table.where} has no column {names} (columns: {shown(table.columns)}); "
                        f"pass {flag} with the right name")


def _raw_labels(table: Table, label_column: str) -> list[tuple[int, Any]]:
    raw = []
    for line, row in table.rows:
        value = row.get(label_column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.where} line {line} has no label in column {label_column!r}; "
                            "fill it in or remove the row")
        if isinstance(value, (dict, list)):  # JSONL: str() would make a class of its repr
            raise DataError(f"{table.where} line {line} has a JSON {_json_kind(value)} as its label; "
                            "a label is a class name or a number")
        raw.append((line, value))
    return raw


def _examples(table: Table, space: LabelSpace, text_columns: list[str], label_column: str) -> list[Example]:
    _require_columns(table, text_columns, label_column)
    labels, unknown = [], {}
    for line, value in _raw_labels(table, label_column):
        label = space.encode(value)
        if label is None and space.kind == "regression":
            raise DataError(f"{table.where} line {line} has label {_quoted(value)}, which is not a number; "
                            "regression labels must all be numbers")
        if label is None:
            unknown.setdefault(_key(value), line)
        labels.append(label)
    if unknown:
        first = ", ".join(f"{_quoted(k)} (line {n})" for k, n in list(unknown.items())[:_SHOWN])
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        raise DataError(f"{table.where} has labels not seen in the train file: {first}{more}; "
                        f"known classes: {shown(space.names)}")
    return [Example(_texts(table, line, row, text_columns), label)
            for (line, row), label in zip(table.rows, labels)]


def _texts(table: Table, line: int, row: dict[str, Any], text_columns: list[str]) -> tuple[str, ...]:
    texts = []
    for column in text_columns:
        value = row.get(column, "")  # a JSONL row without the key: reported as empty below
        if not isinstance(value, str):  # JSONL null, number, object: never guess a text for it
            raise DataError(f"{table.where} line {line} has a JSON {_json_kind(value)} in {column!r}, "
                            "not text; write the text as a JSON string")
        text = value.strip()
        if not text:
            raise DataError(f"{table.where} line {line} has an empty {column!r}; "
                            "fill in the text or remove the row")
        texts.append(text)
    return tuple(texts)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "array" if isinstance(value, list) else "object"
