"""`readapt ...` under torchrun for tests/test_distributed.py, with two test-only changes: no head
dropout (so that one process and two draw no different masks and the weights can be compared), and
optionally a SIGTERM that reaches one rank only after a given step:

    torchrun --nproc_per_node 2 tests/dp_worker.py [--term-rank R --term-after N] train ...
"""

import functools
import os
import signal
import sys

import readapt.train
from readapt.cli import main
from readapt.methods import HeadSpec


def no_dropout() -> None:
    readapt.train.HeadSpec = functools.partial(HeadSpec, dropout=0.0)


def term_after(rank: int, step: int) -> None:
    real = readapt.train._step

    def step_fn(*args, **kwargs):
        loss = real(*args, **kwargs)
        if int(os.environ.get("RANK", "0")) == rank and args[5] + 1 == step:
            os.kill(os.getpid(), signal.SIGTERM)  # this rank only: every rank must still stop at this step
        return loss

    readapt.train._step = step_fn


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[0] == "--term-rank":
        term_after(int(argv[1]), int(argv[3]))
        argv = argv[4:]
    no_dropout()
    raise SystemExit(main(argv))
