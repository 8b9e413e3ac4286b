"""A frozen backbone with int8 weights, for READ (which never differentiates the backbone's layers).

    load_pretrained(path, quantize="int8")     # CPU: torch's dynamic int8 quantisation of nn.Linear

READ runs the backbone under no_grad and only reads its states, so its layers can hold int8 weights:
no dequantised backward is ever built (nothing backpropagates through them). Two places are kept in
full precision because the loss does differentiate through them, as fixed linear maps:
  - the frozen LM head of an LM task (the corrected final state passes through it), and
  - T5's cross-attention value and output maps (the Joiner's first-order path reads their weights).

On CPU the int8 path is torch's dynamic quantisation (int8 weights, activations quantised per batch);
it needs no extra package. bitsandbytes' int8/nf4 for CUDA is not wired in yet: asking for it is a
one-line error, never a silent fp32 run.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

QUANTIZATIONS = ("none", "int8")


def check_quantize(name: str, device: torch.device | str) -> None:
    """One line for a value readapt cannot honour here (before any file is read)."""
    if name == "nf4":
        raise ValueError("--quantize nf4 needs bitsandbytes on a CUDA device, which readapt does not support yet; "
                         "use --quantize int8 (CPU) or --backbone-dtype bfloat16")
    if name not in QUANTIZATIONS:
        raise ValueError(f"--quantize {name}: choose one of {', '.join(QUANTIZATIONS)}")
    if name != "none" and torch.device(device).type != "cpu":
        raise ValueError(f"--quantize {name} runs on the CPU (torch's dynamic quantisation); bitsandbytes for "
                         f"CUDA is not supported yet: use --backbone-dtype bfloat16 on a GPU, or --device cpu")


def full_precision_modules(model: nn.Module, kind: str) -> set[str]:
    """Names of the Linear modules the loss differentiates through (see the module docstring)."""
    keep = set()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if module is head:
            keep.add(name)
        if kind == "seq2seq" and name.endswith(("EncDecAttention.v", "EncDecAttention.o")):
            keep.add(name)
    return keep


def quantize_int8(model: nn.Module, kind: str) -> nn.Module:
    """Every nn.Linear of a frozen backbone to int8 weights, except the full-precision ones."""
    keep = full_precision_modules(model, kind)
    names = {name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name not in keep}
    with warnings.catch_warnings():  # torch marks its quantised tensor constructors deprecated (2.13)
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), names, dtype=torch.qint8)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of a model's weights as stored in memory (int8 packed weights count at their size)."""
    total = 0
    for module in model.modules():
        if isinstance(module, DynamicLinear):  # int8 weight + fp32 bias, packed outside the parameters
            weight, bias = module.weight(), module.bias()
            total += weight.numel() * weight.element_size() + (bias.numel() * bias.element_size() if bias is not None else 0)
    seen = set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total
