"""`--config run.yaml|run.json`: a command's options read from a file; flags on the command line win.

    # run.yaml                      readapt train --config run.yaml --epochs 5
    model: sentence-transformers/all-MiniLM-L6-v2
    output: runs/rt
    task: rotten_tomatoes
    batch-size: 16                  # dashed or underscored, as the flags are named
    layers: [2, 4, 6]

The keys are the command's option names; a value has the type the option takes (a list for a
repeatable option, true/false for a switch). Unknown keys and wrong types are refused here, naming
the key and the file; bad values are refused by the command's own checks, and cli.py adds the file's
name when the bad value came from it.

We read the file ourselves rather than through transformers.HfArgumentParser: our parser is built
from the same dataclasses (cli.py) with its own conventions (repeatable lists, store_true switches),
and HfArgumentParser would change them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any

from readapt.config import ConfigError, _matches, _type_name, short
from readapt.inputs import CONFIG_MAX_BYTES, InputFileError, read_user_bytes

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def load_config_file(path: str, cls) -> dict[str, Any]:
    """{field name: value} from a YAML or JSON file holding some of ``cls``'s fields."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--config {path}: use a .yaml, .yml or .json file")
    try:
        text = read_user_bytes(path, CONFIG_MAX_BYTES).decode("utf-8-sig")
    except InputFileError as exc:
        raise ConfigError(f"--config {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    values = _parse(text, fmt, path)
    if values is None:  # an empty YAML file: nothing set
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got a {type(values).__name__}")
    return check_values(values, cls, path)


def _parse(text: str, fmt: str, path: str) -> Any:
    if fmt == "json":
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)  # safe_load: plain data, never Python objects
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None


_YAML_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _float_field(hint) -> bool:
    return hint is float or hint == typing.Optional[float]


def check_values(values: dict, cls, path: str) -> dict[str, Any]:
    """Keys normalised to field names (dashes -> underscores) and checked: known, and of the right type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    checked: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0].replace('_', '-')}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {short(key)}{hint}; the keys are the command's "
                              f"flag names (see --help)")
        if name in checked:
            raise ConfigError(f"{path}: {name} is given twice (dashed and underscored)")
        if isinstance(value, str) and _float_field(hints[name]) and _YAML_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; it is the float the user meant
        if not _matches(value, hints[name]):
            raise ConfigError(f"{path}: {key}={short(value)}: expected {_type_name(hints[name])}")
        checked[name] = value
    return checked
