"""Ladder Side-Tuning: the backbone is never differentiated; training starts at the linear probe."""

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, T5Config, T5ForConditionalGeneration
from transformers.utils import ModelOutput

from readapt.methods import HeadSpec, count_parameters, get_method
from readapt.methods.classifier import SequenceClassifier


def tiny_bert(hidden: int = 64) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=2 * hidden, vocab_size=100, max_position_embeddings=64))


def batch(num_labels: int = 3, length: int = 10):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    labels = torch.randn(3, generator=g) if num_labels == 1 else torch.randint(0, num_labels, (3,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask, "labels": labels}


def tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (ModelOutput, dict)):
        for v in obj.values():
            yield from tensors(v)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from tensors(v)


def storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def saved_during_forward(model, body, inputs):
    """(saved-for-backward tensors, backbone ladder outputs phi_i, every other backbone activation).

    Every backbone module output is kept alive until the check, so no storage is recycled."""
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, args, out: outputs.append(out)) for m in body.modules()]
    saved = []

    def pack(t):
        saved.append(t)
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**inputs).loss
    finally:
        for h in hooks:
            h.remove()
    hidden = {storage(t) for t in tensors(outputs[-1].hidden_states)}   # the body's own output comes last
    internal = {storage(t) for t in tensors(outputs) if t.numel()} - hidden
    return loss, saved, hidden, internal


def test_trainable_set_and_shapes():
    model = get_method("lst").build(tiny_bert(), HeadSpec(num_labels=3), {})
    assert not any(p.requires_grad for p in model.body.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("body."))
    assert len(model.down) == 3 and len(model.layers) == 2 and model.width == 8
    assert model.up.weight.shape == (64, 8)
    torch.testing.assert_close(model.gates(), torch.full((2,), 0.5))
    assert model.layers[0].self_attn.num_heads == 4       # backbone's head count, d_kv / r
    model.train()
    assert not model.body.training and model.layers[0].training


def test_starts_at_the_linear_probe():
    model = get_method("lst").build(tiny_bert(), HeadSpec(num_labels=3, pooling="cls"), {}).eval()
    probe = SequenceClassifier(model.body, model.head, frozen_body=True).eval()
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, probe(**inputs).logits)


@pytest.mark.parametrize("num_labels", [3, 1])
def test_backbone_never_differentiated(num_labels):
    model = get_method("lst").build(tiny_bert(), HeadSpec(num_labels=num_labels), {}).train()
    loss, saved, hidden, internal = saved_during_forward(model, model.body, batch(num_labels))
    loss.backward()
    assert all(p.grad is None for p in model.body.parameters())
    saved_storages = {storage(t) for t in saved if t.numel()}
    assert saved_storages & internal == set()           # no backbone activation kept for backward ...
    assert saved_storages & hidden                      # ... except the ladder inputs phi_i themselves
    assert saved_storages & {storage(p) for p in model.body.parameters()} == set()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_backprop_method_does_save_backbone_activations():
    """The storage check above is not vacuous: adapters (gradients through the backbone) trip it,
    and keep far more memory for backward than LST."""
    backbone = tiny_bert(hidden=128)
    adapter = get_method("adapter").build(backbone, HeadSpec(num_labels=3), {}).train()
    loss, saved, _, internal = saved_during_forward(adapter, adapter.body, batch(length=32))
    assert {storage(t) for t in saved if t.numel()} & internal
    adapter_bytes = sum({storage(t): t.untyped_storage().nbytes() for t in saved}.values())

    lst = get_method("lst").build(tiny_bert(hidden=128), HeadSpec(num_labels=3), {}).train()
    _, saved, _, _ = saved_during_forward(lst, lst.body, batch(length=32))
    lst_bytes = sum({storage(t): t.untyped_storage().nbytes() for t in saved}.values())
    assert lst_bytes < adapter_bytes / 2.5     # measured: ~3.6x less, ladder inputs phi_i included


def test_refuses_lm_tasks_and_seq2seq():
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                             num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0))
    for backbone, head in ((t5, None), (t5, HeadSpec(num_labels=2)), (tiny_bert(), None)):
        with pytest.raises(ValueError, match="lst supports encoder-only"):
            get_method("lst").build(backbone, head, {})


def test_options():
    model = get_method("lst").build(tiny_bert(), HeadSpec(num_labels=2), {"lst_reduction": 4, "lst_heads": 2})
    assert model.width == 16 and model.layers[0].self_attn.num_heads == 2
    with pytest.raises(ValueError, match="divide"):
        get_method("lst").build(tiny_bert(), HeadSpec(num_labels=2), {"lst_heads": 3})


def test_minilm(minilm_path):
    model = get_method("lst").build(AutoModel.from_pretrained(minilm_path), HeadSpec(num_labels=2), {}).train()
    assert model.width == 48 and model.layers[0].self_attn.num_heads == 12
    trainable, total = count_parameters(model)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("body."))
    assert trainable / total < 0.02
    inputs = batch(2)
    inputs["input_ids"] = inputs["input_ids"] + 1000
    model(**inputs).loss.backward()
    assert all(p.grad is None for p in model.body.parameters())
