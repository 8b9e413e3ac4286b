"""Interruption loses nothing: checkpoints are atomic, a run killed with SIGKILL at any moment (or
stopped with Ctrl-C) resumes with --resume and ends bit-identical to a run never interrupted."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from readapt import checkpoint as ckpt
from readapt.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint


def _state(step: int) -> dict:
    return {"progress": {"epoch": 0, "step_in_epoch": step, "global_step": step}, "rng": ckpt.rng_state(),
            "history": [{"epoch": 1, "validation": {"accuracy": 0.5}}], "note": "x", "none": None}


def _tensors(step: int) -> dict:
    return {"side.w": torch.full((3, 2), float(step)), "head.b": torch.arange(4.0) + step}


def _loaded_step(run: Path) -> int:
    trainable, state = load_checkpoint(latest_checkpoint(run))
    assert torch.equal(trainable["side.w"], torch.full((3, 2), float(state["progress"]["global_step"])))
    return state["progress"]["global_step"]


# -- atomic checkpoints --------------------------------------------------------------------------
def test_round_trip_and_only_the_newest_is_kept(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _tensors(step), _state(step))
    assert _loaded_step(tmp_path) == 3
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["latest", "step-000000003"]
    _, state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["history"][0]["validation"]["accuracy"] == 0.5 and state["none"] is None


def test_two_checkpoints_at_the_same_step_never_leave_latest_dangling(tmp_path):
    """The last step of an epoch and the epoch's end share a step number: the second checkpoint
    must not delete the folder `latest` points to before `latest` moves on."""
    first = save_checkpoint(tmp_path, 5, _tensors(5), _state(5))
    second = save_checkpoint(tmp_path, 5, _tensors(5), {**_state(5), "note": "epoch end"})
    assert first != second and not first.exists()
    assert latest_checkpoint(tmp_path) == second
    assert load_checkpoint(second)[1]["note"] == "epoch end"
    third = save_checkpoint(tmp_path, 6, _tensors(6), _state(6))
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["latest", third.name]


_CRASH_POINTS = ["save_tensors", "torch_save", "replace", "write_latest", "rmtree"]


@pytest.mark.parametrize("same_step", [False, True], ids=["next-step", "same-step"])
def test_a_crash_at_any_point_of_a_save_keeps_a_complete_checkpoint(tmp_path, monkeypatch, same_step):
    """Simulated kills: make every file operation of save_checkpoint fail in turn (the n-th call of
    each); whatever happened, `latest` names a complete checkpoint, old or new."""
    real = {"save_tensors": ckpt.save_tensors, "torch_save": torch.save, "replace": os.replace,
            "write_latest": ckpt.atomic_write_text, "rmtree": shutil.rmtree}

    class Killed(Exception):
        pass

    for point in _CRASH_POINTS:
        for nth in range(1, 4):
            run = tmp_path / f"{point}-{nth}"
            save_checkpoint(run, 4, _tensors(4), _state(4))
            calls = {"n": 0}

            def crash(*args, _point=point, _nth=nth, **kwargs):
                calls["n"] += 1
                if calls["n"] == _nth:
                    raise Killed(_point)
                return real[_point](*args, **kwargs)

            with monkeypatch.context() as m:
                m.setattr(ckpt, "save_tensors", crash if point == "save_tensors" else real["save_tensors"])
                m.setattr(ckpt.torch, "save", crash if point == "torch_save" else real["torch_save"])
                m.setattr(ckpt.os, "replace", crash if point == "replace" else real["replace"])
                m.setattr(ckpt, "atomic_write_text", crash if point == "write_latest" else real["write_latest"])
                m.setattr(ckpt.shutil, "rmtree", crash if point == "rmtree" else real["rmtree"])
                try:
                    save_checkpoint(run, 4 if same_step else 5, _tensors(4 if same_step else 5),
                                    _state(4 if same_step else 5))
                except Killed:
                    pass
            assert _loaded_step(run) in (4, 5), (point, nth)
            # and the next save after the "restart" cleans up whatever the crash left behind
            save_checkpoint(run, 6, _tensors(6), _state(6))
            assert _loaded_step(run) == 6
            assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["latest", "step-000000006"]


@pytest.mark.parametrize("pointer", [b"../../etc", b"/etc", b"\xff\xfe", b"", b"step-12", b"step-000000001/.."])
def test_a_damaged_latest_pointer_is_no_checkpoint(tmp_path, pointer):
    save_checkpoint(tmp_path, 1, _tensors(1), _state(1))
    (tmp_path / "checkpoint" / "latest").write_bytes(pointer)
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
@pytest.mark.parametrize("name", [ckpt.TRAINABLE_NAME, ckpt.STATE_NAME])
def test_damaged_checkpoint_files(tmp_path, name, damage):
    path = save_checkpoint(tmp_path, 1, _tensors(1), _state(1)) / name
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(200), "empty": b""}[damage])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path.parent)
    assert name in str(info.value)
    assert any(word in str(info.value) for word in ("truncated", "corrupted", "missing"))


def test_a_state_that_is_not_a_dict_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, 1, _tensors(1), _state(1))
    torch.save([1, 2, 3], path / ckpt.STATE_NAME)
    with pytest.raises(CheckpointError, match="not a readapt trainer state"):
        load_checkpoint(path)


def test_state_with_code_is_not_executed(tmp_path):
    """A trainer_state.pt whose pickle would run code is refused by weights_only=True."""
    path = save_checkpoint(tmp_path, 1, _tensors(1), _state(1))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"progress": Evil()}, path / ckpt.STATE_NAME)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(path)
    assert not marker.exists()


# -- a real process, killed and resumed ----------------------------------------------------------
PY = sys.executable
ENV = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PROCESS_TIMEOUT = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("resume-data")
    words = ["good film", "great acting", "bad film", "awful plot", "lovely story", "dull mess", "fine", "poor"]

    def write(name, n, offset):
        rows = "".join(f"{words[(i + offset) % 8]} {i},{'pos' if (i + offset) % 2 == 0 else 'neg'}\n"
                       for i in range(n))
        (d / name).write_text("text,label\n" + rows)
        return str(d / name)

    return {"model": tiny_model_dir, "train": write("train.csv", 40, 0), "val": write("val.csv", 12, 3),
            "test": write("test.csv", 12, 5), "dir": d}


def _cmd(data, out: Path, resume: bool) -> list[str]:
    cmd = [PY, "-m", "readapt", "train", "--model", data["model"], "--train-file", data["train"],
           "--validation-file", data["val"], "--test-file", data["test"], "--epochs", "2", "--batch-size", "8",
           "--max-length", "16", "--rnn-dim", "16", "--seed", "7", "--device", "cpu", "--save-every", "1",
           "--output", str(out)]
    return cmd + (["--resume"] if resume else [])


def _latest(out: Path):
    try:
        return (out / "checkpoint" / "latest").read_text().strip()
    except OSError:
        return None


def _start(data, out: Path):
    resume = (out / "run_config.json").exists()
    return subprocess.Popen(_cmd(data, out, resume), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(proc, condition, deadline_s=PROCESS_TIMEOUT) -> bool:
    """Poll until condition() or the process exits; True if the condition was met while it ran."""
    end = time.monotonic() + deadline_s
    while proc.poll() is None and time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.002)
    return False


def _after_checkpoints(n):
    """Kill policy: once `latest` has changed n times in this process."""
    def wait(proc, out):
        state = {"last": _latest(out), "seen": 0}

        def changed():
            current = _latest(out)
            if current != state["last"]:
                state["last"], state["seen"] = current, state["seen"] + 1
            return state["seen"] >= n
        return _wait_for(proc, changed)
    return wait


def _on_run_dir(proc, out):
    """Kill policy: as soon as the run directory appears (before any checkpoint)."""
    return _wait_for(proc, lambda: (out / "run_config.json").exists())


def _random_moment(rng):
    """Kill policy: a random moment (seeded): 1-5 checkpoints into this process, then 0-60 ms more,
    which lands anywhere in a step, an evaluation or a checkpoint write (a step takes ~20-50 ms)."""
    count, delay = rng.randint(1, 5), rng.uniform(0.0, 0.06)

    def wait(proc, out):
        if not _after_checkpoints(count)(proc, out):
            return False
        time.sleep(delay)
        return proc.poll() is None
    return wait


def _finish(data, out: Path) -> None:
    for _ in range(2):
        if (out / "metrics.json").exists():  # killed after the end: nothing left to resume
            return
        proc = _start(data, out)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, err
    assert (out / "metrics.json").exists()


def _chain(data, out: Path, policies, sig=signal.SIGKILL) -> list:
    """Start, stop with `sig` per policy, restart with --resume; returns where each stop landed."""
    moments = []
    for policy in policies:
        if (out / "metrics.json").exists():
            break
        proc = _start(data, out)
        started = time.monotonic()
        if policy(proc, out) and proc.poll() is None:
            proc.send_signal(sig)
            moments.append((_latest(out), round(time.monotonic() - started, 2)))
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        moments[-1:] = [(*moments[-1], proc.returncode, err)] if moments else []
    _finish(data, out)
    return moments


def _reference(data, out: Path) -> list:
    _finish(data, out)
    return []


def _final_weights(run: Path) -> dict:
    """The run's result (best epoch) and the last checkpoint's weights (the end of training)."""
    tensors = {f"best/{k}": v for k, v in load_file(str(run / "read_model.safetensors")).items()}
    last, _ = load_checkpoint(latest_checkpoint(run))
    tensors.update({f"last/{k}": v for k, v in last.items()})
    return tensors


def _scores(run: Path) -> dict:
    """What must not change with interruptions: everything but wall-clock times."""
    metrics = json.loads((run / "metrics.json").read_text())
    history = [{k: v for k, v in h.items() if k != "train_seconds"} for h in metrics["history"]]
    return {**{k: metrics[k] for k in ("validation", "test", "best_epoch")}, "history": history}


def test_kill_and_resume_ends_identical_to_an_uninterrupted_run(data, tmp_path):
    rng = random.Random(20240531)
    runs = {name: tmp_path / name for name in ("reference", "checkpoints", "random", "ctrl_c")}
    jobs = {
        "reference": lambda: _reference(data, runs["reference"]),
        # SIGKILL just after the 1st checkpoint, then 3 and 4 checkpoints into each resumed process
        # (the last one lands on or past the epoch boundary: step 5, its epoch-end twin, step 6/7).
        "checkpoints": lambda: _chain(data, runs["checkpoints"],
                                      [_after_checkpoints(1), _after_checkpoints(3), _after_checkpoints(4)]),
        # SIGKILL before the first checkpoint, then twice at seeded random moments mid-training.
        "random": lambda: _chain(data, runs["random"], [_on_run_dir, _random_moment(rng), _random_moment(rng)]),
        # Ctrl-C after two checkpoints: stops cleanly with a checkpoint, exit 130, one line.
        "ctrl_c": lambda: _chain(data, runs["ctrl_c"], [_after_checkpoints(2)], sig=signal.SIGINT),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        moments = {name: future.result() for name, future in futures.items()}
    print("stop moments:", {k: [m[:3] for m in v] for k, v in moments.items()})

    assert len(moments["checkpoints"]) == 3 and all(m[2] == -signal.SIGKILL for m in moments["checkpoints"])
    assert len(moments["random"]) >= 2
    ((at, _, code, err),) = moments["ctrl_c"]
    assert code == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("readapt: error: interrupted at step "), err
    assert "--resume" in lines[0] and "Traceback" not in err

    reference = _final_weights(runs["reference"])
    for name in ("checkpoints", "random", "ctrl_c"):
        weights = _final_weights(runs[name])
        assert weights.keys() == reference.keys()
        different = [k for k in reference if not torch.equal(reference[k], weights[k])]
        assert not different, (name, different[:5], moments[name])
        assert _scores(runs[name]) == _scores(runs["reference"]), name
        assert json.loads((runs[name] / "metrics.json").read_text())["resumed"] is True


def test_resume_with_a_damaged_checkpoint_is_one_line(data, tmp_path, capsys, monkeypatch):
    import readapt.train
    from readapt.cli import main
    from transformers.utils import logging as hf_logging
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(readapt.train, "tqdm", QuietTqdm)
    hf_logging.disable_progress_bar()
    out = tmp_path / "run"
    argv = _cmd(data, out, False)[3:]
    argv[argv.index("--epochs") + 1] = "1"
    assert main(argv) == 0
    (out / "metrics.json").unlink()
    good = {k: v.clone() for k, v in load_checkpoint(latest_checkpoint(out))[0].items()}  # not mmapped

    def resume_error() -> str:
        capsys.readouterr()
        assert main(argv + ["--resume"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("readapt: error: ") and "Traceback" not in err[0]
        return err[0]

    path = latest_checkpoint(out) / ckpt.TRAINABLE_NAME
    path.write_bytes(path.read_bytes()[:100])
    line = resume_error()
    assert "truncated or corrupted" in line and ckpt.TRAINABLE_NAME in line
    save_checkpoint(out, 3, {"side.nope": torch.zeros(2)}, _state(3))
    assert "saved for another method or config" in resume_error()
    save_checkpoint(out, 4, good, {"progress": "?", "optimizer": {}, "scheduler": {}, "rng": {}})
    line = resume_error()
    assert "damaged or from another run" in line and "--overwrite" in line
    save_checkpoint(out, 5, good, {**_state(5), "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}})
    assert "damaged or from another run" in resume_error()
    hf_logging.enable_progress_bar()
