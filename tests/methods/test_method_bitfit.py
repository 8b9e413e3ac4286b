"""BitFit: exactly the backbone's bias terms (LayerNorm biases included, pooler excluded) and the head train."""

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from readapt.methods import HeadSpec, count_parameters, get_method


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def expected_trainable(model) -> set[str]:
    return {n for n, _ in model.named_parameters()
            if n.startswith("head.") or (n.endswith("bias") and not n.startswith("body.pooler."))}


def test_trains_exactly_biases_and_head():
    model = get_method("bitfit").build(tiny_bert(), HeadSpec(num_labels=3), {})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(model)
    assert "body.embeddings.LayerNorm.bias" in trainable
    assert "body.encoder.layer.0.attention.self.query.bias" in trainable
    assert "body.encoder.layer.1.output.LayerNorm.bias" in trainable
    assert not any(n.endswith("weight") for n in trainable if not n.startswith("head."))


def test_t5_has_no_bias_so_bitfit_is_refused():
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                             num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0))
    with pytest.raises(ValueError, match="no bias"):
        get_method("bitfit").build(t5, None, {})


def test_minilm_counts(minilm_path):
    model = get_method("bitfit").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2), {})
    trainable, total = count_parameters(model)
    biases = sum(p.numel() for n, p in model.body.named_parameters() if n.endswith("bias") and not n.startswith("pooler."))
    assert trainable == biases + 384 * 2 + 2
    assert trainable / total < 0.002
