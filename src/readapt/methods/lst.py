"""Ladder Side-Tuning (LST): a narrow side transformer fed by gated "ladders" from every layer
of the frozen backbone; gradients never enter the backbone.

Sung, Cho, Bansal 2022, "LST: Ladder Side-Tuning for Parameter and Memory Efficient Transfer
Learning", https://arxiv.org/abs/2206.06522

    frozen backbone (one pass, no_grad)          side network (width d/r, trained)

    phi_0 ------------------- down_0 ----------> s_0
    phi_1 ------------------- down_1 --(1-g_1)--> (+) <--g_1-- s_0   --> SideLayer_1 --> s_1
    phi_2 ------------------- down_2 --(1-g_2)--> (+) <--g_2-- s_1   --> SideLayer_2 --> s_2
      ...                                                                  ...
    phi_N ------------------- down_N --(1-g_N)--> (+) <--g_N-- s_N-1 --> SideLayer_N --> s_N
      |                                                                                  |
      +------------------------------------> (+) <------------- up(LayerNorm(s_N)) -----+
                                              |
                                            head

    g_i = sigmoid(alpha_i / T), T = 0.1, alpha_i = 0 at init (g_i = 0.5)
    down_i: Linear(d -> d/r);  up: Linear(d/r -> d), zero-initialised
    SideLayer_i: nn.TransformerEncoderLayer(d/r, pre-LN, GELU, key-padding mask from the input)

The backbone runs once under ``torch.no_grad()`` in eval mode with ``output_hidden_states``;
only the downsamplers, gates, side layers, final side norm, upsampler and head train, and
autograd saves nothing of the backbone except the ladder inputs phi_i themselves (which the
downsamplers need for their weight gradients).

Choices, and where this deviates from the paper:

* **Output.** LST feeds the side network's upsampled output alone to the head. Here the head
  reads ``phi_N + up(LayerNorm(s_N))`` with ``up`` zero-initialised, so training starts exactly
  at the linear probe -- the same fair start READ gets -- and the side network learns a
  correction. As with LoRA's zero ``B``, the first step only moves ``up`` (and the gates'
  and side layers' gradients are zero); from the second step on everything trains.
* **Initialisation.** Random (PyTorch defaults), not LST's initialisation from a structurally
  pruned backbone: that needs a separate Fisher-information pruning pass over the backbone's
  weights down to width d/r on task data before training, which is a preprocessing pipeline of its
  own, not part of a method's ``build`` (the paper's ablation shows the pruned init helps, so this
  LST is, if anything, a slightly weaker peer).
* **Side width and heads.** d/r with r = ``lst_reduction`` (8, as in the paper); the feed-forward
  width is the backbone's ``intermediate_size / r`` and the head count the backbone's (LST
  shrinks d_kv by r, keeping the head count), reduced to the largest divisor of d/r when it does
  not divide it (``lst_heads`` overrides). MiniLM (d=384): width 48, 12 heads of dim 4.
* **Side layers** are ``torch.nn.TransformerEncoderLayer`` (pre-LN: stable from random init;
  LST's T5 side blocks are pre-norm too) with ``lst_dropout`` (0.1).
* Encoder-only backbones only: LST on T5 (side encoder + side decoder with cross-attention) and
  on decoder-only models (a causally masked side network) is not implemented.

Default lr 3e-3 (LST's setting for its GLUE runs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from readapt.backbones import base_model, family, freeze
from readapt.heads import ClassificationHead
from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import option

TEMPERATURE = 0.1


def side_heads(width: int, backbone_heads: int) -> int:
    """The backbone's head count if it divides ``width``, else the largest divisor below it."""
    return max(h for h in range(1, min(width, max(1, backbone_heads)) + 1) if width % h == 0)


class LadderSideNetwork(nn.Module):
    def __init__(self, body: nn.Module, head: ClassificationHead, reduction: int = 8,
                 heads: int | None = None, dropout: float = 0.1):
        super().__init__()
        config = body.config
        d, layers = config.hidden_size, config.num_hidden_layers
        width = max(1, d // reduction)
        nhead = int(heads) if heads else side_heads(width, getattr(config, "num_attention_heads", 1))
        if width % nhead:
            raise ValueError(f"lst: lst_heads={nhead} does not divide the side width {width}")
        ffn = max(1, getattr(config, "intermediate_size", 4 * d) // reduction)
        self.body = freeze(body)
        self.width = width
        self.down = nn.ModuleList(nn.Linear(d, width) for _ in range(layers + 1))
        self.alpha = nn.Parameter(torch.zeros(layers))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, nhead, dim_feedforward=ffn, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.head = head

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()  # frozen: no dropout, deterministic ladder inputs
        return self

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha / TEMPERATURE)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, segment_ids=None, **_):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with torch.no_grad():
            phi = self.body(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
        dtype = self.up.weight.dtype
        padding = ~attention_mask.bool()
        gates = self.gates()
        side = self.down[0](phi[0].to(dtype))
        for i, layer in enumerate(self.layers):
            ladder = self.down[i + 1](phi[i + 1].to(dtype))
            side = layer(gates[i] * side + (1 - gates[i]) * ladder, src_key_padding_mask=padding)
        hidden = phi[-1].to(dtype) + self.up(self.norm(side))
        logits = self.head(hidden, attention_mask, segment_ids)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build(backbone: nn.Module, head: HeadSpec | None, options: dict[str, Any]) -> nn.Module:
    if head is None or family(backbone.config.model_type) != "encoder":
        raise ValueError("lst supports encoder-only backbones with a classification/regression head; "
                         "decoder-only, seq2seq and LM-task LST are not implemented")
    body = base_model(backbone)
    return LadderSideNetwork(
        body, ClassificationHead(body.config.hidden_size, head.num_labels, head.pooling, head.dropout),
        reduction=int(option(options, "lst_reduction", 8)), heads=options.get("lst_heads"),
        dropout=float(option(options, "lst_dropout", 0.1)))


METHOD = Method(
    name="lst",
    help="Ladder Side-Tuning: a d/8-wide side transformer fed by gated ladders from the frozen backbone",
    default_lr=3e-3,
    build=build,
    backbone_backprop=False,
    lm_tasks=False,
)
