"""Language-model data from your own files: plain text, or instruction pairs (prompt -> response).

    --task-type causal_lm  --text-column text                      the loss reads every token
    --task-type causal_lm  --prompt-column q --response-column a   one sequence "q a<eos>", the loss
                                                                   reads only the response tokens
    --task-type seq2seq_lm --prompt-column q --response-column a   q is the encoder input, a the target

Files are read by the same strict readers as classification files (:mod:`readapt.data.files`).
Examples are ordinary :class:`Example` s -- ``texts`` is ``(text,)`` or ``(prompt, response)``,
``label`` is unused (0) -- so splitting, fingerprints and --resume treat them like any other task.
Encoding puts -100 in ``labels`` wherever the loss must not look (the prompt, the padding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from readapt.data.files import read_table, shown, table_texts
from readapt.data.tasks import DataError, Example, TaskData, TaskSpec, split_train

TASK_TYPES = ("classification", "causal_lm", "seq2seq_lm")
LM_TASK_TYPES = TASK_TYPES[1:]
LM_METRICS = ("loss", "perplexity")
EXACT_MATCH = "exact_match"
# Exact match is reported where every response of a split is at most this many tokens: short
# answers (labels, numbers, a word) where "all tokens right" is a meaningful score.
EXACT_MATCH_MAX_TOKENS = 8
IGNORE = -100  # label of a position the loss skips (torch's and Hugging Face's convention)


def load_lm_files(
    task_type: str,
    *,
    train_file: str | Path,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_column: str | None = None,
    prompt_column: str | None = None,
    response_column: str | None = None,
    max_train_examples: int | None = None,
    split_seed: int = 0,
) -> TaskData:
    """The files as LM examples; validation is carved from train when not given (tasks.split_train)."""
    columns = lm_columns(task_type, text_column, prompt_column, response_column)
    train_table = read_table(train_file, "train")
    train = _examples(train_table, columns)
    validation = test = None
    if validation_file is not None:
        validation = _examples(read_table(validation_file, "validation"), columns)
    if test_file is not None:
        test = _examples(read_table(test_file, "test"), columns)
    train, carved = split_train(train, carve_validation=validation is None, max_train_examples=max_train_examples,
                                split_seed=split_seed, source=train_table.where)
    metrics = LM_METRICS + ((EXACT_MATCH,) if len(columns) == 2 else ())
    return TaskData(TaskSpec(task_type, None, metrics, columns), train,
                    carved if validation is None else validation, test)


def lm_columns(task_type: str, text_column: str | None, prompt_column: str | None,
               response_column: str | None) -> tuple[str, ...]:
    """(text,) or (prompt, response): the columns an LM task reads; a bad combination is one line."""
    if task_type not in LM_TASK_TYPES:
        raise DataError(f"--task-type {task_type}: LM files need one of {', '.join(LM_TASK_TYPES)}")
    if (prompt_column is None) != (response_column is None):
        given, missing = (("--prompt-column", "--response-column") if response_column is None
                          else ("--response-column", "--prompt-column"))
        raise DataError(f"{given} needs {missing} too: an instruction pair is a prompt and a response column")
    if prompt_column is not None:
        if text_column is not None:
            raise DataError("--text-column is for plain text; with --prompt-column and --response-column drop it")
        if prompt_column == response_column:
            raise DataError(f"--prompt-column and --response-column are both {prompt_column!r}; "
                            "name two different columns")
        return (prompt_column, response_column)
    if task_type == "seq2seq_lm":
        raise DataError("--task-type seq2seq_lm needs an input and a target: pass --prompt-column (the encoder "
                        "input) and --response-column (the target) instead of --text-column")
    return (text_column or "text",)


def _examples(table, columns: tuple[str, ...]) -> list[Example]:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        flags = ("--text-column",) if len(columns) == 1 else ("--prompt-column", "--response-column")
        flag = " / ".join(f for f, c in zip(flags, columns) if c in missing)
        raise DataError(f"{table.where} has no column {', '.join(repr(c) for c in missing)} "
                        f"(columns: {shown(table.columns)}); pass {flag} with the right name")
    return [Example(texts, 0) for texts in table_texts(table, columns)]


# ---- encoding ------------------------------------------------------------------------------------
def encode_lm(examples: Sequence[Example], tokenizer: Any, max_length: int, task_type: str,
              split: str = "train") -> list[dict[str, Any]]:
    """Token ids, attention mask and ``labels`` (-100 where the loss does not look) per example.

    causal_lm, plain text: the text (with the tokenizer's own special tokens) then EOS; every token
    is a label (the model shifts them: position t predicts token t+1).
    causal_lm, pairs: prompt (with special tokens) + response + EOS in one sequence, truncated to
    ``max_length`` from the response's end; labels only on the response and EOS.
    seq2seq_lm: the prompt is the input, the response (the tokenizer's target encoding, EOS
    included) the labels, each truncated to ``max_length``.
    """
    if not examples:
        return []
    pairs = len(examples[0].texts) == 2
    if task_type == "seq2seq_lm":
        sources = tokenizer([ex.texts[0] for ex in examples], truncation=True, max_length=max_length)
        targets = tokenizer(text_target=[ex.texts[1] for ex in examples], truncation=True,
                            max_length=max_length)["input_ids"]
        return [{"input_ids": list(ids), "attention_mask": [1] * len(ids), "labels": list(target)}
                for ids, target in zip(sources["input_ids"], targets)]
    eos = tokenizer.eos_token_id
    firsts = tokenizer([ex.texts[0] for ex in examples])["input_ids"]
    seconds = (tokenizer([ex.texts[1] for ex in examples], add_special_tokens=False)["input_ids"]
               if pairs else [[] for _ in examples])
    items = []
    for number, (first, second) in enumerate(zip(firsts, seconds), start=1):
        first, second = list(first), list(second)
        if not pairs:
            first, second = [], first  # plain text: every token is a target
        elif len(first) >= max_length:
            raise DataError(f"{split} example {number}: its prompt is {len(first)} tokens, which leaves no room "
                            f"for the response within --max-length {max_length}; raise --max-length or "
                            "shorten the prompt")
        if eos is not None and (not second or second[-1] != eos):
            second.append(eos)  # the model learns where a text (or an answer) ends
        ids = (first + second)[:max_length]
        labels = ([IGNORE] * len(first) + second)[:max_length]
        items.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return items


def short_responses(encoded: Sequence[dict[str, Any]]) -> bool:
    """Whether exact match is reported for a split: every response at most EXACT_MATCH_MAX_TOKENS."""
    return bool(encoded) and all(sum(t != IGNORE for t in item["labels"]) <= EXACT_MATCH_MAX_TOKENS
                                 for item in encoded)


def target_tokens(items: Sequence[dict[str, Any]], causal: bool) -> int:
    """How many tokens the loss of ``items`` averages over (a causal LM's first label is never
    predicted): what a data-parallel shard of an LM batch weighs."""
    return sum(sum(t != IGNORE for t in (item["labels"][1:] if causal else item["labels"])) for item in items)
