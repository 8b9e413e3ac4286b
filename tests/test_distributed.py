"""Data parallel under torchrun (2 CPU processes, gloo): the same weights as one process at the same
global batch, a signal on one rank stops both at one step boundary, --resume continues."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import csv_rows
from readapt import checkpoint as ckpt
from readapt.checkpoint import CheckpointError
from readapt.distributed import World
from readapt.train import TrainArgs, train

WORKER = Path(__file__).with_name("dp_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"
# Two processes sum the same per-example terms in another order: float32 rounding, nothing more.
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr."""


def _options(model, data, out):
    # 17 examples, global batch 8: shards of 4+4, 4+4 and 1+0 (an empty shard) each epoch
    return ["--model", model, "--train-file", str(data / "train.csv"), "--validation-file", str(data / "val.csv"),
            "--output", str(out), "--epochs", "2", "--batch-size", "8", "--max-length", "16", "--rnn-dim", "8",
            "--device", "cpu", "--lr", "0.01", "--save-every", "100"]


def _torchrun(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_match_one_and_resume(tiny_model_dir, tmp_path, monkeypatch):
    import functools

    import readapt.train
    from readapt.methods import HeadSpec

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\n" + csv_rows(17))
    (data / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    monkeypatch.setattr(readapt.train, "HeadSpec", functools.partial(HeadSpec, dropout=0.0))  # as dp_worker.py
    single = tmp_path / "single"
    from readapt.cli import main

    assert main(["train", *_options(tiny_model_dir, data, single)]) == 0

    parallel = tmp_path / "parallel"
    stopped = _torchrun("--term-rank", "1", "--term-after", "4", "train", *_options(tiny_model_dir, data, parallel))
    assert stopped.returncode != 0
    assert "interrupted at step 4; checkpoint written" in stopped.stderr  # rank 0 stopped at rank 1's step
    _, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(parallel))
    assert state["progress"]["global_step"] == 4 and state["progress"]["world_size"] == 2

    with pytest.raises(CheckpointError, match="written by a run of 2 process"):  # one process cannot resume it
        train(TrainArgs(**{**vars(TrainArgs(model="m", output="o")), **_as_kwargs(tiny_model_dir, data, parallel),
                           "resume": True}))

    resumed = _torchrun("train", *_options(tiny_model_dir, data, parallel), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((parallel / "metrics.json").read_text())
    reference = json.loads((single / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["global_batch_size"], reference["world_size"]) == (2, 8, 1)
    assert [h["step"] for h in metrics["history"]] == [h["step"] for h in reference["history"]] == [3, 6]
    for name in ("read_model.safetensors",):
        a, b = load_file(str(single / name)), load_file(str(parallel / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0, msg=key)
    last_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(single))[0]
    last_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(parallel))[0]
    assert any(not torch.equal(last_a[k], torch.zeros_like(last_a[k])) for k in last_a)
    for key in last_a:
        torch.testing.assert_close(last_b[key], last_a[key], atol=ATOL, rtol=0, msg=key)
    assert metrics["validation"] == pytest.approx(reference["validation"])


def _as_kwargs(model, data, out) -> dict:
    return {"model": model, "train_file": str(data / "train.csv"), "validation_file": str(data / "val.csv"),
            "output": str(out), "epochs": 2, "batch_size": 8, "max_length": 16, "rnn_dim": 8, "device": "cpu",
            "lr": 0.01, "save_every": 100}


def test_shards_cover_the_batch_in_order():
    items = list(range(7))
    shards = [World(rank, 3).shard(items) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4, 5], [6]]
    assert World(1, 2).shard([0]) == [] and World(0, 1).shard(items) == items
