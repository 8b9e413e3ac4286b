"""The training loop's own failure modes, through the Python API: non-finite loss and gradients,
out of memory, Ctrl-C at a step boundary, resume rules, argument types, the LR schedule."""

import dataclasses
import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import readapt.train
from readapt import ConfigError, ReadModel
from readapt import checkpoint as ckpt
from readapt.train import (Interrupted, TrainArgs, TrainingError, check_args, is_out_of_memory,
                           linear_schedule_with_warmup, load_run, read_run_config, train)


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr, so that stderr holds exactly what the CLI prints."""


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("train-data")
    words = ["good film", "great acting", "bad film", "awful plot", "lovely story", "dull mess"]

    def write(name, n, offset):
        rows = "".join(f"{words[(i + offset) % 6]} {i},{'pos' if (i + offset) % 2 == 0 else 'neg'}\n"
                       for i in range(n))
        (d / name).write_text("text,label\n" + rows)
        return str(d / name)

    return {"model": tiny_model_dir, "train": write("train.csv", 32, 0), "val": write("val.csv", 8, 1)}


def _args(data, out: Path, **extra) -> TrainArgs:
    """4 steps per epoch, 2 epochs, a checkpoint every step."""
    return TrainArgs(**{"model": data["model"], "output": str(out), "train_file": data["train"],
                        "validation_file": data["val"], "epochs": 2, "batch_size": 8, "max_length": 16,
                        "device": "cpu", "rnn_dim": 8, "save_every": 1, "seed": 3, **extra})


def _nan_at(monkeypatch, bad_call: int):
    """Make the READ model's training loss NaN at its `bad_call`-th training forward."""
    real = ReadModel.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.training and out.loss is not None:
            calls["n"] += 1
            if calls["n"] == bad_call:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ReadModel, "forward", forward)


# -- non-finite loss ---------------------------------------------------------------------------------
def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, 3)
    with pytest.raises(TrainingError) as info:
        train(_args(data, tmp_path / "out"))
    message = str(info.value)
    assert "loss became nan at step 3" in message and "lower --lr" in message
    assert "the last good checkpoint" in message and "step-000000002" in message
    assert not isinstance(info.value, Interrupted)
    trainable, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "out"))
    assert state["progress"]["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in trainable.values())
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_nan_loss_before_any_checkpoint_says_so(data, tmp_path, monkeypatch):
    _nan_at(monkeypatch, 1)
    with pytest.raises(TrainingError, match="loss became nan at step 1.*no checkpoint had been written yet"):
        train(_args(data, tmp_path / "out"))


def test_non_finite_gradient_norm_stops_before_the_update(data, tmp_path, monkeypatch):
    real = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip(params, max_norm, *args, **kwargs):
        calls["n"] += 1
        norm = real(params, max_norm, *args, **kwargs)
        return norm * float("inf") if calls["n"] == 2 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    with pytest.raises(TrainingError, match="gradient norm became inf at step 2"):
        train(_args(data, tmp_path / "out"))
    trainable, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "out"))
    assert all(torch.isfinite(t).all() for t in trainable.values())


# -- out of memory -------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"),
], ids=["cuda", "cpu", "cpu-enforce", "mps"])
def test_out_of_memory_on_the_step_path(data, tmp_path, monkeypatch, error):
    calls = {"n": 0}
    real = ReadModel.forward

    def forward(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 2:
                raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ReadModel, "forward", forward)
    with pytest.raises(TrainingError) as info:
        train(_args(data, tmp_path / "out"))
    assert str(info.value).startswith("out of memory: lower --batch-size or --max-length")
    assert "step-000000001" in str(info.value)  # the checkpoint to go back to


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


# -- Ctrl-C / SIGTERM ------------------------------------------------------------------------------------
def _signal_at_step(monkeypatch, step: int, signum: int):
    real = readapt.train._step

    def step_fn(model, batch, optimizer, scheduler, max_grad_norm, global_step):
        loss = real(model, batch, optimizer, scheduler, max_grad_norm, global_step)
        if global_step + 1 == step:
            os.kill(os.getpid(), signum)  # arrives mid-run; the loop stops at the next step boundary
        return loss

    monkeypatch.setattr(readapt.train, "_step", step_fn)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run of _args() (same process, same thread settings)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    metrics = train(_args(data, out))
    return out, metrics


def _same_result(run: Path, reference) -> None:
    ref_dir, ref_metrics = reference
    a, b = load_file(str(ref_dir / "read_model.safetensors")), load_file(str(run / "read_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last_a = ckpt.load_checkpoint(ckpt.latest_checkpoint(ref_dir))[0]
    last_b = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))[0]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("validation", "test", "best_epoch"):
        assert metrics[key] == ref_metrics[key], key
    untimed = lambda history: [{k: v for k, v in h.items() if k != "train_seconds"} for h in history]  # noqa: E731
    assert untimed(metrics["history"]) == untimed(ref_metrics["history"])
    assert all(h["train_seconds"] > 0 for h in metrics["history"])  # wall clock, so not compared


@pytest.mark.parametrize("signum,step", [(signal.SIGINT, 3), (signal.SIGTERM, 6)], ids=["sigint", "sigterm"])
def test_interrupt_stops_at_a_step_boundary_and_resumes_identically(data, tmp_path, monkeypatch, reference,
                                                                    signum, step):
    out = tmp_path / "out"
    previous = signal.getsignal(signum)
    with monkeypatch.context() as m:
        _signal_at_step(m, step, signum)
        with pytest.raises(Interrupted) as info:
            train(_args(data, out))
    assert signal.getsignal(signum) is previous  # the handler is put back
    assert info.value.exit_code == 130
    assert str(info.value) == (f"interrupted at step {step}; checkpoint written: rerun the same command with "
                               f"--resume to continue")
    _, state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert state["progress"]["global_step"] == step
    metrics = train(_args(data, out, resume=True))
    assert metrics["resumed"] is True
    _same_result(out, reference)


def test_interrupt_through_the_cli_exits_130_with_one_line(data, tmp_path, monkeypatch, capsys):
    from readapt.cli import main

    _signal_at_step(monkeypatch, 2, signal.SIGINT)
    args = _args(data, tmp_path / "out")
    argv = ["train", "--model", args.model, "--output", args.output, "--train-file", args.train_file,
            "--validation-file", args.validation_file, "--epochs", "1", "--batch-size", "8", "--max-length", "16",
            "--device", "cpu", "--rnn-dim", "8", "--save-every", "100"]
    capsys.readouterr()
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["readapt: error: interrupted at step 2; checkpoint written: rerun the same command with "
                   "--resume to continue"]
    assert ckpt.latest_checkpoint(tmp_path / "out") is not None


# -- resume rules ------------------------------------------------------------------------------
def test_resume_after_a_kill_before_the_first_checkpoint_starts_over(data, tmp_path, reference):
    """A SIGKILL between run_config.json and the first checkpoint: --resume trains from step 0."""
    out = tmp_path / "out"
    out.mkdir()
    ckpt.write_json(out / "run_config.json", json.loads((reference[0] / "run_config.json").read_text()))
    train(_args(data, out, resume=True))
    _same_result(out, reference)


def test_resume_refuses_other_arguments_but_not_device_or_save_every(data, tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    (run / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"--resume with different arguments .*epochs 3 vs 2"):
        train(_args(data, run, resume=True, epochs=3))
    with pytest.raises(ValueError, match=r"method 'probe' vs 'read'.*seed 4 vs 3"):
        train(_args(data, run, resume=True, seed=4, method="probe"))
    train(_args(data, run, resume=True, save_every=0, device="cpu"))
    assert (run / "metrics.json").exists()
    with pytest.raises(ValueError, match="already finished"):
        train(_args(data, run, resume=True))


# -- --backbone-dtype ------------------------------------------------------------------------------
def test_backbone_dtype_is_kept_in_the_run_and_eval_loads_the_same_way(data, tiny_bf16_model_dir, tmp_path,
                                                                       capsys):
    from readapt.cli import main

    out = tmp_path / "run"
    metrics = train(_args(data, out, model=tiny_bf16_model_dir, epochs=1, backbone_dtype="bfloat16"))
    assert json.loads((out / "run_config.json").read_text())["args"]["backbone_dtype"] == "bfloat16"
    model, *_ = load_run(out, "cpu")
    assert next(model.base_model.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--split", "validation", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {k: scores[k] for k in metrics["validation"]} == pytest.approx(metrics["validation"])


def test_a_run_saved_before_backbone_dtype_existed_still_resumes_and_loads(data, tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    (run / "metrics.json").unlink()
    saved = json.loads((run / "run_config.json").read_text())
    del saved["args"]["backbone_dtype"]
    (run / "run_config.json").write_text(json.dumps(saved))
    assert read_run_config(run)[0].backbone_dtype == "auto"
    train(_args(data, run, resume=True))
    model, *_ = load_run(run, "cpu")
    assert next(model.base_model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("method, dtype, words", [
    ("read", "fp8", "--backbone-dtype fp8: choose one of auto, float32, bfloat16, float16"),
    ("full", "bfloat16", "--backbone-dtype bfloat16 would train the backbone's own weights in bfloat16"),
    ("lora", "float16", "with --method lora: use auto or float32"),
])
def test_backbone_dtype_is_checked(data, tmp_path, method, dtype, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        check_args(_args(data, tmp_path / "out", method=method, backbone_dtype=dtype))
    for fine in (("read", "float16"), ("probe", "bfloat16"), ("full", "auto"), ("lst", "float32")):
        check_args(_args(data, tmp_path / "out", method=fine[0], backbone_dtype=fine[1]))


# -- argument types (Python API) -----------------------------------------------------------------
@pytest.mark.parametrize("field,value,words", [
    ("epochs", "3", "epochs='3': expected int"),
    ("batch_size", 8.0, "batch_size=8.0: expected int"),
    ("lr", "1e-3", "lr='1e-3': expected"),
    ("resume", "yes", "resume='yes': expected bool"),
    ("layers", [1, "2"], "layers=[1, '2']"),
    ("text_column", "text", "text_column='text'"),
    ("epochs", True, "epochs=True: expected int"),
    ("lr", 10**400, "too large for a float"),
])
def test_train_args_types_are_checked(data, tmp_path, field, value, words):
    args = dataclasses.replace(_args(data, tmp_path / "out"), **{field: value})
    with pytest.raises(ConfigError) as info:
        train(args)
    assert words in str(info.value)
    assert not (tmp_path / "out").exists()


def test_check_args_accepts_int_for_float_fields(data, tmp_path):
    args = _args(data, tmp_path / "out", lr=1, warmup_ratio=0)
    check_args(args)
    assert isinstance(args.lr, float) and isinstance(args.warmup_ratio, float)


# -- run_config.json -------------------------------------------------------------------------------
def test_read_run_config_round_trip(reference):
    args, spec, saved = read_run_config(reference[0])
    assert args.rnn_dim == 8 and spec.label_names == ("neg", "pos") and saved["lr"] == 3e-3
    model, tokenizer, spec2, args2, text_to_text, device = load_run(reference[0], "cpu")
    assert args2 == args and spec2 == spec and text_to_text is False


# -- the LR schedule: transformers' own, without importing transformers.optimization -------------
@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (10, 10), (1, 1), (0, 1)])
def test_linear_schedule_matches_transformers(warmup, total):
    from transformers import get_linear_schedule_with_warmup

    def lrs(make):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=0.1)
        sched = make(opt, warmup, total)
        out = []
        for _ in range(total + 2):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out, sched.state_dict()

    ours, state = lrs(linear_schedule_with_warmup)
    theirs, _ = lrs(get_linear_schedule_with_warmup)
    assert ours == theirs
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state  # plain data: checkpoints load it safely


def test_metrics_count_the_classes_the_model_predicted(data, reference):
    import numpy as np

    from readapt.data import load_task
    from readapt.evaluate import encode_split, predict
    from readapt.train import load_run

    run, metrics = reference
    model, tokenizer, spec, args, text_to_text, device = load_run(run, "cpu")
    examples = load_task(None, train_file=args.train_file, validation_file=args.validation_file).validation
    predictions = predict(model, encode_split(examples, spec, tokenizer, args.max_length, text_to_text, False), spec,
                          tokenizer, 64, device, text_to_text)
    assert metrics["distinct_predictions"] == {"validation": len(np.unique(predictions)), "test": None}
