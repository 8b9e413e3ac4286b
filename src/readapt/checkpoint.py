"""Checkpoints that survive SIGKILL at any moment, and load without executing anything.

    DIR/checkpoint/step-000120/trainable.safetensors   what the method trains
    DIR/checkpoint/step-000120/trainer_state.pt        optimizer, scheduler, RNG states, progress
    DIR/checkpoint/latest                              name of the newest complete step folder

A step folder is written under a temporary name and renamed when complete; ``latest`` is then
replaced atomically (temporary file + rename). A kill at any moment leaves ``latest`` pointing
at a complete checkpoint. ``trainer_state.pt`` holds only tensors, numbers, strings and lists,
and is read with ``torch.load(weights_only=True)``: no pickle code runs on load.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

CHECKPOINT_DIR = "checkpoint"
TRAINABLE_NAME = "trainable.safetensors"
STATE_NAME = "trainer_state.pt"


class CheckpointError(ValueError):
    pass


class WriteError(OSError):
    """A write failed (disk full, read-only, ...): one plain sentence naming the path and the fix."""

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return self.args[0]


_WRITE_FAILURES = {
    errno.ENOSPC: "no space left on device while writing {path}: free space or choose another --output",
    errno.EDQUOT: "disk quota exceeded while writing {path}: free space or choose another --output",
    errno.EROFS: "{path} is on a read-only file system: choose another --output",
    errno.EACCES: "permission denied writing {path}: choose another --output",
    errno.EPERM: "permission denied writing {path}: choose another --output",
    errno.EEXIST: "{path} already exists where readapt writes a new file: remove it or choose another --output",
    errno.ELOOP: "{path} runs through a symbolic link loop: fix the link or choose another --output",
    errno.ENOTDIR: "{path} runs through a file where a folder should be: choose another --output",
}
_OS_ERROR_CODE = re.compile(r"os error (\d+)|\[Errno (\d+)\]")


def _error_code(exc: BaseException, path: Path) -> Optional[int]:
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    match = _OS_ERROR_CODE.search(str(exc))  # safetensors: "... (os error 28) at path ..."
    if match:
        return int(match.group(1) or match.group(2))
    # torch's zip writer only says "unexpected pos" / "file write failed": a full disk is the usual cause
    try:
        stats = os.statvfs(path.parent if path.parent.exists() else path.parent.parent)
        if stats.f_bavail * stats.f_frsize < (1 << 20):
            return errno.ENOSPC
    except OSError:
        pass
    return None


@contextlib.contextmanager
def plain_write_errors(path: Path):
    """Writes under ``path`` that fail surface as one plain sentence (WriteError), not as errno text or
    torch's `inline_container ... unexpected pos` assertion."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, RuntimeError, SafetensorError) as exc:
        if isinstance(exc, RuntimeError) and not _looks_like_write_failure(exc):
            raise
        where = getattr(exc, "filename", None) or path
        code = _error_code(exc, Path(where))
        if code in _WRITE_FAILURES:
            raise WriteError(_WRITE_FAILURES[code].format(path=where), code) from None
        reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WriteError(f"cannot write {where} ({reason[:200]}): choose another --output", code) from None


def _looks_like_write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(word in text for word in ("unexpected pos", "file write failed", "PytorchStreamWriter",
                                         "inline_container", "os error", "[Errno"))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with plain_write_errors(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors file written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with plain_write_errors(tmp):
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": "pt", "library": "readapt"})
        os.replace(tmp, path)


def _save_state(state: dict[str, Any], path: Path) -> None:
    """torch.save through a Python file: a failed write raises OSError with its errno (ENOSPC ...)
    instead of the zip writer's bare assertion."""
    with plain_write_errors(path):
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupted") from None


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into the model's trainable parameters; names and shapes must match exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{source} was saved for another method or config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tensor.shape != params[name].shape:
                raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, expected "
                                      f"{tuple(params[name].shape)}; it was saved for another config")
            params[name].copy_(tensor)


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, trainable: dict[str, torch.Tensor], state: dict[str, Any],
                    keep: int = 1) -> Path:
    root = run_dir / CHECKPOINT_DIR
    with plain_write_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    # A second checkpoint at the same step (the last step of an epoch, then the epoch's end) gets
    # a fresh name: the folder `latest` points to is never removed before `latest` moves on.
    name, n = f"step-{step:09d}", 0
    while (root / name).exists():
        n += 1
        name = f"step-{step:09d}-{n}"
    for stale in root.glob(".step-*.tmp"):  # left by a kill in the middle of an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{name}.tmp"
    final = root / name
    with plain_write_errors(tmp):
        tmp.mkdir()
    save_tensors(trainable, tmp / TRAINABLE_NAME)
    _save_state(state, tmp / STATE_NAME)
    with plain_write_errors(final):
        os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / "latest", name + "\n")
    # Older complete checkpoints go only after `latest` points past them.
    older = sorted((p for p in root.glob("step-*") if p.name != name), key=lambda p: _order(p.name))
    for old in older[:max(0, len(older) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


_NAME = re.compile(r"step-(\d{9,})(?:-(\d+))?")


def _order(name: str) -> tuple[int, int]:
    match = _NAME.fullmatch(name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (-1, -1)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    pointer = run_dir / CHECKPOINT_DIR / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_bytes()[:100].decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _NAME.fullmatch(name):  # only a step folder of this run, never a path elsewhere
        return None
    path = run_dir / CHECKPOINT_DIR / name
    return path if path.is_dir() else None


def is_complete(path: Path) -> bool:
    """A step folder with both files (the folder is renamed into place only once they are written)."""
    return all((path / name).is_file() and (path / name).stat().st_size > 0 for name in (TRAINABLE_NAME, STATE_NAME))


def resume_point(run_dir: Path) -> tuple[Optional[Path], Optional[str]]:
    """(checkpoint to resume from, warning or None). A broken or missing ``latest`` pointer falls back
    to the newest complete step folder, with a warning naming it; a broken pointer with no complete
    folder left is a CheckpointError: never a silent restart from step 0. (None, None): no
    checkpoint was ever written (a run killed before its first), so training starts at step 0."""
    latest = latest_checkpoint(run_dir)
    if latest is not None and is_complete(latest):
        return latest, None
    root = run_dir / CHECKPOINT_DIR
    pointer = root / "latest"
    steps = sorted((p for p in root.glob("step-*") if _NAME.fullmatch(p.name) and p.is_dir() and is_complete(p)),
                   key=lambda p: _order(p.name)) if root.is_dir() else []
    if steps:
        return steps[-1], (f"{pointer} is missing or broken; resuming from the newest complete checkpoint, "
                           f"{steps[-1]}")
    if os.path.lexists(pointer) or latest is not None:
        raise CheckpointError(f"{pointer} is broken and no complete checkpoint is left in {root}; nothing to "
                              f"resume from: drop --resume and pass --overwrite to start afresh")
    return None, None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    trainable = load_tensors(path / TRAINABLE_NAME)
    try:
        state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not ours"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path / STATE_NAME} cannot be read safely ({detail}); it is truncated, "
                              f"corrupted or not a readapt checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE_NAME} holds a {type(state).__name__}, not a readapt trainer "
                              f"state; it is corrupted or not a readapt checkpoint")
    return trainable, state


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
