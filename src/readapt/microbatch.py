"""One training step's backward pass, for READ in parts of the batch: bounded memory, no recompute.

READ's side network keeps activations for every token it runs on, so a whole batch's worth can be
several times the frozen pass's own memory. Checkpointing bounds that (SideNetwork.chunk_tokens)
but runs the side network forward twice. Here the batch is split by examples instead:

    frozen pass (no grad, the whole batch, once) -> states of B examples
    part 1: examples 0..i    -> side network -> head -> loss_1 * w_1 -> backward   (freed)
    part 2: examples i..j    -> side network -> head -> loss_2 * w_2 -> backward   (freed)
    ...                                                 gradients add up over the parts

Each example's loss reads only that example's states, and the batch's loss is a mean over its
examples (an LM task's: over its target tokens), so with w_k = part k's share of those terms the
summed gradients are the whole batch's (up to float rounding) and each part's activations are
freed before the next part runs. The side network runs once per token, as unchunked, at about one
part's memory; parts keep the batch's order, so even the head's dropout draws the same masks.
Every other method, READ with chunking off, and READ on a GPU (see :func:`parts`) run the batch
as one part.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import torch

from readapt.backbones import BackboneStates

SPLITS = ("auto", "always")



def backward(model: torch.nn.Module, batch: dict, split: str = "auto") -> torch.Tensor:
    """Gradients of the batch's mean loss, accumulated in ``.grad``; returns that loss, detached.
    ``split``: where READ's batch goes in parts (see :func:`parts`)."""
    loss = None
    for part, weight in parts(model, batch, split):
        part_loss = model(**part).loss * weight
        part_loss.backward()
        loss = part_loss.detach() if loss is None else loss + part_loss.detach()
    return loss


def parts(model: torch.nn.Module, batch: dict, split: str = "auto") -> Iterator[tuple[dict, float]]:
    """(part of ``batch``, its weight in the batch's mean loss): READ with a side chunk size
    (``model.side_chunk_tokens``) splits the batch into runs of consecutive examples whose side
    network runs on at most that many tokens (an example above it is a part of its own, where the
    side network checkpoints its chunks); anything else is one part of weight 1.

    ``split="auto"`` splits batches on the CPU only. On a GPU the side network's small kernels are
    launch-bound: parts multiply the launches and cost more than the checkpoint's recompute (README,
    "GPU cost"), so there the batch stays whole and the side network checkpoints its chunks.
    ``"always"`` splits on any device (for measuring that)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    tokens = getattr(model, "side_chunk_tokens", None)
    if tokens is None or "labels" not in batch or (split == "auto" and batch["labels"].device.type != "cpu"):
        yield batch, 1.0
        return
    states = batch.get("states")
    if states is None:  # the frozen pass runs once, for the whole batch
        states = model.backbone_states(**{k: v for k, v in batch.items() if k != "segment_ids"})
    states = model.states_read(states)  # the layers nothing reads are freed, never copied into parts
    # beside the states a part carries its labels (one per example) and segment ids (one per row)
    rest = {k: batch[k] for k in ("labels", "segment_ids") if k in batch}
    labels = batch["labels"]
    examples = labels.shape[0]
    per_example = states.attention_mask.shape[0] // examples  # 2: pairs encoded separately (rows i, B + i)
    side = model.side_tokens(states, labels).view(per_example, examples).sum(0)
    if int(side.sum()) <= tokens:
        yield {"states": states, **rest}, 1.0
        return
    terms = loss_terms(labels, model.config.task_type)
    total = terms.sum()
    if total == 0:  # nothing to learn from: one part, whose loss says so as before
        yield {"states": states, **rest}, 1.0
        return
    for start, stop in _runs(side.tolist(), tokens):
        share = terms[start:stop].sum()
        if share == 0:
            continue  # an LM part without target tokens adds nothing (and its mean would be NaN)
        rows = _rows(start, stop, examples, per_example, labels.device)
        part = {"states": _select(states, rows), "labels": labels[start:stop]}
        if "segment_ids" in rest:
            part["segment_ids"] = rest["segment_ids"][rows]
        yield part, float(share / total)


def loss_terms(labels: torch.Tensor, task_type: str) -> torch.Tensor:
    """(B,) what each example adds to the batch's mean loss: 1, or an LM task's target tokens."""
    if task_type == "CAUSAL_LM":
        return (labels[:, 1:] != -100).sum(1)  # position t predicts token t + 1
    if task_type == "SEQ_2_SEQ_LM":
        return (labels != -100).sum(1)
    return torch.ones(labels.shape[0], dtype=torch.long, device=labels.device)


def _runs(sizes: list[int], budget: int) -> Iterator[tuple[int, int]]:
    """Consecutive [start, stop) runs of ``sizes`` each summing to at most ``budget`` (or one item)."""
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if i > start and used + size > budget:
            yield start, i
            start, used = i, 0
        used += size
    yield start, len(sizes)


def _rows(start: int, stop: int, examples: int, per_example: int, device) -> slice | torch.Tensor:
    """The batch rows of examples start..stop-1: a slice (a view), or for separate pairs both halves."""
    if per_example == 1:
        return slice(start, stop)
    return torch.cat([torch.arange(start, stop, device=device) + k * examples for k in range(per_example)])


def _select(states: BackboneStates, rows: slice | torch.Tensor) -> BackboneStates:
    def take(tensors: Optional[tuple]) -> Optional[tuple]:
        return None if tensors is None else tuple(None if t is None else t[rows] for t in tensors)

    return dataclasses.replace(
        states, hidden_states=take(states.hidden_states), attention_mask=states.attention_mask[rows],
        encoder_hidden_states=take(states.encoder_hidden_states),
        encoder_attention_mask=None if states.encoder_attention_mask is None else states.encoder_attention_mask[rows],
        cross_attentions=take(states.cross_attentions))
