"""What every peer method trains: backbone + head for classification, the LM itself for text-to-text.

(READ has its own model, in model.py.)
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from readapt.backbones import base_model, family
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

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, segment_ids=None, **_):
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
            if segment_ids is not None:  # virtual tokens belong to neither text
                segment_ids = torch.cat([segment_ids.new_zeros(segment_ids.shape[0], extra), segment_ids], 1)
        logits = self.head(hidden, attention_mask, segment_ids)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def classifier_for(backbone: nn.Module, head: HeadSpec, frozen_body: bool = False) -> SequenceClassifier:
    body = base_model(backbone)
    hidden = body.config.hidden_size
    return SequenceClassifier(body, ClassificationHead(hidden, head.num_labels, head.pooling, head.dropout), frozen_body)


class TextToText(nn.Module):
    """A Hugging Face LM (T5 text-to-text, or a causal LM) behind readapt's method interface:
    ``forward(input_ids, attention_mask, token_type_ids=None, labels=None)`` returns the model's
    own output (``.loss`` is its token cross-entropy; labels padded with -100)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        # token_type_ids mean nothing to T5/causal LMs; everything else (decoder_attention_mask,
        # decoder_input_ids, ...) is passed through.
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


def option(options: dict[str, Any], key: str, default: Any) -> Any:
    """``options[key]``, or ``default`` where it is missing or None (an unset CLI flag)."""
    value = options.get(key)
    return default if value is None else value


def require_lm(backbone: nn.Module, method: str) -> None:
    """LM tasks (``head is None``) need a model with an LM head; an encoder-only one has none."""
    if family(backbone.config.model_type) == "encoder":
        raise ValueError(f"{method}: an LM task (head None) needs a seq2seq or causal LM backbone, "
                         f"not the encoder-only {backbone.config.model_type!r}")
