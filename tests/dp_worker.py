"""`readapt ...` under torchrun for tests/test_distributed.py, with test-only changes: no head
dropout (so that one process and two draw no different masks and the weights can be compared);
optionally a signal that reaches one rank only, right after a given optimizer step (SIGTERM: a
polite stop; SIGKILL: a rank that dies, as under the OOM killer):

    torchrun --nproc_per_node 2 tests/dp_worker.py [--term-rank R --term-after N]
        [--kill-rank R --kill-after N] train ...
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


def signal_after(rank: int, step: int, signum: int) -> None:
    real = readapt.train._step

    def step_fn(*args, **kwargs):
        loss = real(*args, **kwargs)
        if int(os.environ.get("RANK", "0")) == rank and args[5] + 1 == step:
            os.kill(os.getpid(), signum)  # this rank only
        return loss

    readapt.train._step = step_fn


SIGNALS = {"--term-rank": signal.SIGTERM, "--kill-rank": signal.SIGKILL}

if __name__ == "__main__":
    argv = sys.argv[1:]
    while argv[0] in SIGNALS:  # --term-rank R --term-after N, --kill-rank R --kill-after N
        signal_after(int(argv[1]), int(argv[3]), SIGNALS[argv[0]])
        argv = argv[4:]
    no_dropout()
    raise SystemExit(main(argv))
