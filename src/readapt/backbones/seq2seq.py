"""Encoder-decoder backbones (T5, mT5): one frozen pass, plus what the READ Joiner needs.

The decoder already ran on the *uncorrected* encoder output. To first order, an encoder
correction d_enc reaches decoder layer i through its cross-attention's value path:

    c_i = O_i . A_i . (d_enc V_i)

with A_i the backbone's own cross-attention probabilities (kept from the frozen pass) and V_i,
O_i that layer's frozen value and output projections. The key path (how d_enc would shift A_i)
is dropped: a documented first-order approximation (DESIGN.md section 1). These are fixed linear
maps, so gradients reach the encoder side network without differentiating any backbone layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from readapt.backbones import BackboneStates, forward_reads, freeze


def mix_first(t_enc: int, t_dec: int, d: int, heads: int, width: int) -> bool:
    """Whether (A d_enc) V takes fewer multiply-adds than A (d_enc V) (see cross_value_path)."""
    project_first = t_enc * d * heads * width + heads * t_dec * t_enc * width
    return heads * t_dec * d * (t_enc + width) < project_first


class Seq2SeqBackbone:
    family = "seq2seq"
    norm = "rmsnorm"

    def __init__(self, model: nn.Module):
        if not hasattr(model, "decoder") or not hasattr(model, "lm_head"):
            raise ValueError("T5 backbones must be loaded with AutoModelForSeq2SeqLM (they need the LM head)")
        # Only eager attention returns the cross-attention probabilities the Joiner reuses. Older
        # transformers 5.x releases keep a config copy per stack, so set it on every one of them.
        model.set_attn_implementation("eager")
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and getattr(config, "_attn_implementation", "eager") != "eager":
                config._attn_implementation = "eager"
        self.model = freeze(model)
        config = model.config
        self.hidden_size: int = config.d_model
        self.num_layers: int = config.num_decoder_layers
        self.num_encoder_layers: int = config.num_layers
        self.eps: float = config.layer_norm_epsilon
        # The original T5 rescales the decoder output by d^-0.5 before its LM head; T5 v1.1 and mT5
        # do not. T5ForConditionalGeneration says which in config.scale_decoder_outputs;
        # MT5ForConditionalGeneration never rescales (although it ties its embeddings).
        self.scale_output: bool = (forward_reads(model, "scale_decoder_outputs")
                                   and bool(getattr(config, "scale_decoder_outputs", False)))

    @torch.no_grad()
    def run(self, input_ids, attention_mask, labels=None, decoder_input_ids=None,
            decoder_attention_mask=None, **_) -> BackboneStates:
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("an encoder-decoder forward needs labels or decoder_input_ids")
            decoder_input_ids = self.model._shift_right(labels)
        if decoder_attention_mask is None:
            decoder_attention_mask = torch.ones_like(decoder_input_ids)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                         output_hidden_states=True, output_attentions=True, use_cache=False, return_dict=True)
        if not out.cross_attentions or len(out.cross_attentions) != self.num_layers:
            raise RuntimeError("the backbone returned no cross-attention probabilities; READ needs "
                               "attn_implementation='eager' on every T5 stack")
        return BackboneStates(
            hidden_states=tuple(out.decoder_hidden_states), attention_mask=decoder_attention_mask,
            encoder_hidden_states=tuple(out.encoder_hidden_states), encoder_attention_mask=attention_mask,
            cross_attentions=tuple(out.cross_attentions))

    def cross_attention(self, layer: int) -> nn.Module:
        """The frozen cross-attention module of decoder layer ``layer`` (1-based)."""
        return self.model.decoder.block[layer - 1].layer[1].EncDecAttention

    def cross_value_path(self, layer: int, d_enc: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """c_i = O_i . A_i . (d_enc V_i): (B, T_enc, d), (B, H, T_dec, T_enc) -> (B, T_dec, d).

        Two orders give the same c_i: project every encoder token by V_i, then mix (A_i (d_enc V_i)),
        or mix first, per head, then project only the T_dec mixed rows ((A_i d_enc) V_i). The second
        is up to T_enc / T_dec times cheaper when the target is short (a T5 classifier's label text:
        a few tokens against the input's tens); the cheaper order by multiply-adds is taken."""
        attn = self.cross_attention(layer)
        b, t_enc, d = d_enc.shape
        heads, width, t_dec = attn.n_heads, attn.key_value_proj_dim, probs.shape[2]
        # The path runs in the correction's dtype (fp32), whatever the backbone's: V_i and O_i are
        # d x d each, so their up-cast copies are small, and the encoder side network's gradient
        # keeps its precision.
        value, output = attn.v.weight.to(d_enc.dtype), attn.o.weight.to(d_enc.dtype)
        probs = probs.to(d_enc.dtype)
        if not mix_first(t_enc, t_dec, d, heads, width):
            v = F.linear(d_enc, value).view(b, t_enc, heads, width).transpose(1, 2)      # (B, H, T_enc, w)
            context = torch.matmul(probs, v)                                            # (B, H, T_dec, w)
        else:
            mixed = torch.bmm(probs.reshape(b, heads * t_dec, t_enc), d_enc)            # (B, H T_dec, d)
            mixed = mixed.view(b, heads, t_dec, d).transpose(0, 1).reshape(heads, b * t_dec, d)
            context = torch.bmm(mixed, value.view(heads, width, d).transpose(1, 2))     # (H, B T_dec, w)
            context = context.view(heads, b, t_dec, width).transpose(0, 1)              # (B, H, T_dec, w)
        return F.linear(context.transpose(1, 2).reshape(b, t_dec, attn.inner_dim), output)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The frozen LM head on (corrected) decoder states, as the model's own forward applies it."""
        head = self.model.lm_head
        hidden = hidden.to(head.weight.dtype)  # a bf16 backbone has a bf16 head; the grad passes the cast
        if self.scale_output:
            hidden = hidden * (self.hidden_size ** -0.5)
        return head(hidden)
