"""READ's invariant for every supported backbone type: a fresh READ model (W_out is zero) is its
backbone. Loss and logits must equal the Hugging Face model's own, in fp32 and in bf16, with
padding in the batch; a new entry in SUPPORTED_TYPES is covered here automatically.

Classification is checked against the backbone's own final output (last_hidden_state) read by
the same head; language modelling against the Hugging Face LM's own forward (its loss, and its
logit post-processing: T5's decoder rescaling, Gemma2's final soft-capping, ...)."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from readapt import ReadConfig, get_read_model
from readapt.backbones import SUPPORTED_TYPES, family

# Per-family tiny configs; ``hidden_size`` etc. reach each model's own names through its attribute_map.
TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
TINY_BY_FAMILY = {
    "encoder": dict(TINY, hidden_dim=64),  # hidden_dim: DistilBERT's name for the FFN width
    # Every config carries the other models' logit post-processing too: only a model whose forward
    # reads it applies it (Gemma2's soft-capping, small so that skipping it shows; T5's rescaling).
    "causal": dict(TINY, num_key_value_heads=2, head_dim=8, final_logit_softcapping=2.0),
    "seq2seq": dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, scale_decoder_outputs=True),
}
DTYPES = [torch.float32, torch.bfloat16]


def tiny(model_type: str, lm: bool, dtype: torch.dtype):
    kind = family(model_type)
    config = AutoConfig.for_model(model_type, **TINY_BY_FAMILY[kind])
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM if lm else AutoModel
    torch.manual_seed(0)
    return auto.from_config(config).to(dtype)


def batch():
    """Two rows, the first right-padded."""
    torch.manual_seed(1)
    input_ids = torch.randint(3, 100, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    return input_ids.masked_fill(mask == 0, 0), mask


def test_the_types_the_issue_named_are_covered():
    assert {"mt5", "gemma2", "t5", "gpt2", "llama", "bert"} <= set(SUPPORTED_TYPES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("model_type", [t for t in SUPPORTED_TYPES if family(t) != "seq2seq"])
def test_fresh_read_classifier_reads_the_backbones_own_final_state(model_type, dtype):
    backbone = tiny(model_type, lm=False, dtype=dtype)
    input_ids, mask = batch()
    labels = torch.tensor([1, 0])
    for pooling in ("mean", "last" if family(model_type) == "causal" else "cls"):
        model = get_read_model(backbone, ReadConfig(num_labels=2, pooling=pooling, rnn_dim=8)).eval()
        with torch.no_grad():
            final = backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
            reference = model.head(final.float(), mask)  # the same head on the backbone's own output
            out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        torch.testing.assert_close(out.logits, reference, rtol=0, atol=0, msg=f"{model_type} {pooling}")
        torch.testing.assert_close(out.loss, model.head.loss(reference, labels), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("model_type", [t for t in SUPPORTED_TYPES if family(t) != "encoder"])
def test_fresh_read_language_model_is_the_hugging_face_model(model_type, dtype):
    backbone = tiny(model_type, lm=True, dtype=dtype)
    input_ids, mask = batch()
    if family(model_type) == "seq2seq":  # targets of two lengths, and of one (every position scored)
        task, label_sets = "SEQ_2_SEQ_LM", [torch.tensor([[5, 6, 7, -100], [8, 9, 10, 11]]),
                                            torch.tensor([[5, 6, 7, 8], [8, 9, 10, 11]])]
    else:
        task, label_sets = "CAUSAL_LM", [input_ids.masked_fill(mask == 0, -100)]
    model = get_read_model(backbone, ReadConfig(task_type=task, rnn_dim=8))
    for labels in label_sets:
        with torch.no_grad():
            reference = backbone(input_ids=input_ids, attention_mask=mask, labels=labels)
            out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
        assert out.logits.dtype == reference.logits.dtype
        torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=0)
        # Hugging Face computes some losses on half-precision logits; ours is always on fp32 logits.
        torch.testing.assert_close(out.loss, reference.loss.float(), **({} if dtype == torch.float32 else
                                                                         dict(rtol=1e-2, atol=1e-2)))
