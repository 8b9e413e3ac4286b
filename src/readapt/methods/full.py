"""Full fine-tuning: every backbone weight and the head train (the accuracy reference)."""

from __future__ import annotations

from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import TextToText, classifier_for


def build(backbone, head: HeadSpec | None, options: dict):
    for p in backbone.parameters():
        p.requires_grad_(True)
    if head is None:  # text-to-text / causal LM: the model's own LM loss
        return TextToText(backbone)
    return classifier_for(backbone, head)


METHOD = Method(name="full", help="full fine-tuning of all weights", default_lr=5e-5, build=build)
