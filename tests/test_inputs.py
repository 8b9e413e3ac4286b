"""Bounded reads of user input (issue 12, item 3): regular files only, under a cap, never blocking.

Every file a user names (data files, predict --input-file, a run's JSON configs, its weights) is
stat'ed before it is opened: a FIFO, /dev/zero, a folder, a symlink loop or a broken symlink is
refused by what it is; a file over its cap is refused unread (sparse files stand in for big ones).
"""

import os
import signal
from pathlib import Path

import pytest

import readapt.inputs as inputs
from conftest import one_error_line
from readapt.config import CONFIG_NAME, ConfigError, ReadConfig
from readapt.data import DataError
from readapt.data.files import read_table
from readapt.inputs import (CONFIG_MAX_BYTES, DATA_FILE_MAX_BYTES, PREDICT_INPUT_MAX_BYTES, InputFileError,
                            open_user_file, read_user_bytes)
from readapt.train import read_run_config


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO opened for reading blocks until a writer comes: fail in seconds instead of hanging."""
    def hung(*_):
        raise TimeoutError("blocked reading user input")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def odd(tmp_path) -> dict[str, Path]:
    """One path of each kind a user might hand us by mistake."""
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "zero.csv").symlink_to("/dev/zero")  # a character device with a data file's name
    return {"fifo": tmp_path / "fifo.csv", "loop": tmp_path / "loop.csv", "dangling": tmp_path / "dangling.csv",
            "folder": tmp_path / "folder.csv", "missing": tmp_path / "missing.csv", "zero": tmp_path / "zero.csv"}


REASONS = {"fifo": "is a FIFO (named pipe), not a regular file",
           "loop": "is a symlink loop",
           "dangling": "is a broken symlink (it points to",
           "folder": "is a folder, not a file",
           "missing": "does not exist",
           "zero": "is a character device (such as /dev/zero), not a regular file"}


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)  # no disk blocks: a 2 GiB file costs nothing
    return path


# -- the helper -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(REASONS))
def test_open_user_file_names_what_the_path_is(odd, kind):
    with pytest.raises(InputFileError) as err:
        open_user_file(odd[kind], 1024)
    assert REASONS[kind] in str(err.value) and str(odd[kind]) in str(err.value)
    assert err.value.missing == (kind == "missing")


def test_size_cap_refuses_a_file_unread(tmp_path):
    big = sparse(tmp_path / "big.bin", 5000)
    with pytest.raises(InputFileError, match="above readapt's limit") as err:
        read_user_bytes(big, 4999)
    assert err.value.too_large
    assert read_user_bytes(big, 5000) == bytes(5000)


def test_a_file_that_grows_while_read_stops_at_the_cap(tmp_path):
    path = tmp_path / "growing.txt"
    path.write_bytes(b"x" * 10)
    with open_user_file(path, 16, encoding=None) as f:
        with open(path, "ab") as writer:
            writer.write(b"y" * 100)
        with pytest.raises(InputFileError, match="grew past"):
            f.read()


def test_caps_are_module_constants():
    assert DATA_FILE_MAX_BYTES == 2 * 1024**3
    assert PREDICT_INPUT_MAX_BYTES == 64 * 1024**2
    assert CONFIG_MAX_BYTES == 1024**2


# -- data files: train says the right reason ---------------------------------------------------------
@pytest.mark.parametrize("kind", list(REASONS))
def test_data_file_reasons_api(odd, kind):
    with pytest.raises(DataError) as err:
        read_table(odd[kind], "train")
    assert REASONS[kind] in str(err.value) and "--train-file" in str(err.value)


def test_data_file_over_the_cap(tmp_path):
    path = sparse(tmp_path / "train.csv", DATA_FILE_MAX_BYTES + 1)
    with pytest.raises(DataError, match="above readapt's limit of 2.0 GiB") as err:
        read_table(path, "train")
    assert "split it or sample it" in str(err.value)


@pytest.mark.parametrize("kind", list(REASONS))
def test_train_names_the_reason(odd, kind, tmp_path, capsys):
    line = one_error_line(capsys, ["train", "--model", "unused", "--output", str(tmp_path / "out"),
                                   "--train-file", str(odd[kind]), "--device", "cpu"])
    assert REASONS[kind] in line and "--train-file" in line
    assert not (tmp_path / "out").exists()


def test_glue_data_dir_fifo_is_refused(tmp_path):
    from readapt.data import load_task

    (tmp_path / "RTE").mkdir()
    os.mkfifo(tmp_path / "RTE" / "train.tsv")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError, match="is a FIFO"):
        load_task("glue/rte", data_dir=tmp_path)


# -- predict --input-file --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(REASONS))
def test_predict_input_file_reasons(odd, kind, tmp_path, capsys):
    line = one_error_line(capsys, ["predict", "--run", str(tmp_path), "--input-file", str(odd[kind])])
    assert f"--input-file {odd[kind]} {REASONS[kind]}" in line


def test_predict_input_file_dev_zero(tmp_path, capsys):
    line = one_error_line(capsys, ["predict", "--run", str(tmp_path), "--input-file", "/dev/zero"])
    assert line == f"readapt: error: --input-file /dev/zero {REASONS['zero']}"


def test_predict_input_file_over_the_cap(tmp_path, capsys):
    path = sparse(tmp_path / "texts.txt", PREDICT_INPUT_MAX_BYTES + 1)
    line = one_error_line(capsys, ["predict", "--run", str(tmp_path), "--input-file", str(path)])
    assert "above readapt's limit of 64.0 MiB" in line


# -- JSON configs: refused unread above a small cap ---------------------------------------------------------
def test_read_config_over_the_cap_is_refused_unread(tmp_path, monkeypatch):
    sparse(tmp_path / CONFIG_NAME, CONFIG_MAX_BYTES + 1)
    opened = []
    monkeypatch.setattr(inputs.os, "open", lambda *a, **k: opened.append(a) or pytest.fail("opened"))
    with pytest.raises(ConfigError, match="above readapt's limit of 1.0 MiB"):
        ReadConfig.from_pretrained(tmp_path)
    assert opened == []


@pytest.mark.parametrize("kind", ["fifo", "loop", "dangling", "folder"])
def test_read_config_special_files(tmp_path, kind):
    target = tmp_path / CONFIG_NAME
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "loop":
        target.symlink_to(target)
    elif kind == "dangling":
        target.symlink_to(tmp_path / "gone.json")
    else:
        target.mkdir()
    with pytest.raises(ConfigError, match=REASONS[kind].split(" (")[0]):
        ReadConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("kind", ["fifo", "big"])
def test_run_config_special_files(tmp_path, kind, capsys):
    target = tmp_path / "run_config.json"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        sparse(target, inputs.RUN_CONFIG_MAX_BYTES + 1)
    words = "is a FIFO" if kind == "fifo" else "above readapt's limit of 16.0 MiB"
    with pytest.raises(ConfigError, match=words):
        read_run_config(tmp_path)
    assert words in one_error_line(capsys, ["eval", "--run", str(tmp_path)])


@pytest.mark.parametrize("kind", ["fifo", "big"])
def test_side_network_weights_special_files(tmp_path, kind):
    from readapt.config import WEIGHTS_NAME
    from readapt.model import get_read_model
    from tiny_models import tiny_bert

    model = get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2))
    target = tmp_path / WEIGHTS_NAME
    if kind == "fifo":
        os.mkfifo(target)
    else:  # far more than this config's tensors could take, even in fp64
        sparse(target, 10 * 1024**3)
    words = "is a FIFO" if kind == "fifo" else "above readapt's limit of"
    with pytest.raises(ConfigError, match=words):
        model.load_trainable(target)


def test_glue_data_dir_that_is_a_fifo(tmp_path):
    from readapt.data import load_task

    os.mkfifo(tmp_path / "glue")
    with pytest.raises(DataError, match="GLUE data folder .* is not a folder; pass --data-dir"):
        load_task("glue/rte", data_dir=tmp_path / "glue")
