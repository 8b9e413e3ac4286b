"""LoRA through peft: only lora_ tensors and the head train; B = 0 so training starts at the backbone."""

import copy
import math

import pytest

import torch
from transformers import AutoModel, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from readapt.methods import HeadSpec, count_parameters, get_method


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                               pad_token_id=0))


def batch():
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


def test_trains_only_lora_and_head_on_query_value():
    model = get_method("lora").build(tiny_bert(), HeadSpec(num_labels=3), {"lora_r": 4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    lora = [n for n in trainable if "lora_" in n]
    assert len(lora) == 2 * 2 * 2  # 2 layers x {query, value} x {A, B}
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora} == {"query", "value"}
    a = next(p for n, p in model.named_parameters() if "query.lora_A" in n)
    assert a.shape == (4, 64)


def test_starts_at_the_backbone():
    backbone = tiny_bert().eval()
    plain = copy.deepcopy(backbone)
    model = get_method("lora").build(backbone, HeadSpec(num_labels=3), {}).eval()
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(model.body(input_ids=ids, attention_mask=mask).last_hidden_state,
                           plain(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_seq2seq_lm_task():
    model = get_method("lora").build(tiny_t5(), None, {"lora_r": 2}).train()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids, mask = batch()
    labels = torch.randint(2, 100, (2, 5))
    labels[1, 3:] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 5, 100) and math.isfinite(out.loss.item())
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_minilm_counts(minilm_path):
    model = get_method("lora").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2), {})
    trainable, total = count_parameters(model)
    assert trainable == 6 * 2 * (8 * 384 + 384 * 8) + 384 * 2 + 2   # r=8 on query and value of 6 layers
    assert trainable / total < 0.005


def test_types_without_a_peft_default_need_target_modules():
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    make = lambda: DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=4, hidden_dim=64))
    with pytest.raises(ValueError, match="lora_target_modules"):
        get_method("lora").build(make(), HeadSpec(num_labels=2), {})
    model = get_method("lora").build(make(), HeadSpec(num_labels=2), {"lora_target_modules": ["q_lin", "v_lin"]})
    assert sum("lora_A" in n for n, p in model.named_parameters() if p.requires_grad) == 2
