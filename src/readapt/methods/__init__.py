"""Fine-tuning methods: READ and the peers it is measured against, one small module each.

Every method has the same interface, so ``readapt train --method NAME`` and the benchmark treat
them alike:

    model = get_method(name).build(backbone, head, options)
    out = model(input_ids=..., attention_mask=..., labels=...)   # out.loss, out.logits

``backbone`` is a loaded Hugging Face model (frozen or not is the method's business), ``head`` a
:class:`HeadSpec`, ``options`` the method's own knobs (e.g. ``rnn_dim`` for READ, ``lora_r``).
The parameters of the returned module with ``requires_grad=True`` are exactly what the method
trains; ``trainable_state_dict(model)`` is what a run saves.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    """The task head every method ends in (see heads.ClassificationHead)."""

    num_labels: int          # 1 = regression
    pooling: str = "mean"    # cls | mean | mean_max | attention | last | pair
    dropout: float = 0.1


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    default_lr: float
    build: Callable[[nn.Module, HeadSpec, dict[str, Any]], nn.Module]
    # True where gradients flow through the backbone's layers (full, LoRA, ...). READ, LST and
    # the linear probe never differentiate the backbone.
    backbone_backprop: bool = True
    # How two-text tasks are encoded when --pair-encoding is not given: joint ([CLS] a [SEP] b
    # [SEP]) or separate (each text on its own, compared by pair pooling). Chosen per method on
    # validation, like the learning rate (README, "Sentence pairs").
    pair_encoding: str = "joint"
    # Whether the method has a language-model form (head None: the LM's own head and token loss).
    lm_tasks: bool = True
    # Whether it trains READ's side network, so READ's options (--rnn-type, --joiner, ...) apply.
    side_network: bool = False


# name -> module that defines METHOD; imported lazily so `readapt --help` stays fast.
_REGISTRY = {
    "read": "readapt.methods.read",
    "read_top": "readapt.methods.read_top",
    "full": "readapt.methods.full",
    "probe": "readapt.methods.probe",
    "bitfit": "readapt.methods.bitfit",
    "lora": "readapt.methods.lora",
    "prompt": "readapt.methods.prompt",
    "adapter": "readapt.methods.adapter",
    "lst": "readapt.methods.lst",
}


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(available_methods())}")
    return importlib.import_module(_REGISTRY[name]).METHOD


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a method trains, by parameter name (what a run checkpoints and saves)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def decay_groups(params: list[nn.Parameter], weight_decay: float, **group) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices, none on biases and norms (``group``: more
    settings for both, e.g. ``lr``)."""
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **group},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **group}]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors count once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
