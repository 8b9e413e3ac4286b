"""Examples -> token ids -> padded tensors. Tokenisation only; no model or training code.

Encoding happens once per split (lists of ints per example, no padding) and padding happens per
batch in :func:`collate`, so each batch is only as long as its longest member -- which matters
for READ, whose cost is dominated by the backbone's single forward pass.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from readapt.data.tasks import DataError, Example, TaskSpec

LABEL_PAD_ID = -100  # ignored by torch's cross-entropy: padded target positions cost nothing
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _tokenize(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list[dict[str, list[int]]]:
    """Batch-tokenise (fast tokenizers are much quicker on lists); pairs as tokenizer(a, b)."""
    if not examples:
        return []
    widths = {len(ex.texts) for ex in examples}
    if widths - {1, 2} or len(widths) > 1:
        raise DataError(f"examples mix or exceed text counts {sorted(widths)}; every example needs "
                        "the same number of texts, one or two")
    columns = list(zip(*(ex.texts for ex in examples)))
    encoded = tokenizer(*(list(c) for c in columns), truncation=True, max_length=max_length)
    keys = [k for k in _TOKEN_KEYS if k in encoded]
    items = [{k: list(encoded[k][i]) for k in keys} for i in range(len(examples))]
    if len(columns) == 2 and getattr(encoded, "is_fast", False):
        # Which text each token of a pair comes from (what pair pooling reads): 1 the first,
        # 2 the second, 0 special tokens. Slow tokenizers cannot say; pair pooling then refuses.
        for i, item in enumerate(items):
            item["segment_ids"] = [0 if s is None else s + 1 for s in encoded.sequence_ids(i)]
    return items


SECOND = "_b"  # key suffix of the second text's fields when a pair is encoded as two sequences


def encode(examples: Sequence[Example], tokenizer: Any, max_length: int,
           separate_pairs: bool = False) -> list[dict[str, Any]]:
    """Encoder-style features per example: token ids, mask, token type ids (if given), which text
    each token comes from (pairs: ``segment_ids``), scalar label.

    ``separate_pairs``: a pair becomes two sequences, each text encoded on its own (as a
    sentence-embedding model was trained to see it; Sentence-BERT's bi-encoder); the second one's
    fields carry the suffix ``_b`` (``input_ids_b``, ...). Single texts are unaffected."""
    if separate_pairs and examples and len(examples[0].texts) == 2:
        firsts = _tokenize(tokenizer, [Example(ex.texts[:1], ex.label) for ex in examples], max_length)
        seconds = _tokenize(tokenizer, [Example(ex.texts[1:], ex.label) for ex in examples], max_length)
        items = [{**a, **{k + SECOND: v for k, v in b.items()}} for a, b in zip(firsts, seconds)]
    else:
        items = _tokenize(tokenizer, examples, max_length)
    for item, ex in zip(items, examples):
        item["labels"] = ex.label
    return items


def task_prefix(spec: TaskSpec) -> str:
    """The T5 task prefix: the short task name, "glue/sst2" -> "sst2"."""
    return spec.name.rsplit("/", 1)[-1]


def text_to_text_input(spec: TaskSpec, example: Example) -> str:
    """T5-paper input format, e.g. "rte sentence1: A man sleeps. sentence2: Someone rests."."""
    if len(example.texts) != len(spec.text_names):
        raise DataError(f"example has {len(example.texts)} texts but task {spec.name!r} expects "
                        f"{len(spec.text_names)} ({', '.join(spec.text_names)}); reload the task data")
    fields = " ".join(f"{name}: {text}" for name, text in zip(spec.text_names, example.texts))
    return f"{task_prefix(spec)} {fields}"


def encode_text_to_text(
    examples: Sequence[Example],
    spec: TaskSpec,
    tokenizer: Any,
    max_length: int,
    target_max_length: int = 8,
) -> list[dict[str, Any]]:
    """Seq2seq features: prefixed input text; ``labels`` = token ids of ``spec.to_target(label)``.

    The original label is kept as ``class_index`` (classification) or ``target_value`` (regression)
    so metrics compare against the true value, not the 0.2-rounded target text.
    """
    if not examples:
        return []
    target_ids = _target_ids(spec, tokenizer, target_max_length)
    sources = [text_to_text_input(spec, ex) for ex in examples]
    inputs = tokenizer(sources, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask") if k in inputs]
    items = []
    for i, ex in enumerate(examples):
        item = {k: list(inputs[k][i]) for k in keys}
        item["labels"] = list(target_ids[spec.to_target(ex.label)])
        if spec.is_regression:
            item["target_value"] = float(ex.label)
        else:
            item["class_index"] = int(ex.label)
        items.append(item)
    return items


def _target_ids(spec: TaskSpec, tokenizer: Any, target_max_length: int) -> dict[str, list[int]]:
    """Token ids of every possible target. A truncated target could never be generated back into
    its class name, so a target longer than ``target_max_length`` is an error, not a truncation."""
    targets = spec.target_texts()
    ids = tokenizer(text_target=targets)["input_ids"]
    for target, tokens in zip(targets, ids):
        if len(tokens) > target_max_length:
            raise DataError(f"target text {target!r} of task {spec.name!r} is {len(tokens)} tokens, more "
                            f"than target_max_length={target_max_length}; raise target_max_length "
                            "or use shorter class names")
    return {target: list(tokens) for target, tokens in zip(targets, ids)}


def collate(items: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest member.

    Padding per key: ``input_ids`` with ``pad_token_id``, list ``labels`` (seq2seq targets) with
    -100, every other sequence (attention mask, token type ids) with 0. Scalar values become a
    LongTensor, or a FloatTensor if any of them is a float (regression labels, target_value).
    """
    if not items:
        raise DataError("cannot collate an empty batch; use a batch size of at least 1")
    keys = list(items[0])
    if any(list(item) != keys for item in items):
        raise DataError("batch items have different keys; encode all examples with the same function")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        if isinstance(values[0], (list, tuple)):
            pad = pad_token_id if key in ("input_ids", "input_ids" + SECOND) else LABEL_PAD_ID if key == "labels" else 0
            longest = max(len(v) for v in values)
            batch[key] = torch.tensor([list(v) + [pad] * (longest - len(v)) for v in values],
                                      dtype=torch.long)
        else:
            array = np.asarray(values)  # python/numpy scalars; any float makes the whole key float
            batch[key] = torch.tensor(array, dtype=torch.float if array.dtype.kind == "f" else torch.long)
    return batch
