"""READ plus the backbone's top layer(s) fine-tuned: a hybrid, and NOT READ.

The quality issue's fallback for the gap plain side networks leave (README, "GLUE"): the cheapest
honest hybrid, measured beside READ with its memory. Gradients enter the top ``top_layers`` layers
of the backbone (only those: the layers below stay frozen and run without autograd), so it gives up
READ's defining property, and its cost grows with those layers' activations and optimizer state.

    frozen, no_grad:  tokens -> [emb] -> [layer 1] -> ... -> [layer N-K] --+
                                                                          |  phi_{N-K}
    trained:                                    [layer N-K+1] -> ... -> [layer N] -> phi_N' --(+)--> head
                                                                                               ^
    READ side network over phi_1 .. phi_{N-K} (frozen) and phi_{N-K+1}' .. phi_N' -------------+

The top layers are the backbone's own modules, unfrozen and trained in place (no copy); the frozen
pass still runs them (its states of those layers are replaced), which costs K/N of a frozen pass.
A fresh model is still the backbone: the top layers start as they were and W_out at zero.
BERT-family encoders only (the top layers are called as the encoder calls them).

READ: https://arxiv.org/abs/2305.15348
"""

from __future__ import annotations

import dataclasses

from torch import nn

from readapt.config import ConfigError
from readapt.methods import HeadSpec, Method, decay_groups, get_method
from readapt.methods.read import build as build_read

TOP_LAYERS = 1
FAMILIES = ("bert", "roberta")


class ReadTopModel(nn.Module):
    """A ReadModel whose backbone's top ``top_layers`` layers train; see the module docstring."""

    def __init__(self, read: nn.Module, top_layers: int = TOP_LAYERS):
        super().__init__()
        body = read.runner.body
        model_type = body.config.model_type
        if model_type not in FAMILIES or not hasattr(getattr(body, "encoder", None), "layer"):
            raise ConfigError(f"--method read_top trains the top layers of BERT-family encoders "
                              f"({', '.join(FAMILIES)}); this backbone is {model_type!r}: use --method read")
        layers = body.encoder.layer
        if not 1 <= top_layers < len(layers):
            raise ConfigError(f"--top-layers {top_layers}: this backbone has {len(layers)} layers; train 1.."
                              f"{len(layers) - 1} of them (all of them is --method full)")
        self.read = read
        self.first = len(layers) - top_layers          # phi_first is the trained stack's input
        self.top = layers[self.first:]                 # the backbone's own modules, trained in place
        self.config = body.config
        for p in self.top.parameters():
            p.requires_grad_(True)

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups: the side network and head at ``lr`` (READ's), the backbone's trained layers
        at full fine-tuning's default rate (READ's would wreck pretrained weights); no weight decay
        on biases and norms."""
        top = {id(p) for p in self.top.parameters()}
        side = [p for p in self.parameters() if p.requires_grad and id(p) not in top]
        return (decay_groups(side, weight_decay, lr=lr)
                + decay_groups(list(self.top.parameters()), weight_decay, lr=get_method("full").default_lr))

    def set_side_chunk_tokens(self, tokens):
        self.read.set_side_chunk_tokens(tokens)
        return self

    def set_side_dtype(self, dtype):
        self.read.set_side_dtype(dtype)
        return self

    def train(self, mode: bool = True) -> "ReadTopModel":
        super().train(mode)     # the ReadModel puts the whole backbone in eval mode ...
        self.top.train(mode)    # ... and the trained layers train as full fine-tuning trains them (dropout)
        return self

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                segment_ids=None, states=None, **_):
        from transformers.masking_utils import create_bidirectional_mask

        if states is None:
            states = self.read.backbone_states(input_ids=input_ids, attention_mask=attention_mask,
                                               token_type_ids=token_type_ids)
        hidden = states.hidden_states[self.first]
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden,
                                         attention_mask=states.attention_mask)
        trained = []
        for layer in self.top:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
            trained.append(hidden)
        states = dataclasses.replace(states, hidden_states=(*states.hidden_states[:self.first + 1], *trained))
        return self.read(states=states, labels=labels, segment_ids=segment_ids)


def build(backbone, head: HeadSpec | None, options: dict):
    if head is None:
        raise ConfigError("--method read_top is for classification and regression; LM tasks: --method read")
    return ReadTopModel(build_read(backbone, head, options), options.get("top_layers") or TOP_LAYERS)


METHOD = Method(name="read_top", help="a hybrid, not READ: READ plus the backbone's top layer(s) fine-tuned",
                default_lr=3e-3, build=build, backbone_backprop=True, pair_encoding="separate", lm_tasks=False,
                side_network=True)
