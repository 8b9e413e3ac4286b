"""Prompt tuning through peft: only the soft prompt and the head train; token type ids survive."""

import math
import warnings

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from readapt.methods import HeadSpec, count_parameters, get_method


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def pair_batch(batch: int = 3, length: int = 10):
    ids = torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    return ids, mask, types * mask


def build(num_labels=3, **options):
    return get_method("prompt").build(tiny_bert(), HeadSpec(num_labels=num_labels), {"num_virtual_tokens": 5, **options})


def test_trains_only_prompt_and_head():
    model = build()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    prompt = [n for n in trainable if not n.startswith("head.")]
    assert len(prompt) == 1 and "prompt_encoder" in prompt[0]
    assert trainable[prompt[0]].shape == (5, 64)


@pytest.mark.parametrize("num_labels", [2, 1])
def test_sentence_pair_batch(num_labels):
    model = build(num_labels).train()
    ids, mask, types = pair_batch()
    labels = torch.tensor([0.5, -1.0, 2.0]) if num_labels == 1 else torch.tensor([0, 1, 1])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Tt]oken type ids.*")  # peft would drop them, warning
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    assert out.logits.shape == (3, num_labels)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    prompt = next(p for n, p in model.named_parameters() if "prompt_encoder" in n)
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def test_output_is_virtual_plus_real_tokens_and_segments_matter():
    model = build().eval()
    ids, mask, types = pair_batch()
    with torch.no_grad():
        with_types = model.body(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        zero_types = model.body(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(types)).last_hidden_state
        peft_path = model.body(input_ids=ids, attention_mask=mask).last_hidden_state   # peft's own forward
    assert with_types.shape == peft_path.shape == (3, 5 + 10, 64)
    assert not torch.allclose(with_types, zero_types)        # token types reach the model
    torch.testing.assert_close(zero_types, peft_path)        # same concatenation as peft's


def test_initialisations(minilm_path):
    random_init = build(prompt_init="random")
    sampled = build(prompt_init="sample_vocab")
    vocab = sampled.body.peft_model.word_embeddings.weight
    prompt = sampled.body.peft_model.prompt_encoder.default.embedding.weight
    assert all((vocab == row).all(1).any() for row in prompt)          # rows are vocabulary embeddings
    r = random_init.body.peft_model.prompt_encoder.default.embedding.weight
    assert not any((random_init.body.peft_model.word_embeddings.weight == row).all(1).any() for row in r)
    with pytest.raises(ValueError, match="prompt_init"):
        build(prompt_init="nonsense")

    text = "classify the sentiment"
    model = get_method("prompt").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2),
                                       {"prompt_init": "text", "prompt_init_text": text, "num_virtual_tokens": 4})
    ids = AutoTokenizer.from_pretrained(minilm_path)(text)["input_ids"][:4]
    peft_model = model.body.peft_model
    torch.testing.assert_close(peft_model.prompt_encoder.default.embedding.weight,
                               peft_model.word_embeddings.weight[ids])
    trainable, total = count_parameters(model)
    assert trainable == 4 * 384 + 384 * 2 + 2


def test_seq2seq_prompt_goes_to_the_encoder_only():
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                             num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0))
    model = get_method("prompt").build(t5, None, {"num_virtual_tokens": 6}).train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert [p.shape for p in trainable.values()] == [(6, 32)]
    ids, mask, _ = pair_batch()
    labels = torch.randint(2, 100, (3, 4))
    labels[0, 2:] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 4, 100) and math.isfinite(out.loss.item())
    out.loss.backward()
    assert next(iter(trainable.values())).grad.abs().sum() > 0


def test_minilm_counts(minilm_path):
    model = get_method("prompt").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2), {})
    trainable, total = count_parameters(model)
    assert trainable == 20 * 384 + 384 * 2 + 2
