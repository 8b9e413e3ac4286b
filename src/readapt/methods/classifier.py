"""Backbone + head, the shape every peer method trains (READ has its own, in model.py)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from readapt.backbones import base_model
from readapt.heads import ClassificationHead
from readapt.methods import HeadSpec


class SequenceClassifier(nn.Module):
    """Runs ``body`` (a bare HF encoder/decoder, possibly wrapped by peft) and pools its last
    hidden state into ``head``. ``frozen_body=True`` runs the body under ``no_grad``, in eval
    mode: the linear probe."""

    def __init__(self, body: nn.Module, head: ClassificationHead, frozen_body: bool = False):
        super().__init__()
        self.body = body
        self.head = head
        self.frozen_body = frozen_body

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_body:
            self.body.eval()
        return self

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **_):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        context = torch.no_grad() if self.frozen_body else contextlib.nullcontext()
        with context:
            hidden = self.body(**kwargs).last_hidden_state
        # Methods that prepend virtual tokens (prompt tuning) return longer sequences: the mask
        # grows by as many always-visible positions at the front.
        extra = hidden.shape[1] - attention_mask.shape[1]
        if extra > 0:
            attention_mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], extra), attention_mask], 1)
        logits = self.head(hidden, attention_mask)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def classifier_for(backbone: nn.Module, head: HeadSpec, frozen_body: bool = False) -> SequenceClassifier:
    body = base_model(backbone)
    hidden = body.config.hidden_size
    return SequenceClassifier(body, ClassificationHead(hidden, head.num_labels, head.pooling, head.dropout), frozen_body)
