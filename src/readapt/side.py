"""The READ side network: a small RNN that walks a frozen backbone's layers and learns a correction.

READ - REcurrent ADaptation of large transformers (Wang et al., Meta AI, 2023)
https://arxiv.org/abs/2305.15348

    frozen backbone, run once under no_grad              side network (trained)
    tokens -> [emb] -> [layer 1] -> [layer 2] -> ... -> [layer N] -------------(+)--> head
                           |            |                   |                   ^
                           v            v                   v                   |
                       Joiner_1     Joiner_2     ...    Joiner_N                |
                           |            |                   |                   |
               h_0=0 -> [RNN cell] -> [RNN cell] -> ... -> [RNN cell] -> mean -> W_out (r -> d)

Fine-tuning would move the final state by d_N = phi_N' - phi_N, and to first order
d_i ~= J_i d_{i-1} + dF_i(phi_{i-1}): a recurrence over depth. The RNN learns it. Each token is
its own sequence of N steps (RNN batch = tokens), and one RNN serves every layer, so the side
network's size depends on the width d and r, never on the depth N.

Token mixing (``mixing="attention"``, a departure from the paper, chosen on validation: README,
"What we tried"). Plain READ corrects each token from that token's own states across depth, so
nothing relates one token to another: what full fine-tuning learns in attention between two
sentences, plain READ cannot express. With mixing, one light self-attention layer runs over each
example's tokens in side space (width r), after the depth recurrence and before W_out:

    per token:   states across depth -> RNN -> mean over depth -> h        (M, r)
    per example: h -> h + SelfAttention(LayerNorm(h))                        (B, T, r)
    per token:   -> W_out (r -> d), zero-initialised                         (M, d)

It still reads only the frozen states (nothing backpropagates into the backbone) and W_out still
starts at zero, so a fresh model is still exactly the backbone.

This module takes tensors only (it knows no Hugging Face class): backbones/ produce the states,
model.py wires them together.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
MIXING_HEADS = 4


class RMSNorm(nn.Module):
    """Scale-only norm, for backbones that use RMSNorm themselves (T5, Llama)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


class Joiner(nn.Module):
    """Builds the RNN input at each layer: x_i = norm(phi_i) * input_scale.

    With ``cross=True`` (the decoder of an encoder-decoder model) it also takes c_i, the
    first-order effect of the encoder's correction on decoder layer i through the frozen
    cross-attention's value path, and merges the two: x_i = proj([norm(phi_i) * s, c_i]).
    """

    def __init__(self, dim: int, norm: str = "layernorm", eps: float = 1e-12,
                 input_scale: float = 1.0, cross: bool = False):
        super().__init__()
        self.norm = make_norm(norm, dim, eps)
        self.input_scale = input_scale
        self.proj = nn.Linear(2 * dim, dim) if cross else None

    def forward(self, states: torch.Tensor, cross: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm(states) * self.input_scale
        if self.proj is None:
            return x
        if cross is None:
            raise ValueError("this Joiner merges a cross-attention term: pass cross=")
        return self.proj(torch.cat([x, cross.to(x.dtype)], dim=-1))


class TokenMixer(nn.Module):
    """One pre-norm self-attention layer, with a residual, over each example's tokens in side
    space. Padding never attends or is attended to; the output keeps the input's token layout."""

    def __init__(self, dim: int, heads: int = MIXING_HEADS):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, h: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """h (M, r): the tokens at the True positions of ``read`` (B, T), in row-major order."""
        rows, cols = read.nonzero(as_tuple=True)
        grid = h.new_zeros(*read.shape, h.shape[-1]).index_put((rows, cols), h)      # (B, T, r)
        x = self.norm(grid)
        mixed, _ = self.attention(x, x, x, key_padding_mask=~read, need_weights=False)
        return h + mixed[rows, cols]


class SideNetwork(nn.Module):
    """RNN over depth + aggregation (+ optional token mixing) + zero-initialised W_out.

    forward(states (L, M, d), cross (L, M, d) or None, read (B, T) or None) -> correction (M, d)
    where L is the number of layers read and M the number of token sequences; ``read`` says
    where those M tokens sit in the batch (needed only with token mixing).

    ``chunk_tokens`` bounds training memory. The M sequences are independent, so with gradients
    on the network runs over at most ``chunk_tokens`` of them at a time and recomputes each chunk
    in the backward pass (activation checkpointing): what autograd keeps is one chunk's RNN
    activations, not M tokens' worth, whatever the batch's length. The correction and the
    gradients are those of the unchunked network; the price is one more side-network forward,
    small beside the frozen backbone's pass. None runs all M at once.
    """

    def __init__(self, dim: int, rnn_dim: int = 128, rnn_type: str = "gru", aggregation: str = "mean",
                 norm: str = "layernorm", eps: float = 1e-12, input_scale: float = 1.0,
                 output_scale: float = 1.0, cross: bool = False, chunk_tokens: Optional[int] = None,
                 mixing: str = "none"):
        super().__init__()
        self.chunk_tokens = chunk_tokens
        self.joiner = Joiner(dim, norm, eps, input_scale, cross)
        self.rnn = _RNNS[rnn_type](dim, rnn_dim)  # (L, M, d) layout: time = depth
        self.aggregation = aggregation
        self.output_scale = output_scale
        self.mixer = TokenMixer(rnn_dim) if mixing == "attention" else None
        self.out = nn.Linear(rnn_dim, dim, bias=False)
        # Zero init: before the first update the model is exactly the frozen backbone.
        nn.init.zeros_(self.out.weight)

    def forward(self, states: torch.Tensor, cross: Optional[torch.Tensor] = None,
                read: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.mixer is None:  # every token on its own: W_out can be part of the chunked pass
            return self._chunked(self._correction, states, cross)
        if read is None:
            raise ValueError("a side network with token mixing needs read= (where its tokens sit)")
        return self.output_scale * self.out(self.mixer(self._chunked(self._summary, states, cross), read))

    def _chunked(self, fn, states: torch.Tensor, cross: Optional[torch.Tensor]) -> torch.Tensor:
        chunk = self.chunk_tokens
        if chunk is None or states.shape[1] <= chunk or not torch.is_grad_enabled():
            return fn(states, cross)
        chunks = states.split(chunk, dim=1)
        crosses = cross.split(chunk, dim=1) if cross is not None else [None] * len(chunks)
        return torch.cat([checkpoint(fn, s, c, use_reentrant=False) for s, c in zip(chunks, crosses)])

    def _summary(self, states: torch.Tensor, cross: Optional[torch.Tensor]) -> torch.Tensor:
        """(L, M, d) -> (M, r): the RNN over depth, aggregated."""
        x = self.joiner(states.to(self.out.weight.dtype), cross)
        outputs, _ = self.rnn(x)                     # h_0 = 0
        return outputs.mean(0) if self.aggregation == "mean" else outputs[-1]

    def _correction(self, states: torch.Tensor, cross: Optional[torch.Tensor]) -> torch.Tensor:
        return self.output_scale * self.out(self._summary(states, cross))
