"""Data parallel training under torchrun: `torchrun --nproc_per_node 2 -m readapt train ...`.

READ trains a few hundred thousand parameters beside a frozen backbone, so the backbone is simply
replicated (never wrapped: it has no gradients to share) and only the trainable parameters'
gradients cross processes, one all-reduce per optimizer step:

    every rank      the same seeded model and the same epoch order; each global batch of
                    --batch-size examples is cut into one contiguous shard per rank
    each step       loss and gradients of the shard, weighted by its size, summed over the ranks:
                    the same mean over the global batch one process computes (up to summation
                    order), so clipping, the optimizer step and the schedule match too
    rank 0 only     writes the run folder: checkpoints, best weights, metrics.json, trackers

Every rank reads the run folder it resumes from, and shares the state cache's folder (one machine,
or a shared file system): each rank computes its part of a missing cache entry (state_cache.py). Any
error before the loop (a refused --output, bad data) stops every rank; Ctrl-C/SIGTERM on any rank
stops all of them at the same step boundary, where rank 0 writes the checkpoint. A rank that dies
(SIGKILL, the OOM killer) breaks the next collective on the others: they stop with one line
(RankLost), writing nothing more. Outside torchrun (WORLD_SIZE unset) nothing here communicates.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import threading
from typing import Any, Iterator, Optional, Sequence

import torch


class RankFailed(RuntimeError):
    """Another rank failed, and every rank knows it; its own message is on its stderr."""

    exit_code = 1


class RankLost(RankFailed):
    """A collective broke: another rank is gone (killed, out of memory, crashed), and the process
    group with it. Nothing can be exchanged any more, so nothing is announced either."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason  # what the backend saw, e.g. "Connection reset by peer"


@contextlib.contextmanager
def _collective() -> Iterator[None]:
    """Our collectives exchange tensors every rank made alike, so an error in one means the group
    broke: a peer died. gloo raises a plain RuntimeError (torch's DistBackendError is one too)."""
    try:
        yield
    except RuntimeError as exc:
        _outlast_launcher()
        reason = _first_sentence(exc)
        raise RankLost(f"another rank stopped unexpectedly ({reason})", reason) from exc


def _outlast_launcher() -> None:
    """torchrun sends SIGTERM to the other ranks a moment after one dies. This rank is stopping
    already, and must first release the run folder and say why: it ignores SIGTERM from now on
    (torchrun sends SIGKILL 30 s later, should it hang)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _first_sentence(exc: RuntimeError) -> str:
    """gloo's reason without its source location: "[.../pair.cc:537] Read error [127.0.0.1]:17094:
    Connection reset by peer. This is typically ..." -> "Read error [127.0.0.1]:17094: Connection reset by peer"."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^\[[^\]]*:\d+\] ", "", lines[0]) if lines else type(exc).__name__
    return text.split(". ")[0]


class World:
    """This process's place among the data-parallel ranks (size 1: a plain single-process run)."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0):
        self.rank, self.size, self.local_rank = rank, size, local_rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """A bare `cuda` means this rank's own GPU (LOCAL_RANK)."""
        if device.type == "cuda" and device.index is None and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, items: Sequence) -> list:
        """This rank's contiguous part of ``items``: of a global batch, of the sequences of a state
        cache entry being built (possibly empty: the last, short batch)."""
        per_rank = math.ceil(len(items) / self.size)
        return list(items[self.rank * per_rank:(self.rank + 1) * per_rank])

    # -- collectives (no-ops in a single process) ------------------------------------------------
    def weighted_mean(self, loss: torch.Tensor, count: int, total: int) -> torch.Tensor:
        """The global batch's mean loss from each rank's shard mean (detached; for checks and logs)."""
        if self.size == 1:
            return loss.detach()
        value = (loss.detach().float().cpu() * count / total).reshape(1)  # gloo: CPU tensors
        with _collective():
            torch.distributed.all_reduce(value)
        return value[0]

    def sync_gradients(self, params: list[torch.nn.Parameter], count: int, total: int) -> None:
        """Each parameter's gradient becomes the global batch's: sum over ranks of (shard share x
        shard gradient). One flat all-reduce: READ's trainable parameters are small."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads]).cpu() * (count / total)
        with _collective():
            torch.distributed.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
            offset += n

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if self.size == 1:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        with _collective():
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (anything picklable: a folder name, a verdict) on every rank."""
        if self.size == 1:
            return value
        box = [value]
        with _collective():
            torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        with _collective():
            torch.distributed.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.size > 1:
            with _collective():
                torch.distributed.barrier()

    @contextlib.contextmanager
    def all_or_none(self, elsewhere: Optional[Exception] = None) -> Iterator[None]:
        """Either every rank gets through the block or every rank raises (the failing one its own
        error, the others ``elsewhere``, by default RankFailed): no rank is left waiting in a
        collective for a dead one. A RankFailed from inside the block is already every rank's
        verdict (an agreement nested in this one, or a broken group): it is not announced again."""
        try:
            yield
        except RankFailed:
            raise
        except BaseException:
            self.any(True)
            raise
        if self.any(False):
            raise elsewhere or RankFailed(f"rank {self.rank}: another rank failed before training began "
                                          f"(its error is above)")


SINGLE = World()


class Shard:
    """One rank's part of a global batch in `train._step`: what its loss and gradients weigh."""

    def __init__(self, world: World, params: list[torch.nn.Parameter], count: int, total: int):
        self.world, self.params, self.count, self.total = world, params, count, total

    def mean_loss(self, loss: Optional[torch.Tensor]) -> torch.Tensor:
        """The global batch's mean loss (an empty shard adds nothing)."""
        return self.world.weighted_mean(loss if loss is not None else torch.zeros(()), self.count, self.total)

    def gradients(self) -> None:
        self.world.sync_gradients(self.params, self.count, self.total)


def init_world() -> World:
    """Join the torchrun group when launched by it (WORLD_SIZE > 1); else the single-process world.
    gloo carries the all-reduces (CPU tensors): the gradients are small, and the same code runs with
    or without GPUs."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")))


def close_world(world: World, together: bool = False) -> None:
    """Leave the torchrun group. ``together`` (this rank finished without an error): wait for every
    rank first, so that all tear the group down at once. The other ranks finish before rank 0, which
    still scores the run and writes metrics.json; a rank that left alone while a peer still held its
    connections was seen to abort in gloo's teardown now and then."""
    if world.size > 1 and torch.distributed.is_initialized():
        if together:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
