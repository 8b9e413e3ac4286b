"""Quiet wrong answers and what users read (issue 12, items 5, 6, 8 and 9), through the CLI and the API.

* NaN/inf weights are an error on load (READ's side network and other methods' trainable tensors);
  predict refuses empty texts as training does.
* Every `--flag` a message names is a flag the parser defines; OSErrors become one plain sentence;
  every message is cut to a few hundred characters.
"""

import ast
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import readapt
import readapt.train
from readapt import ConfigError, ReadModel
from conftest import one_error_line
from readapt.cli import MAX_MESSAGE, build_parser, error_line, main
from readapt.config import CONFIG_NAME, WEIGHTS_NAME
from readapt.train import TrainArgs, load_run, train

SRC = Path(readapt.__file__).resolve().parent


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr, so that stderr holds exactly what the CLI prints."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("messages-data")
    words = ["good film", "great acting", "bad film", "awful plot", "lovely", "dull"]
    rows = "".join(f"{words[i % 6]} {i},{'pos' if i % 2 == 0 else 'neg'}\n" for i in range(24))
    (d / "train.csv").write_text("text,label\n" + rows)
    return d


def _train(model_dir: str, data: Path, out: Path, method: str) -> Path:
    train(TrainArgs(model=model_dir, output=str(out), train_file=str(data / "train.csv"), method=method,
                    epochs=1, batch_size=8, max_length=16, device="cpu", rnn_dim=8))
    return out


@pytest.fixture(scope="module")
def read_run(tiny_model_dir, data, tmp_path_factory):
    return _train(tiny_model_dir, data, tmp_path_factory.mktemp("runs") / "read", "read")


@pytest.fixture(scope="module")
def probe_run(tiny_model_dir, data, tmp_path_factory):
    return _train(tiny_model_dir, data, tmp_path_factory.mktemp("runs") / "probe", "probe")


def _poison(path: Path, value: float) -> str:
    """Write ``value`` into one entry of the first floating tensor; returns its name."""
    tensors = load_file(str(path))
    name = sorted(n for n, t in tensors.items() if t.is_floating_point())[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(path))
    return name


# -- non-finite weights are an error (item 8) ---------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_side_network_weights_are_refused(read_run, tmp_path, capsys, value):
    run = Path(shutil.copytree(read_run, tmp_path / "run"))
    name = _poison(run / WEIGHTS_NAME, value)
    expected = f"{run / WEIGHTS_NAME}: {name} holds 1 NaN or infinite value(s); these weights are damaged"
    for argv in (["eval", "--run", str(run), "--split", "validation"], ["predict", "--run", str(run), "--text", "ok"]):
        assert expected in one_error_line(capsys, [*argv, "--device", "cpu"])
    with pytest.raises(ConfigError, match="NaN or infinite"):
        load_run(run, "cpu")
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(json.loads((run / "run_config.json").read_text())["args"]["model"])
    with pytest.raises(ConfigError, match="NaN or infinite"):
        ReadModel.from_pretrained(backbone, run)


def test_non_finite_weights_of_other_methods_are_refused(probe_run, tmp_path, capsys):
    run = Path(shutil.copytree(probe_run, tmp_path / "run"))
    name = _poison(run / "trainable.safetensors", float("nan"))
    line = one_error_line(capsys, ["eval", "--run", str(run), "--split", "validation", "--device", "cpu"])
    assert f"trainable.safetensors: {name} holds 1 NaN or infinite value(s)" in line
    with pytest.raises(ConfigError, match="NaN or infinite"):
        load_run(run, "cpu")


def test_finite_runs_still_load(read_run, probe_run, capsys):
    for run in (read_run, probe_run):
        assert main(["predict", "--run", str(run), "--text", "good film", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count('"prediction"') == 2


# -- predict refuses empty texts, as training does (item 8) ------------------------------------------------------
@pytest.mark.parametrize("text, what", [("", "is empty"), ("   \t", "is empty"), ("a |||  ", "has an empty side"),
                                        ("||| b", "has an empty side")])
def test_predict_refuses_empty_texts(read_run, capsys, text, what):
    line = one_error_line(capsys, ["predict", "--run", str(read_run), "--text", "fine", "--text", text,
                                   "--device", "cpu"])
    assert f"text 2 ({text!r}) {what}" in line


def test_predict_input_file_skips_blank_lines_only(read_run, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("good film\n\n   \nbad film\n")
    assert main(["predict", "--run", str(read_run), "--input-file", str(path), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count('"prediction"') == 2
    path.write_text("good film\n ||| bad\n")
    assert "text 2 (' ||| bad') has an empty side of '|||'" in one_error_line(
        capsys, ["predict", "--run", str(read_run), "--input-file", str(path), "--device", "cpu"])


# -- hostile configs and data, through the CLI (items 5 and 6) --------------------------------------------------------
def test_huge_config_sizes_through_the_cli(read_run, tmp_path, capsys, tiny_model_dir):
    assert "--rnn-dim 65536 is out of range: use 1..8192" in one_error_line(
        capsys, ["train", "--model", tiny_model_dir, "--output", str(tmp_path / "o"), "--task", "rotten_tomatoes",
                 "--rnn-dim", "65536"])
    run = Path(shutil.copytree(read_run, tmp_path / "run"))
    config = json.loads((run / CONFIG_NAME).read_text())
    for change, words in [({"num_labels": 10**8}, "num_labels=100000000: must be between 1 (regression) and 100,000"),
                          ({"layers": list(range(100_000))}, "layers has 100,000 entries")]:
        (run / CONFIG_NAME).write_text(json.dumps({**config, **change}))
        line = one_error_line(capsys, ["eval", "--run", str(run), "--device", "cpu"])
        assert words in line and len(line) < MAX_MESSAGE


def test_malformed_csv_rows_through_the_cli(tiny_model_dir, tmp_path, capsys):
    train_file = tmp_path / "train.csv"
    train_file.write_text("text,label\nfine,pos\ngreat film, loved it,pos\nbad,neg\n")
    line = one_error_line(capsys, ["train", "--model", tiny_model_dir, "--output", str(tmp_path / "o"),
                                   "--train-file", str(train_file)])
    assert line.endswith("line 3 has 3 fields, the header has 2; quote fields that contain a comma")
    train_file.write_text("text,label,label\na,pos,neg\n")
    assert "duplicate column names in its header: 'label'" in one_error_line(
        capsys, ["train", "--model", tiny_model_dir, "--output", str(tmp_path / "o"), "--train-file", str(train_file)])
    assert not (tmp_path / "o").exists()


def test_600k_column_header_error_is_short(tiny_model_dir, tmp_path, capsys):
    train_file = tmp_path / "wide.csv"
    columns = [f"column{i}" for i in range(600_000)]
    train_file.write_text(",".join(columns) + "\n" + ",".join("x" * len(columns)) + "\n")
    line = one_error_line(capsys, ["train", "--model", tiny_model_dir, "--output", str(tmp_path / "o"),
                                   "--train-file", str(train_file)])
    assert "has no column 'text'" in line and len(line) < 400


# -- every flag a message names is real (item 9) -------------------------------------------------------------------
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
FOREIGN = {"--force-reinstall": "pip's flag, in 'pip install --force-reinstall ...'"}


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def flags_in_source() -> dict[str, list[str]]:
    """flag -> where it appears, from every string literal in src/readapt (f-string parts included,
    docstrings and comments excluded)."""
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                for flag in FLAG.findall(node.value):
                    found.setdefault(flag, []).append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def parser_flags() -> set[str]:
    parser = build_parser()
    flags = {s for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        for sub in getattr(action, "choices", None) or {}:
            flags |= {s for a in action.choices[sub]._actions for s in a.option_strings}
    return flags


def test_every_flag_named_in_a_message_exists():
    found, real = flags_in_source(), parser_flags()
    assert {"--text-column", "--train-file", "--input-file", "--overwrite"} <= set(found)  # not vacuous
    unknown = {flag: where for flag, where in found.items() if flag not in real and flag not in FOREIGN}
    assert unknown == {}, f"messages name flags no command defines: {unknown}"


def test_the_flag_scan_sees_f_strings_and_skips_docstrings():
    tree = ast.parse('"""--not-a-flag in a docstring"""\nx = f"pass --text-columns {y}"\n')
    skip = _docstrings(tree)
    seen = [f for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip for f in FLAG.findall(n.value)]
    assert seen == ["--text-columns"]


# -- OSErrors as one plain sentence; long messages cut (item 9) ------------------------------------------------
def _raised(fn) -> OSError:
    with pytest.raises(OSError) as err:
        fn()
    return err.value


def test_os_errors_read_as_plain_sentences(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "there").mkdir()
    cases = [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/r/x.safetensors"),
         "/runs/r/x.safetensors could not be written: no space left on device"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "no space left on device"),
        (OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/run"), "/ro/run is on a read-only file system"),
        (_raised(lambda: open(tmp_path / "loop")), f"{tmp_path / 'loop'} is a symlink loop"),
        (_raised(lambda: open(tmp_path / "dangling")),
         f"{tmp_path / 'dangling'} is a broken symlink (it points to {tmp_path / 'gone'}, which does not exist)"),
        (_raised(lambda: open(tmp_path / "missing")), f"{tmp_path / 'missing'} does not exist"),
        (_raised(lambda: os.mkdir(tmp_path / "there")), f"{tmp_path / 'there'} already exists"),
    ]
    for exc, sentence in cases:
        assert error_line(exc).startswith(sentence), (exc, error_line(exc))
        assert "Errno" not in error_line(exc)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "could not be written: no space left on device"),
                                         (errno.EROFS, "is on a read-only file system"),
                                         (errno.EEXIST, "already exists")])
def test_os_errors_through_the_cli(monkeypatch, capsys, code, words):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/runs/r/checkpoint")

    monkeypatch.setattr(readapt.train, "train", fail)
    line = one_error_line(capsys, ["train", "--model", "m", "--output", "o"])
    assert line == f"readapt: error: /runs/r/checkpoint {words}"


def test_long_messages_are_cut_with_a_count(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise ValueError("x" * 5000)

    monkeypatch.setattr(readapt.train, "train", fail)
    line = one_error_line(capsys, ["train", "--model", "m", "--output", "o"])
    assert line == "readapt: error: " + "x" * MAX_MESSAGE + f"... ({5000 - MAX_MESSAGE:,d} more characters)"


def test_list_flags_are_repeatable_as_the_messages_say():
    ns = build_parser().parse_args(["predict", "--run", "r", "--text", "a", "b", "--text", "c"])
    assert ns.text == ["a", "b", "c"]
    assert build_parser().parse_args(["predict", "--run", "r"]).text is None
