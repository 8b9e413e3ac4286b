"""Data parallel under torchrun (2 CPU processes, gloo): the same weights as one process at the same
global batch, a signal on one rank stops both at one step boundary, a rank killed mid-epoch loses
nothing, --resume continues; the ranks build a state cache entry together, each computing half."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import csv_rows
from readapt import checkpoint as ckpt
from readapt.checkpoint import CheckpointError
from readapt.cli import main
from readapt.distributed import World
from readapt.methods import HeadSpec
from readapt.rundir import RunLock
from readapt.train import TrainArgs, train

WORKER = Path(__file__).with_name("dp_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"
# Two processes sum the same per-example terms in another order: float32 rounding, nothing more.
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr."""


def _options(model, data, out):
    # 17 examples, global batch 8: shards of 4+4, 4+4 and 1+0 (an empty shard) each epoch. The side
    # network in float32: parity across process counts is exact there (bf16 rounds each shard's own way)
    return ["--side-dtype", "float32", "--model", model, "--train-file", str(data / "train.csv"), "--validation-file", str(data / "val.csv"),
            "--output", str(out), "--epochs", "2", "--batch-size", "8", "--max-length", "16", "--rnn-dim", "8",
            "--device", "cpu", "--lr", "0.01", "--save-every", "100"]


def _torchrun(*argv, logs: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``readapt *argv`` on 2 ranks; with ``logs``, each rank's stdout and stderr go to files there."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    per_rank = ["--log-dir", str(logs), "--redirects", "3"] if logs else []
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *per_rank,
           str(WORKER), *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _rank_stderr(logs: Path, rank: int) -> list[str]:
    (path,) = logs.glob(f"*/attempt_0/{rank}/stderr.log")
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dp-data")
    (folder / "train.csv").write_text("text,label\n" + csv_rows(17))
    (folder / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    return folder


@pytest.fixture(scope="module")
def single(tiny_model_dir, data, tmp_path_factory) -> Path:
    """The one-process run every data-parallel run must match; its state cache in single/../cache."""
    import readapt.train

    run = tmp_path_factory.mktemp("dp-single") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readapt.train, "HeadSpec", functools.partial(HeadSpec, dropout=0.0))  # as dp_worker.py
        assert main(["train", *_options(tiny_model_dir, data, run), "--cache-dir", str(run.parent / "cache")]) == 0
    return run


def _assert_same_weights(run: Path, reference: Path) -> None:
    a, b = load_file(str(reference / "read_model.safetensors")), load_file(str(run / "read_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0, msg=key)


def test_two_processes_match_one_and_resume(tiny_model_dir, data, single, tmp_path):
    parallel = tmp_path / "parallel"
    options = [*_options(tiny_model_dir, data, parallel), "--cache-dir", str(single.parent / "cache")]
    stopped = _torchrun("--term-rank", "1", "--term-after", "4", "train", *options)
    assert stopped.returncode != 0
    assert "interrupted at step 4; checkpoint written" in stopped.stderr  # rank 0 stopped at rank 1's step
    _, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(parallel))
    assert state["progress"]["global_step"] == 4 and state["progress"]["world_size"] == 2

    with pytest.raises(CheckpointError, match="written by a run of 2 process"):  # one process cannot resume it
        train(TrainArgs(**{**vars(TrainArgs(model="m", output="o")), **_as_kwargs(tiny_model_dir, data, parallel),
                           "resume": True}))

    resumed = _torchrun("train", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((parallel / "metrics.json").read_text())
    reference = json.loads((single / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["global_batch_size"], reference["world_size"]) == (2, 8, 1)
    assert (metrics["cache"], reference["cache"]) == ("hit", "miss")  # two processes read one's entries
    assert [h["step"] for h in metrics["history"]] == [h["step"] for h in reference["history"]] == [3, 6]
    _assert_same_weights(parallel, single)
    last_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(single))[0]
    last_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(parallel))[0]
    assert any(not torch.equal(last_a[k], torch.zeros_like(last_a[k])) for k in last_a)
    for key in last_a:
        torch.testing.assert_close(last_b[key], last_a[key], atol=ATOL, rtol=0, msg=key)
    assert metrics["validation"] == pytest.approx(reference["validation"])


def test_a_rank_killed_mid_epoch_loses_nothing(tiny_model_dir, data, single, tmp_path):
    parallel, logs = tmp_path / "parallel", tmp_path / "logs"
    options = [*_options(tiny_model_dir, data, parallel), "--save-every", "2"]
    killed = _torchrun("--kill-rank", "1", "--kill-after", "5", "train", *options, logs=logs)  # SIGKILL: no goodbye
    assert killed.returncode != 0
    last = ckpt.latest_checkpoint(parallel)
    assert last.name == "step-000000004"  # the last complete one, before the kill; nothing written after it
    (line,) = _rank_stderr(logs, 0)  # one line, no traceback
    assert line.startswith("readapt: error: another rank stopped unexpectedly after step 5 (")
    assert line.endswith(f"); the last good checkpoint ({last}) is kept: rerun the same command with --resume")
    RunLock(parallel).acquire().release()  # the folder is free again

    resumed = _torchrun("train", *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_weights(parallel, single)


def test_the_ranks_build_the_state_cache_together_each_computing_half(tiny_model_dir, data, single, tmp_path):
    cache, counts, parallel = tmp_path / "cache", tmp_path / "counts", tmp_path / "parallel"
    counts.mkdir()
    built = _torchrun("--count-frozen", str(counts), "train", *_options(tiny_model_dir, data, parallel),
                      "--cache", "on", "--cache-dir", str(cache))
    assert built.returncode == 0, built.stderr[-2000:]
    assert json.loads((parallel / "metrics.json").read_text())["cache"] == "miss"
    # One frozen pass per split on each rank, over its half: train 17 = 9 + 8, validation 8 = 4 + 4.
    assert {rank: (counts / f"rank-{rank}.txt").read_text().split() for rank in (0, 1)} == {
        0: ["9", "4"], 1: ["8", "4"]}
    _assert_same_weights(parallel, single)
    # The entries are the single process's (same keys, same states bit for bit), and one process reads them.
    reference = single.parent / "cache"
    entries = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert entries == sorted(p.name for p in reference.iterdir() if p.is_dir()) and len(entries) == 2
    for key in entries:
        ours, theirs = _stored_states(cache / key), _stored_states(reference / key)
        assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert main(["train", *_options(tiny_model_dir, data, tmp_path / "hit"), "--epochs", "1", "--cache", "on",
                 "--cache-dir", str(cache)]) == 0
    assert json.loads((tmp_path / "hit" / "metrics.json").read_text())["cache"] == "hit"


def test_a_rank_that_cannot_write_the_cache_stops_the_build_on_every_rank(tiny_model_dir, data, single, tmp_path):
    cache = tmp_path / "cache"
    options = ["--full-disk-rank", "1", "train", "--cache-dir", str(cache)]
    refused = _torchrun(*options, *_options(tiny_model_dir, data, tmp_path / "on"), "--cache", "on",
                        logs=tmp_path / "on-logs")
    assert refused.returncode != 0
    assert _rank_stderr(tmp_path / "on-logs", 1) == [
        f"readapt: error: cannot write the state cache ({cache}: no space left on device); pass --cache-dir "
        f"elsewhere or --cache off"]
    assert _rank_stderr(tmp_path / "on-logs", 0) == [
        "readapt: error: another rank could not build the state cache (its own message says why); pass "
        "--cache-dir elsewhere or --cache off"]
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "CACHEDIR.TAG"]  # no entry, no temporary folder
    # auto: every rank warns and trains without the cache, in step with the others.
    live = _torchrun(*options, *_options(tiny_model_dir, data, tmp_path / "auto"), logs=tmp_path / "auto-logs")
    assert live.returncode == 0, live.stderr[-2000:]
    assert json.loads((tmp_path / "auto" / "metrics.json").read_text())["cache"] == "off"
    warnings = [_rank_stderr(tmp_path / "auto-logs", rank) for rank in (0, 1)]
    assert [len(lines) for lines in warnings] == [1, 1]
    assert all(lines[0].startswith("readapt: warning: state cache off: ") for lines in warnings)
    _assert_same_weights(tmp_path / "auto", single)


def _stored_states(entry: Path) -> list[np.ndarray]:
    """Each sequence's stored float32 values, read by the entry's manifest and index alone."""
    manifest = json.loads((entry / "manifest.json").read_text())
    shards = [np.fromfile(entry / shard["file"], dtype=np.float32) for shard in manifest["shards"]]
    width = len(manifest["layers"]) * manifest["hidden_size"]
    return [shards[shard][offset:offset + tokens * width]  # an encoder's entry: no target tokens
            for shard, offset, tokens, _ in np.load(entry / "index.npy").tolist()]


def _as_kwargs(model, data, out) -> dict:
    return {"model": model, "train_file": str(data / "train.csv"), "validation_file": str(data / "val.csv"),
            "output": str(out), "epochs": 2, "batch_size": 8, "max_length": 16, "rnn_dim": 8, "device": "cpu",
            "lr": 0.01, "save_every": 100, "side_dtype": "float32"}


def test_shards_cover_the_batch_in_order():
    items = list(range(7))
    shards = [World(rank, 3).shard(items) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6]]
    assert World(1, 2).shard([0]) == [] and World(0, 1).shard(items) == items
