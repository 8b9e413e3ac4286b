"""Linear probe: the frozen backbone (run under no_grad) and a trained head only."""

from __future__ import annotations

from readapt.backbones import freeze
from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import classifier_for


def build(backbone, head: HeadSpec | None, options: dict):
    if head is None:
        raise ValueError("probe trains a classification head; text-to-text and LM tasks have none to train")
    freeze(backbone)
    return classifier_for(backbone, head, frozen_body=True)


METHOD = Method(name="probe", help="frozen backbone, head only", default_lr=1e-3, build=build,
                backbone_backprop=False, lm_tasks=False)
