"""The run folder's lifecycle: which folders may become runs, one writer at a time, what --overwrite
may delete, and what --resume must find unchanged.

    runs/rt/.readapt-run.json   the marker: this folder is a readapt run; lists the names readapt owns
    runs/rt/.readapt-lock       flock()ed by the one process writing the run; holds its pid
    runs/rt/fingerprints.json   size + sha256 of the data and model files the run read (for --resume)
    runs/rt/run_config.json, metrics.json, read_config.json, read_model.safetensors,
            trainable.safetensors, checkpoint/            (see train.py and checkpoint.py)
    runs/rt/tensorboard/        event files of --report-to tensorboard (reporting.py)

* A folder is a run if it holds the marker, or, for runs made before the marker existed, if every
  entry is a name readapt writes and run_config.json is a valid readapt run config.
* --overwrite deletes only names readapt writes (file by file; folders only once empty, never
  shutil.rmtree), and refuses a folder holding anything else, naming it. A forged marker cannot
  widen that: only names in OWNED (and the checkpoint layout) are ever deleted. It also refuses
  `/`, the home folder, the current directory and its ancestors.
* The lock is taken before the folder is inspected, so a second `readapt train` on the same
  folder fails at once and can never clean up the first one's files in flight. flock is released
  by the kernel when its holder dies: a stale lock blocks nothing.
* A run that never got past its first step (marker and run_config.json, no checkpoint, no result)
  may be restarted by the same command: nothing would be lost.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

from readapt import checkpoint as ckpt
from readapt.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from readapt.reporting import TENSORBOARD_DIR

MARKER = ".readapt-run.json"
LOCK = ".readapt-lock"
FINGERPRINTS = "fingerprints.json"
RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"

# Every name readapt writes at the top of a run folder (.tmp: an atomic write cut short by a kill).
_FILES = (MARKER, FINGERPRINTS, RUN_CONFIG, METRICS, CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, ckpt.TRAINABLE_NAME)
OWNED = frozenset((LOCK, ckpt.CHECKPOINT_DIR, TENSORBOARD_DIR, *_FILES, *(name + ".tmp" for name in _FILES)))
RESULTS = (METRICS, WEIGHTS_NAME, ckpt.TRAINABLE_NAME)  # a run that has produced anything at all

# Inside tensorboard/ (--report-to tensorboard): SummaryWriter's event files, nothing else.
_EVENT_FILE = re.compile(r"events\.out\.tfevents\..+")

# Inside checkpoint/: the pointer and step folders (complete, or .tmp while being written).
_CHECKPOINT_FILES = re.compile(r"latest(\.tmp)?")
_STEP_DIR = re.compile(r"\.?step-\d{9,}(-\d+)?(\.tmp)?")
_STEP_FILES = frozenset((ckpt.TRAINABLE_NAME, ckpt.TRAINABLE_NAME + ".tmp", ckpt.STATE_NAME))

# Options that may change between a run and its --resume: they do not change what is trained
# (a run folder may also be moved or renamed between the two).
# The state cache's options only say where the frozen pass's states come from; report_to only where
# the losses are logged.
RESUMABLE_CHANGES = ("output", "resume", "overwrite", "device", "save_every", "allow_changed_data",
                     "cache", "cache_dir", "cache_max_gb", "cache_keep_gb", "cache_dtype", "cache_states",
                     "report_to", "device_map", "max_memory", "offload_folder")


class RunBusy(ValueError):
    """Another process holds the run folder's lock."""


def warn(message: str) -> None:
    print(f"readapt: warning: {message}", file=sys.stderr, flush=True)


def listing(names: list[str], shown: int = 3) -> str:
    """'a, b, c and 4 more': a bounded list for a one-line message."""
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


# -- what is in a folder -----------------------------------------------------------------------------
def foreign_entries(path: Path) -> list[str]:
    """Entries under ``path`` that readapt did not write (relative names, sorted). Symlinks are
    always foreign: readapt makes none, and deleting through one would reach outside the run."""
    foreign = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name == ckpt.CHECKPOINT_DIR and entry.is_dir(follow_symlinks=False):
            foreign += [f"{ckpt.CHECKPOINT_DIR}/{name}" for name in _foreign_in_checkpoint(Path(entry.path))]
        elif entry.name == TENSORBOARD_DIR and entry.is_dir(follow_symlinks=False):
            foreign += [f"{TENSORBOARD_DIR}/{inner.name}" for inner in sorted(os.scandir(entry.path), key=lambda e: e.name)
                        if not (_EVENT_FILE.fullmatch(inner.name) and inner.is_file(follow_symlinks=False))]
        elif entry.name not in OWNED or not entry.is_file(follow_symlinks=False):
            foreign.append(entry.name)
    return foreign


def _foreign_in_checkpoint(root: Path) -> list[str]:
    foreign = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif _CHECKPOINT_FILES.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            continue
        elif _STEP_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            foreign += [f"{entry.name}/{inner.name}" for inner in sorted(os.scandir(entry.path), key=lambda e: e.name)
                        if inner.name not in _STEP_FILES or not inner.is_file(follow_symlinks=False)]
        else:
            foreign.append(entry.name)
    return foreign


def is_run(path: Path) -> bool:
    """The marker, or a run made before markers existed: only readapt's names and a valid run config."""
    if (path / MARKER).is_file():
        return True
    if foreign_entries(path) or not (path / RUN_CONFIG).is_file():
        return False
    from readapt.train import read_run_config  # train.py imports this module; the cycle stays local

    try:
        read_run_config(path)
    except ValueError:
        return False
    return True


def _is_empty(path: Path) -> bool:
    """Empty, or holding only a lock file (a process killed before it wrote anything)."""
    return all(entry.name == LOCK for entry in os.scandir(path))


def _same_args(path: Path, args) -> bool:
    from readapt.train import read_run_config

    try:
        saved, _, _ = read_run_config(path)
    except ValueError:
        return False
    given = dataclasses.asdict(args)
    return all(given[name] == value for name, value in dataclasses.asdict(saved).items()
               if name not in RESUMABLE_CHANGES)


def never_started(path: Path, args) -> bool:
    """A run that failed or was killed before its first checkpoint, started with these arguments:
    restarting it loses nothing, so the identical command may reuse the folder."""
    if not is_run(path) or foreign_entries(path) or any((path / name).exists() for name in RESULTS):
        return False
    root = path / ckpt.CHECKPOINT_DIR
    if root.is_dir() and any(_STEP_DIR.fullmatch(p.name) and not p.name.endswith(".tmp") for p in root.iterdir()):
        return False
    return not (path / RUN_CONFIG).exists() or _same_args(path, args)


# -- refusals before anything is touched ---------------------------------------------------------------
def _danger(path: Path) -> Optional[str]:
    """Why --overwrite must never clear ``path``, if it is a folder no run lives in."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "the file system root"
    if resolved == Path.home().resolve():
        return "your home folder"
    if resolved == cwd:
        return "the current directory"
    if resolved in cwd.parents:
        return "a folder that holds the current directory"
    return None


def check_output_path(path: Path, args) -> None:
    """Refusals that need no lock: a file, a dangerous --overwrite target, a folder that is not a run
    (no lock file is ever written into a user's folder)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output {path} is a file, not a folder; choose another --output")
    if args.overwrite and not args.resume and (why := _danger(path)):
        raise ValueError(f"--overwrite refuses --output {path}: it is {why}; give the run its own folder "
                         f"(e.g. runs/my-run)")
    if args.resume and not path.is_dir():
        raise ValueError(f"--resume: {path} holds no checkpoint to resume from; drop --resume to start afresh")
    if path.is_dir() and not _is_empty(path) and not is_run(path):
        foreign = foreign_entries(path)
        what = f" ({listing(foreign)})" if foreign else ""
        raise ValueError(f"{path} holds files that are not a readapt run{what}; readapt writes only into "
                         f"new folders and its own runs (--overwrite only replaces runs): choose another --output")


def check_output_dir(path: Path, args) -> None:
    """Under the lock: may this process write its run into ``path``?"""
    if args.resume:
        if (path / METRICS).is_file():
            raise ValueError(f"--resume: the run in {path} has already finished ({METRICS} is there); "
                             f"score it with `readapt eval --run {path}`, or pass --overwrite instead "
                             f"of --resume to train it again")
        # A run killed before its first checkpoint restarts from step 0 (run_config.json is there).
        point, _ = ckpt.resume_point(path)  # a broken pointer with nothing to fall back on: refused here
        if point is None and not (path / RUN_CONFIG).is_file():
            raise ValueError(f"--resume: {path} holds no checkpoint to resume from; drop --resume to start afresh")
        return
    if _is_empty(path):
        return
    if args.overwrite:
        foreign = foreign_entries(path)
        if foreign:
            raise ValueError(f"--overwrite: {path} holds files readapt did not write ({listing(foreign)}); "
                             f"--overwrite deletes only readapt's own files, so move those out first or "
                             f"choose another --output")
        return
    if never_started(path, args):
        return
    raise ValueError(f"{path} already holds a run (or other files); choose another --output, "
                     f"pass --resume to continue it or --overwrite to replace it")


def check_resume_args(path: Path, args) -> None:
    """--resume continues the run in ``path`` only with the arguments it was started with."""
    from readapt.train import read_run_config

    saved, _, _ = read_run_config(path)
    given = dataclasses.asdict(args)
    changed = [f"{name} {given[name]!r} vs {value!r}" for name, value in dataclasses.asdict(saved).items()
               if name not in RESUMABLE_CHANGES and given[name] != value]
    if changed:
        raise ValueError(f"--resume with different arguments than the run in {path} (given vs saved: "
                         f"{'; '.join(changed)}); repeat the original arguments, or drop --resume and "
                         f"choose another --output (or --overwrite)")


def check_finished(run_dir: Path, allow_unfinished: bool) -> None:
    """eval: an unfinished run's weights are only the best epoch so far; say so, or refuse."""
    if not (run_dir / RUN_CONFIG).is_file() or (run_dir / METRICS).is_file():
        return  # not a run (load_run says so) or finished
    from readapt.train import read_run_config

    read_run_config(run_dir)  # a damaged run config is the first thing to say
    if not allow_unfinished:
        raise ValueError(f"{run_dir} is an unfinished run (no {METRICS}): its weights are the best epoch so far; "
                         f"finish it with `readapt train ... --resume`, or pass --allow-unfinished to score it anyway")
    warn(f"{run_dir} is an unfinished run (no {METRICS}): scoring the best epoch so far")


# -- one writer per folder -----------------------------------------------------------------------------
class RunLock:
    """An exclusive flock on ``folder/.readapt-lock``, which holds the holder's pid (for the message).
    The kernel drops the lock when its process dies: no stale lock ever blocks."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        for _ in range(5):
            try:  # O_NOFOLLOW: a planted symlink must not make us truncate the file it points to
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise ValueError(f"cannot lock {self.path} ({exc.strerror}); choose another --output") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunBusy(f"{self.path.parent} is in use by another readapt process (pid {holder}); wait "
                              f"for it to finish, or choose another --output") from None
            # A holder that gave up on a fresh folder unlinks its lock file: ours must still be the one there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        raise RunBusy(f"{self.path.parent} keeps changing under another readapt process; choose another --output")

    def release(self, unlink: bool = False) -> None:
        if self.fd is None:
            return
        if unlink:  # while still held: whoever opens it next sees another file and retries
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Run:
    """A run folder held by this process: ``with open_run(args) as run:``, then ``run.begin(...)``
    once everything is valid. A folder this process made is removed again if the run never began."""

    def __init__(self, path: Path, lock: RunLock, made: Optional[Path]):
        self.path, self.lock, self.made, self.begun = path, lock, made, False
        self.lock_is_new = not os.path.lexists(lock.path)

    def begin(self, args, run_config: dict, fingerprints: dict) -> None:
        """Everything is valid: clear what an earlier run left (--overwrite, or a run that never
        started), then write the marker, the fingerprints and run_config.json (last: it says "started")."""
        if not args.resume:
            remove_owned(self.path)
        ckpt.write_json(self.path / MARKER, {"readapt_run": 1, "owns": sorted(OWNED),
                                             "note": "readapt deletes only these names on --overwrite"})
        if not args.resume or not (self.path / FINGERPRINTS).is_file() or args.allow_changed_data:
            ckpt.write_json(self.path / FINGERPRINTS, fingerprints)
        ckpt.write_json(self.path / RUN_CONFIG, run_config)
        self.begun = True

    def close(self) -> None:
        """Release the lock; a run that never began leaves no trace: its new lock file and the
        folders this process made go again."""
        self.lock.release(unlink=not self.begun and self.lock_is_new)
        if self.begun or self.made is None:
            return
        folder = self.path
        while True:  # up to the first folder this process made, each only if empty
            try:
                folder.rmdir()
            except OSError:
                break
            if folder == self.made:
                break
            folder = folder.parent


class Follower:
    """The run folder as a data-parallel rank other than 0 sees it: rank 0 holds and writes it."""

    def __init__(self, path: Path):
        self.path = path

    def begin(self, args, run_config: dict, fingerprints: dict) -> None:
        pass

    def close(self) -> None:
        pass


class open_run:
    """Context manager: checks ``args.output``, makes and locks it, checks it again under the lock."""

    def __init__(self, args):
        self.args = args
        self.run: Optional[Run] = None

    def __enter__(self) -> Run:
        path = Path(self.args.output)
        check_output_path(path, self.args)
        made = _first_missing(path)
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path)
        run = Run(path, lock, made)
        try:
            lock.acquire()
            check_output_dir(path, self.args)
        except BaseException:
            run.close()
            raise
        self.run = run
        return run

    def __exit__(self, *exc) -> None:
        if self.run is not None:
            self.run.close()


def _first_missing(path: Path) -> Optional[Path]:
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def remove_owned(path: Path) -> None:
    """Delete what readapt wrote in ``path`` (not the lock: this process holds it). Only names in
    OWNED and the checkpoint layout, file by file; a folder goes only once empty."""
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name == LOCK or entry.name not in OWNED or entry.is_symlink():
            continue
        if entry.name == ckpt.CHECKPOINT_DIR and entry.is_dir(follow_symlinks=False):
            _remove_checkpoints(Path(entry.path))
        elif entry.name == TENSORBOARD_DIR and entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                if _EVENT_FILE.fullmatch(inner.name) and inner.is_file(follow_symlinks=False):
                    os.unlink(inner.path)
            os.rmdir(entry.path)  # fails (OSError) if anything else appeared: then nothing more goes
        elif entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def _remove_checkpoints(root: Path) -> None:
    for entry in os.scandir(root):
        if entry.is_symlink():
            continue
        if _CHECKPOINT_FILES.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
        elif _STEP_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                if inner.name in _STEP_FILES and inner.is_file(follow_symlinks=False):
                    os.unlink(inner.path)
            os.rmdir(entry.path)  # fails (OSError) if anything else appeared: then nothing more goes
    os.rmdir(root)


# -- fingerprints: did the data or the model change before --resume? ------------------------------------
_WHOLE_FILE_LIMIT = 64 << 20  # larger files (weights): size + sha256 of the first and last MiB
_SAMPLE = 1 << 20
_FINGERPRINTS_LIMIT = 4 << 20
_MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".pt", ".pth", ".msgpack", ".h5")


def file_fingerprint(path: Path) -> dict[str, Any]:
    """size + sha256; above 64 MiB the hash covers the first and last MiB only (hashing a multi-GB
    weight file at every start would cost minutes; a retrained or replaced file changes both ends)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(_SAMPLE), b""):
                digest.update(block)
        else:
            digest.update(f.read(_SAMPLE))
            f.seek(size - _SAMPLE)
            digest.update(f.read(_SAMPLE))
    return {"size": size, "sha256": digest.hexdigest(), "sampled": size > _WHOLE_FILE_LIMIT}


def _examples_fingerprint(examples) -> dict[str, Any]:
    digest = hashlib.sha256()
    for example in examples or []:
        digest.update(json.dumps([list(example.texts), example.label]).encode() + b"\n")
    return {"examples": len(examples or []), "sha256": digest.hexdigest()}


def _data_files(args) -> list[tuple[str, Path]]:
    files = [(flag, Path(value)) for flag, value in (("--train-file", args.train_file),
                                                     ("--validation-file", args.validation_file),
                                                     ("--test-file", args.test_file)) if value]
    if args.data_dir and args.task and args.task.startswith("glue/"):
        from readapt.data.builtin import GLUE_TASKS

        task = GLUE_TASKS.get(args.task.split("/", 1)[1])
        if task is not None:
            folder = Path(args.data_dir) / task.folder
            files += [("--data-dir", folder / "train.tsv"), ("--data-dir", folder / task.dev_file)]
    return [(flag, path) for flag, path in files if path.is_file()]


def model_files(model: str) -> list[Path]:
    folder = Path(model)
    if not folder.is_dir():  # a Hub id: no local files to fingerprint (the examples still are)
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _MODEL_SUFFIXES
                  and not p.name.startswith("."))[:200]


def fingerprints(args, data) -> dict[str, Any]:
    """What --resume compares: the files read (data, model) and the loaded examples of every split
    (which also covers data from a package or the Hub)."""
    files = {str(path): {"flag": flag, **file_fingerprint(path)} for flag, path in _data_files(args)}
    files.update({str(path): {"flag": "--model", **file_fingerprint(path)} for path in model_files(args.model)})
    splits = {name: _examples_fingerprint(getattr(data, name)) for name in ("train", "validation", "test")}
    return {"files": files, "splits": splits}


def _changes(saved: dict, current: dict) -> list[str]:
    changes = []
    old_files, new_files = saved["files"], current["files"]
    for path in sorted(set(old_files) | set(new_files)):
        old, new = old_files.get(path), new_files.get(path)
        flag = (new or old)["flag"]
        what = "model file" if flag == "--model" else f"{flag} file"
        if old is None:
            changes.append(f"the {what} {path} is new")
        elif new is None:
            changes.append(f"the {what} {path} is gone")
        elif old["size"] != new["size"]:
            changes.append(f"the {what} {path} changed ({old['size']} -> {new['size']} bytes)")
        elif old["sha256"] != new["sha256"]:
            changes.append(f"the {what} {path} changed (same size, other content)")
    if not changes:  # files explain a change in the examples; otherwise name the split
        for name, new in current["splits"].items():
            old = saved["splits"].get(name)
            if old != new:
                counts = f" ({old['examples']} -> {new['examples']} examples)" if old else ""
                changes.append(f"the {name} examples changed{counts}")
    return changes


def check_fingerprints(path: Path, current: dict, allow_changed: bool) -> None:
    """--resume: refuse data or model files that changed since the run started (one line naming the
    first), unless --allow-changed-data, which warns instead."""
    source = path / FINGERPRINTS
    if not source.is_file():
        warn(f"{path} has no {FINGERPRINTS} (made by an older readapt): changes to the data go unnoticed")
        return
    try:
        with open(source, "rb") as f:
            saved = json.loads(f.read(_FINGERPRINTS_LIMIT))  # bounded: a huge file is damaged, not read whole
        changes = _changes(saved, current)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        changes = [f"{source} is damaged, so the data cannot be checked"]
    if not changes:
        return
    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
    if not allow_changed:
        raise ValueError(f"--resume: {changes[0]}{more} since the run started; resuming would train on other "
                         f"data: restore it, or pass --allow-changed-data to resume anyway")
    warn(f"--allow-changed-data: {changes[0]}{more} since the run started; resuming on the new data")
