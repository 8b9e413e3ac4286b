"""The run folder's lifecycle (rundir.py), through the CLI and the Python API: --overwrite deletes
only runs and only what readapt wrote; one writer per run folder; --resume notices changed data and
a broken `latest` pointer; eval refuses an unfinished run; a failed first step leaves a folder the
same command reuses; write failures are one plain sentence."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import csv_rows
import readapt.train
from readapt import ReadModel
from readapt import checkpoint as ckpt
from readapt import rundir
from readapt.cli import main
from readapt.train import TrainArgs, TrainingError, train


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr, so that stderr holds exactly what the CLI prints."""


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("rundir-data")
    (d / "train.csv").write_text("text,label\n" + csv_rows(16))
    (d / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    return {"model": tiny_model_dir, "train": str(d / "train.csv"), "val": str(d / "val.csv")}


def _options(files, out, **extra) -> dict:
    """2 steps per epoch, 1 epoch, a checkpoint every step."""
    return {"model": files["model"], "output": str(out), "train_file": files["train"],
            "validation_file": files["val"], "epochs": 1, "batch_size": 8, "max_length": 16, "device": "cpu",
            "rnn_dim": 8, "save_every": 1, **extra}


def _argv(options: dict) -> list[str]:
    argv = ["train"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (False, None):
            argv += [flag, str(value)]
    return argv


def _fails(capsys, argv: list[str]) -> str:
    """The single stderr line of a refused command (exit code 1, no traceback)."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("readapt: error: "), err
    return err[0]


def _has(line: str, *words) -> None:
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def finished(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("rundir-runs") / "finished"
    train(TrainArgs(**_options(files, out)))
    return out


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


# -- 1. --overwrite deletes only runs, and only what readapt wrote ------------------------------------
def test_a_run_has_a_marker_listing_what_readapt_owns(finished):
    marker = json.loads((finished / rundir.MARKER).read_text())
    assert set(marker["owns"]) == rundir.OWNED
    assert not rundir.foreign_entries(finished) and rundir.is_run(finished)


def test_overwrite_of_a_folder_that_is_not_a_run_names_what_is_in_the_way(files, tmp_path, capsys):
    """mkdir -p proj/checkpoint proj/src: a checkpoint/ folder does not make a run."""
    proj = tmp_path / "proj"
    (proj / "checkpoint").mkdir(parents=True)
    (proj / "src").mkdir()
    (proj / "src" / "main.py").write_text("precious")
    before = _tree(proj)
    line = _fails(capsys, _argv(_options(files, proj, overwrite=True)))
    _has(line, "not a readapt run", "(src)", "choose another --output")
    with pytest.raises(ValueError, match=r"not a readapt run \(src\)"):
        train(TrainArgs(**_options(files, proj, overwrite=True)))
    assert _tree(proj) == before  # not even a lock file


def test_the_error_names_the_first_few_files_and_counts_the_rest(files, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (folder / name).write_text(name)
    line = _fails(capsys, _argv(_options(files, folder)))
    _has(line, "(a.txt, b.txt, c.txt and 2 more)")


@pytest.mark.parametrize("where", ["cwd", "cwd-parent", "home", "root"])
def test_overwrite_refuses_the_current_directory_its_ancestors_home_and_root(files, finished, tmp_path, capsys,
                                                                            monkeypatch, where):
    """Even when the folder is a real run: `cd runs/x && readapt train ... --output . --overwrite`."""
    run = _copy(finished, tmp_path / "home" / "runs", "run")
    monkeypatch.chdir(run)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    output = {"cwd": ".", "cwd-parent": "..", "home": str(tmp_path / "home"), "root": "/"}[where]
    before = _tree(tmp_path)
    line = _fails(capsys, _argv(_options(files, output, overwrite=True)))
    _has(line, "--overwrite refuses --output", {"cwd": "the current directory", "cwd-parent": "holds the current",
                                                "home": "your home folder", "root": "file system root"}[where])
    assert _tree(tmp_path) == before


def test_a_users_file_in_a_run_blocks_overwrite_and_survives(files, finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "analysis.ipynb").write_text("the user's notebook")
    (run / "checkpoint" / "notes.txt").write_text("the user's notes")
    before = _tree(run)
    line = _fails(capsys, _argv(_options(files, run, overwrite=True)))
    _has(line, "holds files readapt did not write (analysis.ipynb, checkpoint/notes.txt)", "move those out")
    with pytest.raises(ValueError, match="analysis.ipynb"):
        train(TrainArgs(**_options(files, run, overwrite=True)))
    assert _tree(run) == before
    (run / "analysis.ipynb").unlink()
    (run / "checkpoint" / "notes.txt").unlink()
    assert main(_argv(_options(files, run, overwrite=True))) == 0


def test_overwrite_removes_only_readapt_names_whatever_the_marker_claims(tmp_path):
    """remove_owned trusts only readapt's own names: a forged marker, a symlinked checkpoint/ or a
    folder where a file belongs are never followed or deleted."""
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    run.mkdir()
    (run / rundir.MARKER).write_text(json.dumps({"owns": ["precious.txt", "checkpoint"]}))
    (run / "precious.txt").write_text("keep")
    (run / "metrics.json").write_text("{}")
    (run / "checkpoint").symlink_to(outside)
    assert rundir.foreign_entries(run) == ["checkpoint", "precious.txt"]
    rundir.remove_owned(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "precious.txt"]
    assert (outside / "keep.txt").read_text() == "keep"


def test_a_legacy_run_without_marker_counts_only_if_it_is_all_readapt(files, finished, tmp_path, capsys):
    legacy = _copy(finished, tmp_path, "legacy")
    (legacy / rundir.MARKER).unlink()
    assert rundir.is_run(legacy)
    assert main(_argv(_options(files, legacy, overwrite=True))) == 0
    assert (legacy / rundir.MARKER).is_file()
    mine = tmp_path / "mine"  # a user's folder that happens to hold a metrics.json: not a run
    mine.mkdir()
    (mine / "metrics.json").write_text('{"my": "numbers"}')
    assert not rundir.is_run(mine)
    _has(_fails(capsys, _argv(_options(files, mine, overwrite=True))), "not a readapt run")
    assert (mine / "metrics.json").read_text() == '{"my": "numbers"}'


# -- 2. one writer per run folder ----------------------------------------------------------------------
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_writer_is_refused_at_once_and_a_dead_holders_lock_blocks_nothing(files, finished, tmp_path,
                                                                                  capsys):
    run = _copy(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run / rundir.LOCK)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(run)
        for options in ({"overwrite": True}, {"resume": True}, {}):
            line = _fails(capsys, _argv(_options(files, run, **options)))
            _has(line, f"{run} is in use by another readapt process (pid {holder.pid})")
        assert _tree(run) == before  # the lock comes before any check or cleanup
        (run / "analysis.ipynb").write_text("the user's")  # the lock is checked before the files
        _has(_fails(capsys, _argv(_options(files, run, overwrite=True))), "in use by another readapt process")
        (run / "analysis.ipynb").unlink()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(_argv(_options(files, run, overwrite=True))) == 0  # the kernel dropped the dead holder's lock


def test_the_lock_is_held_for_the_whole_run(files, tmp_path, monkeypatch):
    """A second train() on the same folder while the first is in its loop: refused with our pid."""
    out = tmp_path / "run"
    real_loop = readapt.train._loop
    seen = []

    def loop(*args, **kwargs):
        with pytest.raises(rundir.RunBusy) as info:
            train(TrainArgs(**_options(files, out, overwrite=True)))
        seen.append(str(info.value))
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(readapt.train, "_loop", loop)
    train(TrainArgs(**_options(files, out)))
    assert seen and f"(pid {os.getpid()})" in seen[0]
    with rundir.RunLock(out):  # released when train() returned
        assert (out / rundir.LOCK).read_text().strip() == str(os.getpid())


def test_a_failed_start_in_a_new_folder_leaves_no_folder_and_no_lock(files, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    _fails(capsys, _argv(_options(files, out, lr=100.0)))  # refused before the lock
    _fails(capsys, _argv(_options(files, out, train_file=str(tmp_path / "missing.csv"))))  # refused under it
    assert not (tmp_path / "a").exists()


# -- 3. --resume notices changed data -------------------------------------------------------------------
@pytest.fixture
def unfinished(files, finished, tmp_path):
    """A run killed just before its end (metrics.json missing), on its own copy of the data and model."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(files["train"], data / "train.csv")
    model = tmp_path / "model"
    shutil.copytree(files["model"], model)
    own = {**files, "train": str(data / "train.csv"), "model": str(model)}
    run = tmp_path / "run"
    train(TrainArgs(**_options(own, run)))
    (run / "metrics.json").unlink()
    return own, run


def test_resume_refuses_an_edited_train_file_unless_allow_changed_data(unfinished, capsys):
    own, run = unfinished
    train_csv = Path(own["train"])
    train_csv.write_text(train_csv.read_text().replace(",pos", ",neg") + "one more row,pos\n")
    line = _fails(capsys, _argv(_options(own, run, resume=True)))
    _has(line, f"--resume: the --train-file file {train_csv} changed", "bytes)", "--allow-changed-data")
    with pytest.raises(ValueError, match="--allow-changed-data"):
        train(TrainArgs(**_options(own, run, resume=True)))
    assert not (run / "metrics.json").exists()
    capsys.readouterr()
    assert main(_argv(_options(own, run, resume=True, allow_changed_data=True))) == 0
    err = capsys.readouterr().err
    assert f"readapt: warning: --allow-changed-data: the --train-file file {train_csv} changed" in err


def test_resume_refuses_a_changed_model_config(unfinished, capsys):
    own, run = unfinished
    config = Path(own["model"]) / "config.json"
    config.write_text(config.read_text().replace('"hidden_act": "gelu"', '"hidden_act": "relu"'))
    line = _fails(capsys, _argv(_options(own, run, resume=True)))
    _has(line, f"the model file {config} changed (", "--allow-changed-data")


def test_resume_with_unchanged_data_needs_no_flag(unfinished, capsys):
    own, run = unfinished
    capsys.readouterr()
    assert main(_argv(_options(own, run, resume=True))) == 0
    assert "warning" not in capsys.readouterr().err


def test_examples_from_a_package_or_the_hub_are_fingerprinted_too(files):
    from readapt.data import Example, TaskData, TaskSpec

    args = TrainArgs(model="no-such-hub/id", output="x", task="rotten_tomatoes")
    spec = TaskSpec("rotten_tomatoes", ("neg", "pos"), ("accuracy",), ("text",))
    before = rundir.fingerprints(args, TaskData(spec, [Example(("good",), 1)], [Example(("bad",), 0)], None))
    after = rundir.fingerprints(args, TaskData(spec, [Example(("good",), 0)], [Example(("bad",), 0)], None))
    assert before["files"] == {} and rundir._changes(before, after) == ["the train examples changed (1 -> 1 examples)"]
    assert rundir._changes(before, before) == []


def test_large_files_hash_their_ends(tmp_path, monkeypatch):
    """Above the limit, size + the first and last MiB: a replaced or appended file is seen."""
    monkeypatch.setattr(rundir, "_WHOLE_FILE_LIMIT", 3 << 20)
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"a" * (4 << 20))
    first = rundir.file_fingerprint(path)
    assert first["sampled"] is True
    with open(path, "r+b") as f:
        f.seek((4 << 20) - 10)
        f.write(b"b" * 10)
    assert rundir.file_fingerprint(path)["sha256"] != first["sha256"]


# -- 4. a broken `latest` pointer is never a silent restart ----------------------------------------------------
def test_a_broken_latest_pointer_falls_back_to_the_newest_complete_checkpoint(files, finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "metrics.json").unlink()
    newest = ckpt.latest_checkpoint(run)
    (run / "checkpoint" / "latest").write_text("../../etc\n")
    capsys.readouterr()
    assert main(_argv(_options(files, run, resume=True))) == 0
    err = capsys.readouterr().err
    assert f"readapt: warning: {run / 'checkpoint' / 'latest'} is missing or broken; resuming from the newest " \
           f"complete checkpoint, {newest}" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["history"] == json.loads(
        (finished / "metrics.json").read_text())["history"]  # continued at the end, not from step 0


def test_a_broken_latest_pointer_with_no_checkpoint_left_is_refused(files, finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "metrics.json").unlink()
    shutil.rmtree(ckpt.latest_checkpoint(run))
    line = _fails(capsys, _argv(_options(files, run, resume=True)))
    _has(line, "is broken and no complete checkpoint is left", "--overwrite")
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint"):
        train(TrainArgs(**_options(files, run, resume=True)))


def test_resume_point_without_a_pointer_uses_a_complete_step_folder(tmp_path):
    tensors, state = {"w": torch.ones(2)}, {"progress": {"global_step": 1}}
    step = ckpt.save_checkpoint(tmp_path, 1, tensors, state)
    (tmp_path / "checkpoint" / "latest").unlink()  # a kill between the rename and the pointer
    assert ckpt.resume_point(tmp_path) == (step, f"{tmp_path / 'checkpoint' / 'latest'} is missing or broken; "
                                                 f"resuming from the newest complete checkpoint, {step}")
    (step / ckpt.STATE_NAME).unlink()  # an incomplete folder is no fallback
    (tmp_path / "checkpoint" / "latest").write_text(step.name)
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint is left"):
        ckpt.resume_point(tmp_path)
    shutil.rmtree(tmp_path / "checkpoint")
    assert ckpt.resume_point(tmp_path) == (None, None)  # never checkpointed: start at step 0


# -- 5. eval on an unfinished run ----------------------------------------------------------------------------
def test_eval_of_an_unfinished_run_needs_allow_unfinished(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "metrics.json").unlink()
    line = _fails(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, "unfinished run", "--allow-unfinished")
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--device", "cpu", "--split", "validation", "--allow-unfinished"]) == 0
    captured = capsys.readouterr()
    assert "readapt: warning:" in captured.err and '"accuracy"' in captured.out


# -- 6. a failure on step 1 leaves a folder the same command reuses ---------------------------------------------
def _fail_first_step(monkeypatch):
    real = ReadModel.forward

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.training:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ReadModel, "forward", forward)


def test_a_failed_first_step_leaves_a_folder_the_identical_command_reuses(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = _argv(_options(files, out))
    with monkeypatch.context() as m:
        _fail_first_step(m)
        _has(_fails(capsys, argv), "loss became nan at step 1", "no checkpoint had been written yet")
    assert (out / "run_config.json").is_file() and not (out / "checkpoint").exists()
    _has(_fails(capsys, _argv(_options(files, out, rnn_dim=16))), "already holds a run")  # other args: refused
    assert main(argv) == 0  # the identical command
    assert json.loads((out / "metrics.json").read_text())["resumed"] is False


def test_resume_of_a_run_that_never_checkpointed_is_not_called_resumed(files, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_first_step(m)
        with pytest.raises(TrainingError):
            train(TrainArgs(**_options(files, out)))
    assert train(TrainArgs(**_options(files, out, resume=True)))["resumed"] is False


# -- 7. write failures are one plain sentence ------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_is_one_plain_sentence(files, tmp_path, capsys, monkeypatch):
    """torch's zip writer reports a full disk as an `inline_container ... unexpected pos` assertion."""
    def save(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1152 vs 1046")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(ckpt.torch, "save", save)
    monkeypatch.setattr(ckpt.os, "statvfs", lambda path: Full())
    line = _fails(capsys, _argv(_options(files, tmp_path / "run")))
    _has(line, "no space left on device while writing", ckpt.STATE_NAME, "free space or choose another --output")
    assert "inline_container" not in line and "Errno" not in line


@pytest.mark.parametrize("code,words", [
    (errno.ENOSPC, "no space left on device while writing"),
    (errno.EROFS, "is on a read-only file system"),
    (errno.EEXIST, "already exists where readapt writes a new file"),
    (errno.ELOOP, "symbolic link loop"),
])
def test_write_errors_map_to_plain_sentences(tmp_path, monkeypatch, code, words):
    class Failing:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr("builtins.open", Failing)
    with pytest.raises(ckpt.WriteError) as info:
        ckpt._save_state({"a": torch.zeros(1000)}, tmp_path / ckpt.STATE_NAME)
    assert str(ckpt.STATE_NAME) in str(info.value) and words in str(info.value)
    assert words in str(info.value) and "--output" in str(info.value) and "Errno" not in str(info.value)
    assert isinstance(info.value, OSError) and info.value.errno == code


def test_real_eexist_and_eloop_while_checkpointing(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / ".step-000000001.tmp").write_text("a file where a folder goes")
    with pytest.raises(ckpt.WriteError, match="already exists where readapt writes a new file"):
        ckpt.save_checkpoint(run, 1, {"w": torch.ones(1)}, {"progress": {}})
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ckpt.WriteError, match="symbolic link loop"):
        ckpt.atomic_write_text(loop / "latest", "x")
