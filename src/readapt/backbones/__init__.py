"""Frozen backbones: run a Hugging Face model once, forward only, and hand back its states.

One small module per family, chosen by ``config.model_type``:

    encoder.py   BERT, RoBERTa, DeBERTa(-v2), MiniLM, DistilBERT, ELECTRA, ...
    seq2seq.py   T5, mT5
    causal.py    GPT-2, Llama, Mistral, Qwen2/3, ...

Nothing here trains: every ``run`` happens under ``torch.no_grad()`` with the model in eval mode.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

ENCODER_TYPES = ("albert", "bert", "camembert", "deberta", "deberta-v2", "distilbert", "electra",
                 "mpnet", "roberta", "xlm-roberta")
SEQ2SEQ_TYPES = ("mt5", "t5")
CAUSAL_TYPES = ("gemma", "gemma2", "gpt2", "llama", "mistral", "phi3", "qwen2", "qwen3")
SUPPORTED_TYPES = tuple(sorted(ENCODER_TYPES + SEQ2SEQ_TYPES + CAUSAL_TYPES))


class UnsupportedModelError(ValueError):
    pass


def family(model_type: str) -> str:
    """'encoder' | 'seq2seq' | 'causal' for a supported ``config.model_type``."""
    if model_type in ENCODER_TYPES:
        return "encoder"
    if model_type in SEQ2SEQ_TYPES:
        return "seq2seq"
    if model_type in CAUSAL_TYPES:
        return "causal"
    raise UnsupportedModelError(
        f"model type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}")


def base_model(model: nn.Module) -> nn.Module:
    """The bare transformer inside a task model (BertForSequenceClassification -> BertModel).
    Encoder-decoder models are returned whole: their LM head is part of the task."""
    if family(model.config.model_type) == "seq2seq":
        return model
    return getattr(model, "base_model", model)


@dataclass
class BackboneStates:
    """What one frozen pass returns; every tensor is detached (no autograd history).

    ``hidden_states`` are phi_0..phi_N of the stack the head reads (the decoder for T5), each
    (B, T, d); phi_N is the final output after the stack's final norm.
    """

    hidden_states: tuple[torch.Tensor, ...]
    attention_mask: torch.Tensor
    # encoder-decoder only: the encoder's states and mask, and the decoder's cross-attention
    # probabilities per layer, (B, heads, T_dec, T_enc), kept for the Joiner.
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    encoder_attention_mask: Optional[torch.Tensor] = None
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None


def forward_reads(model: nn.Module, field: str) -> bool:
    """Whether ``model``'s own forward reads ``config.<field>``. A config value alone does not say
    the model applies it: any config keeps unknown keys (a Llama config may carry Gemma2's
    final_logit_softcapping, an mT5 config T5's scale_decoder_outputs) and the model ignores them."""
    code = getattr(inspect.unwrap(type(model).forward), "__code__", None)
    return code is not None and (field in code.co_names or field in code.co_consts)


def freeze(model: nn.Module) -> nn.Module:
    """requires_grad off everywhere and eval mode (no dropout: deterministic states)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_backbone(model: nn.Module):
    """Wrap a Hugging Face model in the frozen runner of its family (and freeze it)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise UnsupportedModelError("expected a Hugging Face transformers model (with .config.model_type)")
    kind = family(config.model_type)
    if kind == "encoder":
        from readapt.backbones.encoder import EncoderBackbone

        return EncoderBackbone(model)
    if kind == "seq2seq":
        from readapt.backbones.seq2seq import Seq2SeqBackbone

        return Seq2SeqBackbone(model)
    from readapt.backbones.causal import CausalBackbone

    return CausalBackbone(model)
