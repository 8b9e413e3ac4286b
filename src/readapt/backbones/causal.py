"""Decoder-only backbones (GPT-2, Llama, Mistral, Qwen, ...): one frozen pass, all layers kept.

Used for causal language modelling (the correction lands before the frozen LM head) and for
classification (the head reads the last real token).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from readapt.backbones import BackboneStates, base_model, forward_reads, freeze


class CausalBackbone:
    family = "causal"

    def __init__(self, model: nn.Module):
        self.model = freeze(model)
        self.body = base_model(model)
        config = self.body.config
        self.hidden_size: int = config.hidden_size
        self.num_layers: int = config.num_hidden_layers
        # GPT-2 uses LayerNorm (layer_norm_epsilon); the Llama family uses RMSNorm (rms_norm_eps).
        rms_eps = getattr(config, "rms_norm_eps", None)
        self.norm = "rmsnorm" if rms_eps is not None else "layernorm"
        self.eps: float = rms_eps if rms_eps is not None else getattr(config, "layer_norm_epsilon", 1e-5)
        # Gemma2 squashes its logits into (-cap, cap) after the LM head (config.final_logit_softcapping).
        self.softcap: Optional[float] = (getattr(model.config, "final_logit_softcapping", None)
                                         if forward_reads(model, "final_logit_softcapping") else None)

    @torch.no_grad()
    def run(self, input_ids, attention_mask, **_) -> BackboneStates:
        out = self.body(input_ids=input_ids, attention_mask=attention_mask,
                        output_hidden_states=True, use_cache=False, return_dict=True)
        return BackboneStates(hidden_states=tuple(out.hidden_states), attention_mask=attention_mask)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The frozen LM head on (corrected) final states, post-processed as the model's own forward
        does it. The hidden states are cast to the head's dtype (a bf16 backbone has a bf16 head);
        the gradient still reaches the fp32 correction through the cast."""
        head = self.model.get_output_embeddings()
        if head is None:
            raise ValueError("CAUSAL_LM needs a model with an LM head: load it with AutoModelForCausalLM")
        logits = head(hidden.to(head.weight.dtype))
        if self.softcap is not None:  # the same three steps as Gemma2ForCausalLM: bf16 stays bit-equal
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
