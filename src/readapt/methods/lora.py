"""LoRA: low-rank updates to frozen weight matrices, through Hugging Face ``peft``.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
https://arxiv.org/abs/2106.09685

Each targeted Linear ``W`` (d_in -> d_out) gets a trainable rank-r bypass; ``B`` starts at
zero, so training starts exactly at the backbone:

    x --+-- W (frozen) ---------------------+--> y = W x + (alpha / r) * B A x
        |                                   |
        +-- dropout -- A (r x d_in) -- B (d_out x r) --+

Targets are peft's defaults for the model type (BERT/RoBERTa/ELECTRA: ``query``, ``value``;
T5: ``q``, ``v``; DeBERTa-v2: ``query_proj``, ``value_proj``; Llama-likes: ``q_proj``,
``v_proj``), as in the paper. Gradients flow through every backbone layer
(``backbone_backprop=True``).

Options: ``lora_r`` (8), ``lora_alpha`` (16), ``lora_dropout`` (0.1), ``lora_target_modules``
(None = peft's default for the model type; required for types peft has no default for,
e.g. DistilBERT: ["q_lin", "v_lin"], MPNet: ["q", "v"]).
Default lr 5e-4 (the paper's GLUE runs use 4e-4..5e-4 for RoBERTa-base).

Classification: the adapters go into the bare body (``base_model(backbone)``) wrapped as a
peft FEATURE_EXTRACTION model, and readapt's shared head reads its last hidden state. LM tasks
(``head is None``): the whole seq2seq/causal LM is wrapped (SEQ_2_SEQ_LM / CAUSAL_LM) and trains
on its own loss. Only ``lora_`` tensors and the head train.
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from readapt.backbones import base_model, family
from readapt.heads import ClassificationHead
from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import TextToText, option, require_lm
from readapt.methods.classifier import SequenceClassifier


def lm_task_type(model: nn.Module) -> TaskType:
    return TaskType.SEQ_2_SEQ_LM if family(model.config.model_type) == "seq2seq" else TaskType.CAUSAL_LM


def build(backbone: nn.Module, head: HeadSpec | None, options: dict[str, Any]) -> nn.Module:
    target = options.get("lora_target_modules")
    config = dict(r=int(option(options, "lora_r", 8)), lora_alpha=option(options, "lora_alpha", 16),
                  lora_dropout=float(option(options, "lora_dropout", 0.1)), bias="none",
                  target_modules=list(target) if target else None)
    if head is None:
        require_lm(backbone, "lora")
        model, task_type = backbone, lm_task_type(backbone)
    else:
        model, task_type = base_model(backbone), TaskType.FEATURE_EXTRACTION
    try:
        peft_model = get_peft_model(model, LoraConfig(task_type=task_type, **config))
    except ValueError as err:
        if target is None and "target_modules" in str(err):
            raise ValueError(f"lora: peft has no default target modules for model type "
                             f"{backbone.config.model_type!r}; pass options['lora_target_modules']") from err
        raise
    if head is None:
        return TextToText(peft_model)
    hidden = model.config.hidden_size
    return SequenceClassifier(peft_model, ClassificationHead(hidden, head.num_labels, head.pooling, head.dropout))


METHOD = Method(
    name="lora",
    help="LoRA (peft): rank-r updates to the attention query/value projections, plus the head",
    default_lr=5e-4,
    build=build,
    backbone_backprop=True,
)
