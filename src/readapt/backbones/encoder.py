"""Encoder-only backbones (BERT, RoBERTa, DeBERTa, MiniLM, ...): one frozen pass, all layers kept."""

from __future__ import annotations

import torch
from torch import nn

from readapt.backbones import BackboneStates, base_model, freeze


class EncoderBackbone:
    """Runs the bare encoder of ``model`` frozen and returns phi_0..phi_N."""

    family = "encoder"
    norm = "layernorm"

    def __init__(self, model: nn.Module):
        self.model = freeze(model)
        self.body = base_model(model)
        config = self.body.config
        self.hidden_size: int = config.hidden_size
        self.num_layers: int = config.num_hidden_layers
        self.eps: float = getattr(config, "layer_norm_eps", 1e-12)

    @torch.no_grad()
    def run(self, input_ids, attention_mask, token_type_ids=None, **_) -> BackboneStates:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.body(**kwargs, output_hidden_states=True, return_dict=True)
        return BackboneStates(hidden_states=tuple(out.hidden_states), attention_mask=attention_mask)
