"""BitFit: fine-tune only the bias terms of the backbone (plus the task head).

Ben Zaken, Ravfogel, Goldberg 2021, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", https://arxiv.org/abs/2106.10199

Every parameter whose name ends in ``bias`` trains -- the query/key/value, attention-output and
FFN biases *and* the LayerNorm biases -- every weight stays frozen:

    y = W x + b          W frozen, b trained          (every Linear)
    y = g * norm(x) + b  g frozen, b trained          (every LayerNorm)

Gradients still flow through every backbone layer (``backbone_backprop=True``): BitFit saves
optimizer state, not activation memory.

Choices made here:

* the BERT-style ``pooler`` stays frozen: readapt's head pools ``last_hidden_state`` itself, so
  the pooler's bias never reaches the loss and training it would only inflate the count;
* default lr 1e-3: the BitFit paper searches {1e-4, 4e-4, 7e-4, 1e-3}; biases are few and
  small and need a far larger step than full fine-tuning's 2e-5;
* language-model tasks (``head is None``) train the LM's own biases with its own loss; T5 has
  no bias terms at all, so BitFit on T5 is refused with a clear error.

"""

from __future__ import annotations

from typing import Any

from torch import nn

from readapt.backbones import base_model
from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import TextToText, classifier_for, require_lm


def is_bias(name: str) -> bool:
    return name.endswith("bias")


def build(backbone: nn.Module, head: HeadSpec | None, options: dict[str, Any]) -> nn.Module:
    if head is None:
        require_lm(backbone, "bitfit")
        model: nn.Module = TextToText(backbone)
        body = backbone
    else:
        model = classifier_for(backbone, head)
        body = model.body
    biases = 0
    for name, p in body.named_parameters():
        train = is_bias(name) and not name.startswith("pooler.")
        p.requires_grad_(train)
        biases += p.numel() if train else 0
    if biases == 0:
        raise ValueError(f"bitfit: {type(base_model(backbone)).__name__} has no bias parameters to train "
                         "(T5 and Llama-family models have none); use lora, adapter or prompt instead")
    return model


METHOD = Method(
    name="bitfit",
    help="BitFit: train only the backbone's bias terms (incl. LayerNorm biases) and the head",
    default_lr=1e-3,
    build=build,
    backbone_backprop=True,
)
