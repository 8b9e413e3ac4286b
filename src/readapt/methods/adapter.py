"""Bottleneck adapters (Houlsby et al.): a small residual MLP after each attention and FFN
sublayer of the frozen backbone.

Houlsby, Giurgiu, Jastrzebski, Morrone, de Laroussilhe, Gesmundo, Attariyan, Gelly 2019,
"Parameter-Efficient Transfer Learning for NLP", https://arxiv.org/abs/1902.00751

One BERT layer with its two adapters (the T5 / Llama placement is the same: right after the
sublayer's output projection, before its residual add):

    x --> self-attention --> dense --[A]--> dropout --> (+ x) --> LayerNorm --> h
    h --> intermediate  --> dense --[A]--> dropout --> (+ h) --> LayerNorm --> out

    [A]:  z --> z + up(act(down(z)))      down: d -> d/16,  up: d/16 -> d (zero-initialised)

``up`` starts at zero, so the adapted model computes exactly the backbone at initialisation.
The backbone's weights are frozen, but gradients flow through every layer
(``backbone_backprop=True``).

Implementation: no AdapterHub. ``adapters`` 1.3.0 (checked on PyPI) requires
``transformers~=4.57.6`` and readapt is pinned to transformers 5.x, so this is our own ~100-line
module. The output projection of each sublayer is found by a per-family name table and replaced
by ``AdapterWrapped(projection, adapter)``: an nn.Module, not a hook, so the adapters show up in
``print(model)``, survive ``deepcopy`` and have stable state-dict names
(``...attention.output.dense.adapter.down.weight``; the wrapped projection's own weight moves to
``...dense.base.weight``). ALBERT (weights shared across layers) has no placement here.

What trains: the adapters, the head and -- as in Houlsby et al., who train the layer
normalisation parameters per task alongside the adapters -- every LayerNorm/RMSNorm of the backbone
(``adapter_train_norms=False`` freezes them).

Options: ``adapter_reduction`` (16: bottleneck = d // 16; Houlsby sweep bottlenecks {8, 64, 256}
on BERT-large, where d // 16 = 64), ``adapter_act`` ("silu": AdapterHub's Houlsby config; "relu",
"gelu", "tanh"), ``adapter_train_norms`` (True), ``adapter_cross_attention`` (False: T5
decoder cross-attention gets no adapter, AdapterHub's default). Default lr 1e-3 (Houlsby sweep
{3e-5, 3e-4, 3e-3}; 1e-3 sits between the two upper points, adapters starting at the identity
take large steps well).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import TextToText, option, require_lm
from readapt.methods.classifier import classifier_for

_BERT = (r"attention\.output\.dense$", r"layer\.\d+\.output\.dense$")
_LLAMA = (r"self_attn\.o_proj$", r"mlp\.down_proj$")
# model_type -> regexes (on module names) of the output projections an adapter follows.
TARGETS: dict[str, tuple[str, ...]] = {
    **{t: _BERT for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2")},
    "distilbert": (r"attention\.out_lin$", r"ffn\.lin2$"),
    "mpnet": (r"attention\.attn\.o$", r"layer\.\d+\.output\.dense$"),
    "t5": (r"SelfAttention\.o$", r"DenseReluDense\.wo$"),
    "mt5": (r"SelfAttention\.o$", r"DenseReluDense\.wo$"),
    "gpt2": (r"attn\.c_proj$", r"mlp\.c_proj$"),
    **{t: _LLAMA for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3")},
}
CROSS_ATTENTION = {"t5": r"EncDecAttention\.o$", "mt5": r"EncDecAttention\.o$"}
ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class Adapter(nn.Module):
    """z -> z + up(act(down(z))); ``up`` is zero, so a fresh adapter is the identity."""

    def __init__(self, dim: int, bottleneck: int, act: str = "silu"):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = ACTIVATIONS[act]()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=1e-2)   # Houlsby: near-identity init; up = 0 makes it exact
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.up(self.act(self.down(z)))


class AdapterWrapped(nn.Module):
    """A frozen projection followed by its adapter: ``adapter(base(x))``."""

    def __init__(self, base: nn.Module, adapter: Adapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    # Some HF code reads the projection's weight directly (T5's FFN casts to ``wo.weight.dtype``).
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def out_features(module: nn.Module) -> int:
    width = getattr(module, "out_features", None) or getattr(module, "nf", None)  # Linear | GPT-2 Conv1D
    if not width:
        raise ValueError(f"adapter: cannot tell the output width of {type(module).__name__}")
    return int(width)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or bool(re.search(r"(LayerNorm|RMSNorm)$", type(module).__name__))


def add_adapters(model: nn.Module, model_type: str, reduction: int = 16, act: str = "silu",
                 cross_attention: bool = False) -> list[str]:
    """Freeze ``model`` and wrap every targeted projection with a fresh adapter, in place.
    Returns the wrapped modules' names."""
    if model_type not in TARGETS:
        raise ValueError(f"adapter: no adapter placement known for model type {model_type!r}; "
                         f"known: {', '.join(sorted(TARGETS))}")
    if act not in ACTIVATIONS:
        raise ValueError(f"adapter: unknown adapter_act {act!r}; choose {', '.join(ACTIVATIONS)}")
    patterns = TARGETS[model_type] + ((CROSS_ATTENTION[model_type],) if cross_attention and model_type in CROSS_ATTENTION else ())
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [(name, module) for name, module in model.named_modules()
               if name and any(re.search(pattern, name) for pattern in patterns)]
    if not targets:
        raise ValueError(f"adapter: found no {model_type} sublayer output projections in {type(model).__name__}")
    for name, module in targets:
        width = out_features(module)
        weight = module.weight
        adapter = Adapter(width, max(1, width // reduction), act).to(device=weight.device, dtype=weight.dtype)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, AdapterWrapped(module, adapter))
    return [name for name, _ in targets]


def build(backbone: nn.Module, head: HeadSpec | None, options: dict[str, Any]) -> nn.Module:
    model_type = backbone.config.model_type
    if head is None:
        require_lm(backbone, "adapter")
        model: nn.Module = TextToText(backbone)
        body = backbone
    else:
        model = classifier_for(backbone, head)
        body = model.body
    add_adapters(body, model_type, reduction=int(option(options, "adapter_reduction", 16)),
                 act=str(option(options, "adapter_act", "silu")),
                 cross_attention=bool(option(options, "adapter_cross_attention", False)))
    if option(options, "adapter_train_norms", True):
        for module in body.modules():
            if is_norm(module):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
    return model


METHOD = Method(
    name="adapter",
    help="Houlsby bottleneck adapters (d/16) after every attention and FFN output, plus layer norms and head",
    default_lr=1e-3,
    build=build,
    backbone_backprop=True,
)
