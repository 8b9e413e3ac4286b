"""read_top, the hybrid (not READ): READ plus the backbone's top layer(s) trained in place. A fresh
model is READ's fresh model; gradients reach the top layers and nothing below them."""

import pytest
import torch

from tiny_models import tiny_bert, tiny_gpt2
from readapt import ConfigError
from readapt.methods import HeadSpec, get_method


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (3, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def _build(method, layers=3, top_layers=1):
    torch.manual_seed(0)
    backbone = tiny_bert(layers=layers)
    torch.manual_seed(1)
    return get_method(method).build(backbone, HeadSpec(num_labels=2), {"rnn_dim": 8, "top_layers": top_layers})


def test_a_fresh_hybrid_is_reads_fresh_model():
    """The top layer rerun on phi_{N-1} reproduces the backbone's own phi_N: the same logits."""
    read, hybrid = _build("read").eval(), _build("read_top").eval()
    torch.testing.assert_close(hybrid(**_batch()).logits, read(**_batch()).logits)


@pytest.mark.parametrize("top_layers", [1, 2])
def test_gradients_reach_the_top_layers_and_nothing_below(top_layers):
    model = _build("read_top", layers=3, top_layers=top_layers).train()
    torch.nn.init.normal_(model.read.side.out.weight, std=0.1)
    model(**_batch()).loss.backward()
    body = model.read.runner.body
    trained = {f"encoder.layer.{i}." for i in range(3 - top_layers, 3)}
    for name, p in body.named_parameters():
        if any(name.startswith(prefix) for prefix in trained):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert all(p.grad is not None for p in model.read.side.parameters())
    assert model.top.training and not body.embeddings.training  # the trained layers use dropout, the rest not


def test_the_top_layers_train_at_full_fine_tunings_rate():
    model = _build("read_top")
    groups = model.optimizer_groups(3e-3, 0.01)
    top = {id(p) for p in model.top.parameters()}
    rates = {(g["lr"], all(id(p) in top for p in g["params"])) for g in groups if g["params"]}
    assert rates == {(3e-3, False), (get_method("full").default_lr, True)}
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_other_backbones_and_too_many_layers_are_refused():
    with pytest.raises(ConfigError, match="BERT-family encoders .* this backbone is 'gpt2': use --method read"):
        get_method("read_top").build(tiny_gpt2(), HeadSpec(num_labels=2), {"rnn_dim": 8})
    with pytest.raises(ConfigError, match=r"--top-layers 3: this backbone has 3 layers; train 1..2"):
        _build("read_top", layers=3, top_layers=3)
    with pytest.raises(ConfigError, match="for classification and regression"):
        get_method("read_top").build(tiny_bert(), None, {"rnn_dim": 8})
