"""`readapt ...` under torchrun for tests/test_distributed.py, with test-only changes: no head
dropout (so that one process and two draw no different masks and the weights can be compared);
optionally a signal that reaches one rank only, right after a given optimizer step (SIGTERM: a
polite stop; SIGKILL: a rank that dies, as under the OOM killer); optionally each rank's frozen
passes counted (how many sequences each state cache build computed there), or one rank's disk full
when it writes the state cache:

    torchrun --nproc_per_node 2 tests/dp_worker.py [--term-rank R --term-after N]
        [--kill-rank R --kill-after N] [--count-frozen FOLDER | --full-disk-rank R] train ...
"""

import errno
import functools
import os
import signal
import sys
from pathlib import Path

import readapt.state_cache
import readapt.train
from readapt.cli import main
from readapt.methods import HeadSpec


def no_dropout() -> None:
    readapt.train.HeadSpec = functools.partial(HeadSpec, dropout=0.0)


def signal_after(rank: int, step: int, signum: int) -> None:
    real = readapt.train._step

    def step_fn(*args, **kwargs):
        loss = real(*args, **kwargs)
        if int(os.environ.get("RANK", "0")) == rank and args[5] + 1 == step:
            os.kill(os.getpid(), signum)  # this rank only
        return loss

    readapt.train._step = step_fn


def count_frozen(folder: str) -> None:
    """One line per frozen pass of the state cache, its number of sequences, in FOLDER/rank-<RANK>.txt."""
    real = readapt.state_cache.frozen_pass

    def counted(model, sequences, *args, **kwargs):
        with open(Path(folder) / f"rank-{os.environ.get('RANK', '0')}.txt", "a") as f:
            f.write(f"{len(sequences)}\n")
        return real(model, sequences, *args, **kwargs)

    readapt.state_cache.frozen_pass = counted


def full_disk(rank: int) -> None:
    """Rank ``rank`` cannot write a single state cache shard."""
    def write(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    if int(os.environ.get("RANK", "0")) == rank:
        readapt.state_cache._ShardWriter.write = write


SIGNALS = {"--term-rank": signal.SIGTERM, "--kill-rank": signal.SIGKILL}

if __name__ == "__main__":
    argv = sys.argv[1:]
    while argv[0] in SIGNALS:  # --term-rank R --term-after N, --kill-rank R --kill-after N
        signal_after(int(argv[1]), int(argv[3]), SIGNALS[argv[0]])
        argv = argv[4:]
    if argv[0] == "--count-frozen":
        count_frozen(argv[1])
        argv = argv[2:]
    if argv[0] == "--full-disk-rank":
        full_disk(int(argv[1]))
        argv = argv[2:]
    no_dropout()
    raise SystemExit(main(argv))
