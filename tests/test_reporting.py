"""--report-to: loss and lr per step, validation per epoch, read back from what the trackers wrote."""

import json
from pathlib import Path

import pytest

from conftest import csv_rows, one_error_line
from readapt import rundir
from readapt.cli import main
from readapt.reporting import TENSORBOARD_DIR, reporter_names


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("reporting-data")
    (d / "train.csv").write_text("text,label\n" + csv_rows(24))
    (d / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    return d


def _argv(model, data, out, *extra):
    return ["train", "--model", model, "--train-file", str(data / "train.csv"), "--validation-file",
            str(data / "val.csv"), "--output", str(out), "--epochs", "2", "--batch-size", "8", "--max-length", "16",
            "--rnn-dim", "8", "--device", "cpu", "--lr", "0.01", "--warmup-ratio", "0", *extra]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / TENSORBOARD_DIR))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_loss_lr_and_validation(tiny_model_dir, data, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, data, out, "--report-to", "tensorboard")) == 0
    scalars = _scalars(out)
    loss, lr = scalars["train/loss"], scalars["train/lr"]
    assert [step for step, _ in loss] == [1, 2, 3, 4, 5, 6]  # 24 examples / 8, two epochs
    assert all(0 < value < 10 for _, value in loss)
    # linear decay from the peak, no warmup: 0.01 * (6 - s) / 6 for the step s that used it
    assert [round(value, 6) for _, value in lr] == [round(0.01 * (6 - s) / 6, 6) for s in range(6)]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert scalars["validation/accuracy"] == [(h["step"], pytest.approx(h["validation"]["accuracy"]))
                                              for h in history]


def test_overwrite_clears_the_event_files_and_refuses_foreign_ones(tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _argv(tiny_model_dir, data, out, "--report-to", "tensorboard", "--epochs", "1")
    assert main(argv) == 0
    first = sorted(p.name for p in (out / TENSORBOARD_DIR).iterdir())
    assert main(argv + ["--overwrite"]) == 0
    second = sorted(p.name for p in (out / TENSORBOARD_DIR).iterdir())
    assert len(first) == len(second) == 1 and first != second
    assert rundir.foreign_entries(out) == []
    (out / TENSORBOARD_DIR / "notes.txt").write_text("mine")
    line = one_error_line(capsys, argv + ["--overwrite"])
    assert "tensorboard/notes.txt" in line
    assert (out / TENSORBOARD_DIR / "notes.txt").read_text() == "mine"


def test_wandb_offline_run_holds_the_metrics(tiny_model_dir, data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    out = tmp_path / "run"
    assert main(_argv(tiny_model_dir, data, out, "--report-to", "wandb", "--epochs", "1")) == 0
    (log,) = (tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb")  # wandb's own binary log
    content = log.read_bytes()
    assert b"train/loss" in content and b"train/lr" in content and b"validation/accuracy" in content
    assert not (out / "wandb").exists()  # its tree stays out of the run folder


def test_report_to_values():
    assert reporter_names(None) == [] and reporter_names(["none"]) == []
    assert reporter_names(["wandb,tensorboard"]) == ["tensorboard", "wandb"]
    assert reporter_names(["tensorboard", "tensorboard"]) == ["tensorboard"]


@pytest.mark.parametrize("value, words", [
    ("mlflow", ["--report-to mlflow", "none, tensorboard, wandb"]),
    ("none,tensorboard", ["--report-to none cannot be combined"]),
])
def test_bad_report_to(tiny_model_dir, data, tmp_path, capsys, value, words):
    line = one_error_line(capsys, _argv(tiny_model_dir, data, tmp_path / "run", "--report-to", value))
    assert all(word in line for word in words), line
    assert not (tmp_path / "run").exists()


def test_a_missing_client_names_the_pip_install(tiny_model_dir, data, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    line = one_error_line(capsys, _argv(tiny_model_dir, data, tmp_path / "run", "--report-to", "wandb"))
    assert "pip install wandb" in line
    assert not (tmp_path / "run").exists()


def test_resume_continues_the_curves_without_duplicate_steps(tiny_model_dir, data, tmp_path, monkeypatch, capsys):
    import readapt.train

    out = tmp_path / "run"
    argv = _argv(tiny_model_dir, data, out, "--report-to", "tensorboard", "--save-every", "2")
    real = readapt.train._step

    def dies_in_step_4(model, batch, optimizer, scheduler, max_grad_norm, step):
        if step == 3:  # steps 1-3 are logged, the last checkpoint is step 2's
            raise RuntimeError("killed")
        return real(model, batch, optimizer, scheduler, max_grad_norm, step)

    with monkeypatch.context() as m:
        m.setattr(readapt.train, "_step", dies_in_step_4)
        assert main(argv) != 0
    assert [s for s, _ in _scalars(out)["train/loss"]] == [1, 2, 3]
    assert main(argv + ["--resume"]) == 0
    scalars = _scalars(out)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [round(v, 6) for _, v in scalars["train/lr"]] == [round(0.01 * (6 - s) / 6, 6) for s in range(6)]
