"""Bounded reads of files a user hands us: regular files only, under a size cap, never blocking.

A path from a user can be anything: a FIFO (opening it blocks until a writer appears), /dev/zero
(endless), a symlink loop, a 100 GB file. Every reader of user input goes through here:

    stat the path first       a FIFO or a device is refused by name and never opened
    open it non-blocking      then check the open descriptor again (the path may have changed)
    read at most the cap      a file that grows while it is read stops at the cap

Caps are generous for data and small for configs, whose size readapt itself decides.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

DATA_FILE_MAX_BYTES = 2 * 1024**3        # train/validation/test files and GLUE TSVs
PREDICT_INPUT_MAX_BYTES = 64 * 1024**2   # predict --input-file
CONFIG_MAX_BYTES = 1024**2               # read_config.json: a few numbers and at most 1,024 layers
RUN_CONFIG_MAX_BYTES = 16 * 1024**2      # run_config.json: also lists the task's class names

_KINDS = ((stat.S_ISDIR, "is a folder, not a file"),
          (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
          (stat.S_ISCHR, "is a character device (such as /dev/zero), not a regular file"),
          (stat.S_ISBLK, "is a block device, not a regular file"),
          (stat.S_ISSOCK, "is a socket, not a regular file"))


class InputFileError(ValueError):
    """A user-given file cannot be read: ``problem`` completes the sentence "<path> ..."."""

    def __init__(self, path: str | Path, problem: str, *, missing: bool = False, too_large: bool = False):
        super().__init__(f"{path} {problem}")
        self.path, self.problem = str(path), problem
        self.missing = missing          # nothing at all at that path (callers may say more)
        self.too_large = too_large      # over the cap: the path is right, the file is not


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def os_problem(exc: OSError, path: str | Path | None = None) -> str:
    """What went wrong, as the rest of a sentence that starts with the path."""
    path = exc.filename if path is None else path
    code = exc.errno
    if code == errno.ENOENT and path is not None and os.path.islink(path):
        return f"is a broken symlink (it points to {os.readlink(path)}, which does not exist)"
    phrases = {
        errno.ENOENT: "does not exist",
        errno.ELOOP: "is a symlink loop (a link that leads back to itself)",
        errno.EACCES: "cannot be accessed: permission denied",
        errno.EPERM: "cannot be accessed: operation not permitted",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOTDIR: "does not exist (a part of the path is a file, not a folder)",
        errno.ENAMETOOLONG: "has a name too long for the file system",
        errno.ENOSPC: "could not be written: no space left on device",
        errno.EDQUOT: "could not be written: disk quota exceeded",
        errno.EROFS: "is on a read-only file system",
        errno.EEXIST: "already exists",
        errno.ENOTEMPTY: "is a folder that is not empty",
        errno.EXDEV: "is on another file system (cannot be moved there)",
    }
    return phrases.get(code, f"cannot be used ({exc.strerror or type(exc).__name__})")


def describe_os_error(exc: OSError) -> str:
    """One plain sentence for an OSError, naming its path when it has one."""
    if exc.filename is not None:
        return f"{exc.filename} {os_problem(exc)}"
    plain = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.ENOMEM: "out of memory",
             errno.EMFILE: "too many open files", errno.ENFILE: "too many open files"}
    return plain.get(exc.errno, (str(exc).strip().splitlines() or [type(exc).__name__])[0])


def _check_stat(path, st: os.stat_result, max_bytes: int | None) -> None:
    for test, problem in _KINDS:
        if test(st.st_mode):
            raise InputFileError(path, problem)
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(path, "is not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(path, f"is {st.st_size:,d} bytes, above readapt's limit of "
                                   f"{human_bytes(max_bytes)} for this file", too_large=True)


def check_user_file(path: str | Path, max_bytes: int | None) -> os.stat_result:
    """The file's stat if it is a regular file under ``max_bytes`` (None: no cap); it is not opened."""
    try:
        st = os.stat(path)  # follows symlinks: a loop is ELOOP, a dangling link ENOENT
    except OSError as exc:
        missing = exc.errno == errno.ENOENT and not os.path.islink(path)
        raise InputFileError(path, os_problem(exc, path), missing=missing) from None
    _check_stat(path, st, max_bytes)
    return st


class _Capped(io.RawIOBase):
    """A read-only file descriptor that refuses to deliver more than ``max_bytes``."""

    def __init__(self, fd: int, path, max_bytes: int):
        self._file = io.FileIO(fd, "rb", closefd=True)
        self._path, self._left, self._max = path, max_bytes, max_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._file.readinto(memoryview(buffer)[:self._left + 1])
        self._left -= n
        if self._left < 0:
            raise InputFileError(self._path, f"grew past readapt's limit of {human_bytes(self._max)} "
                                             f"while it was read", too_large=True)
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def open_user_file(path: str | Path, max_bytes: int, *, encoding: str | None = "utf-8",
                   newline: str | None = None):
    """Open a user's file for reading (text with ``encoding``, bytes when it is None), bounded."""
    check_user_file(path, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # non-blocking: a FIFO swapped in after the stat cannot hang us
    except OSError as exc:
        raise InputFileError(path, os_problem(exc, path)) from None
    try:
        _check_stat(path, os.fstat(fd), max_bytes)  # what we opened, not what the path names now
        os.set_blocking(fd, True)
        raw = _Capped(fd, path, max_bytes)
    except BaseException:
        os.close(fd)
        raise
    binary = io.BufferedReader(raw)
    return binary if encoding is None else io.TextIOWrapper(binary, encoding=encoding, newline=newline)


def read_user_bytes(path: str | Path, max_bytes: int) -> bytes:
    with open_user_file(path, max_bytes, encoding=None) as f:
        return f.read()


def read_stdin_bytes(max_bytes: int, stream=None) -> bytes:
    """Standard input up to its end, refused past ``max_bytes`` (what is read stops at the cap)."""
    import sys

    stream = stream if stream is not None else sys.stdin.buffer
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputFileError("standard input", f"holds more than readapt's limit of {human_bytes(max_bytes)} "
                                               f"for this input", too_large=True)
    return data
