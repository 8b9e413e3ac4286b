"""Prompt tuning: learn a few soft "virtual token" embeddings prepended to the input, through
Hugging Face ``peft``; the backbone stays frozen.

Lester, Al-Rfou, Constant 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
https://arxiv.org/abs/2104.08691

    input ids --> word embeddings (frozen) --------------+
                                                         v
    P (num_virtual_tokens x d, trained) ------------> [ P ; E(x) ] --> frozen transformer --> head

The body's output is ``num_virtual_tokens`` positions longer than the input;
``SequenceClassifier`` widens the attention mask by as many always-visible positions, so mean
pooling includes the virtual tokens and CLS pooling reads position 0, the first virtual token.
Gradients still flow through every backbone layer to reach P (``backbone_backprop=True``).
Virtual tokens take the first ``num_virtual_tokens`` positions, so inputs must be at most
``max_position_embeddings - num_virtual_tokens`` tokens long (BERT: 512 - 20).

Token type ids: peft's FEATURE_EXTRACTION wrapper *drops* them for prompt learning (with a
warning), which would silently erase the segment boundary of sentence-pair tasks (MNLI, QQP,
STS-B, ...). ``SegmentAwarePrompt`` does peft's concatenation itself when token type ids are
given and extends them with segment 0 for the virtual tokens.

Options: ``num_virtual_tokens`` (20), ``prompt_init`` ("sample_vocab" | "random" | "text";
default "sample_vocab": the prompt starts as embeddings of random vocabulary tokens, which Lester
et al. found better than random-uniform init below the largest model sizes, and which needs no
tokenizer; "random" is peft's N(0, 1) init), and for "text":
``prompt_init_text`` and ``prompt_tokenizer`` (a tokenizer path; default the backbone's
``name_or_path``).

Default lr 3e-2: the prompt is a handful of vectors and needs a very large step (Lester et al.
use 0.3 with Adafactor; 1e-2..3e-2 is the usual AdamW range).

LM tasks (``head is None``): peft's SEQ_2_SEQ_LM wrapper prepends the prompt to the *encoder*
input only (``num_transformer_submodules=1``, as in the paper); a causal LM gets CAUSAL_LM.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from torch import nn

from readapt.backbones import base_model
from readapt.heads import ClassificationHead
from readapt.methods import HeadSpec, Method
from readapt.methods.classifier import TextToText, option, require_lm
from readapt.methods.classifier import SequenceClassifier
from readapt.methods.lora import lm_task_type

INITS = {"random": PromptTuningInit.RANDOM, "sample_vocab": PromptTuningInit.SAMPLE_VOCAB,
         "text": PromptTuningInit.TEXT}


class SegmentAwarePrompt(nn.Module):
    """peft's prompt-tuned FEATURE_EXTRACTION body, keeping token type ids (virtual tokens get
    segment 0). Without token type ids it is exactly peft's forward."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft_model = peft_model

    @property
    def num_virtual_tokens(self) -> int:
        return self.peft_model.active_peft_config.num_virtual_tokens

    def forward(self, input_ids, attention_mask, token_type_ids=None, **kwargs):
        if token_type_ids is None:
            return self.peft_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        batch, n = input_ids.shape[0], self.num_virtual_tokens
        embeds = self.peft_model.word_embeddings(input_ids)
        prompts = self.peft_model.get_prompt(batch_size=batch).to(embeds.dtype)
        attention_mask = torch.cat([attention_mask.new_ones(batch, n), attention_mask], 1)
        token_type_ids = torch.cat([token_type_ids.new_zeros(batch, n), token_type_ids], 1)
        return self.peft_model.base_model(inputs_embeds=torch.cat([prompts, embeds], 1),
                                          attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)


def prompt_config(backbone: nn.Module, task_type: TaskType, options: dict[str, Any]) -> PromptTuningConfig:
    init = str(option(options, "prompt_init", "sample_vocab")).lower()
    if init not in INITS:
        raise ValueError(f"prompt: unknown prompt_init {init!r}; choose {', '.join(INITS)}")
    extra: dict[str, Any] = {}
    if init == "text":
        text = options.get("prompt_init_text")
        tokenizer = options.get("prompt_tokenizer") or getattr(backbone, "name_or_path", None)
        if not text or not tokenizer:
            raise ValueError("prompt: prompt_init='text' needs options['prompt_init_text'] and a tokenizer "
                             "(options['prompt_tokenizer'] or a backbone loaded from a path)")
        extra = {"prompt_tuning_init_text": text, "tokenizer_name_or_path": str(tokenizer)}
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=int(option(options, "num_virtual_tokens", 20)),
                              prompt_tuning_init=INITS[init], num_transformer_submodules=1, **extra)


def build(backbone: nn.Module, head: HeadSpec | None, options: dict[str, Any]) -> nn.Module:
    if head is None:
        require_lm(backbone, "prompt")
        return TextToText(get_peft_model(backbone, prompt_config(backbone, lm_task_type(backbone), options)))
    body = base_model(backbone)
    hidden = body.config.hidden_size
    peft_body = get_peft_model(body, prompt_config(backbone, TaskType.FEATURE_EXTRACTION, options))
    return SequenceClassifier(SegmentAwarePrompt(peft_body),
                              ClassificationHead(hidden, head.num_labels, head.pooling, head.dropout))


METHOD = Method(
    name="prompt",
    help="prompt tuning (peft): learn num_virtual_tokens soft input embeddings, plus the head",
    default_lr=3e-2,
    build=build,
    backbone_backprop=True,
)
