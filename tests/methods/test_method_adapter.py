"""Houlsby bottleneck adapters: identity at init, only adapters + layer norms + head train."""

import copy
import math

import pytest
import torch
from transformers import (AutoModel, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config,
                          T5ForConditionalGeneration)

from readapt.methods import HeadSpec, count_parameters, get_method
from readapt.methods.adapter import AdapterWrapped, is_norm


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def tiny_t5(ff: str = "relu") -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                               pad_token_id=0, feed_forward_proj=ff))


def batch():
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


def norm_parameter_names(model) -> set[str]:
    return {f"{m}.{p}" for m, module in model.named_modules() if is_norm(module)
            for p, _ in module.named_parameters(recurse=False)}


def test_placement_and_trainable_set():
    model = get_method("adapter").build(tiny_bert(), HeadSpec(num_labels=3), {})
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, AdapterWrapped))
    assert wrapped == [f"body.encoder.layer.{i}.{s}" for i in range(2) for s in ("attention.output.dense", "output.dense")]
    adapter = model.body.encoder.layer[0].output.dense.adapter
    assert adapter.down.weight.shape == (64 // 16, 64) and adapter.up.weight.shape == (64, 64 // 16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = norm_parameter_names(model)
    assert "body.embeddings.LayerNorm.weight" in norms and len(norms) == 2 * (1 + 2 * 2)
    assert trainable == {n for n, _ in model.named_parameters() if ".adapter." in n or n.startswith("head.")} | norms
    assert "body.encoder.layer.1.attention.output.dense.adapter.down.weight" in trainable   # stable names
    assert not model.body.encoder.layer[1].attention.output.dense.base.weight.requires_grad

    frozen_norms = get_method("adapter").build(tiny_bert(), HeadSpec(num_labels=3), {"adapter_train_norms": False})
    assert {n for n, p in frozen_norms.named_parameters() if p.requires_grad} == trainable - norms


def test_identity_at_init():
    backbone = tiny_bert().eval()
    plain = copy.deepcopy(backbone)
    model = get_method("adapter").build(backbone, HeadSpec(num_labels=3), {"adapter_reduction": 4}).eval()
    ids, mask = batch()
    with torch.no_grad():
        ours = model.body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        theirs = plain(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(ours) == 3 and all(torch.equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_t5_lm_task(ff):
    backbone = tiny_t5(ff).eval()
    plain = copy.deepcopy(backbone)
    model = get_method("adapter").build(backbone, None, {}).eval()
    wrapped = [n for n, m in model.named_modules() if isinstance(m, AdapterWrapped)]
    assert len(wrapped) == 2 * 2 + 2 * 2            # encoder + decoder: self-attention o, FFN wo
    assert not any("EncDecAttention" in n for n in wrapped)
    ids, mask = batch()
    labels = torch.randint(2, 100, (2, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask, labels=labels).logits,
                                   plain(input_ids=ids, attention_mask=mask, labels=labels).logits, rtol=0, atol=0)
    model.train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".adapter." in n} | norm_parameter_names(model)

    cross = get_method("adapter").build(tiny_t5(ff), None, {"adapter_cross_attention": True})
    assert sum("EncDecAttention" in n for n, m in cross.named_modules() if isinstance(m, AdapterWrapped)) == 2


def test_gpt2_conv1d_projections():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    model = get_method("adapter").build(gpt2, None, {})
    assert sum(isinstance(m, AdapterWrapped) for m in model.modules()) == 4
    ids, mask = batch()
    out = model(input_ids=ids, attention_mask=mask, labels=ids)
    out.loss.backward()
    assert math.isfinite(out.loss.item())


def test_minilm_counts(minilm_path):
    model = get_method("adapter").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2), {})
    trainable, total = count_parameters(model)
    adapters = 6 * 2 * (384 * 24 + 24 + 24 * 384 + 384)
    norms = (1 + 6 * 2) * 2 * 384
    assert trainable == adapters + norms + 384 * 2 + 2
