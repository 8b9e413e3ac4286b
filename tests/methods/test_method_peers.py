"""Properties every peer fine-tuning method (bitfit, lora, prompt, adapter, lst) must have."""

import math
import warnings

import pytest
import torch
from transformers import BertConfig, BertModel

from readapt.methods import HeadSpec, available_methods, count_parameters, get_method

PEERS = ["bitfit", "lora", "prompt", "adapter", "lst"]
DEFAULT_LR = {"bitfit": 1e-3, "lora": 5e-4, "prompt": 3e-2, "adapter": 1e-3, "lst": 3e-3}
OPTIONS = {"prompt": {"num_virtual_tokens": 4}}


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=64))


def pair_batch(num_labels: int, batch: int = 3, length: int = 10):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[:, 3:] = 1
    labels = torch.randn(batch, generator=g) if num_labels == 1 else torch.randint(0, num_labels, (batch,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask, "labels": labels}


def build(name: str, num_labels: int, pooling: str = "mean"):
    return get_method(name).build(tiny_bert(), HeadSpec(num_labels=num_labels, pooling=pooling), dict(OPTIONS.get(name, {})))


@pytest.mark.parametrize("name", PEERS)
def test_registered(name):
    method = get_method(name)
    assert name in available_methods()
    assert method.name == name
    assert method.default_lr == DEFAULT_LR[name]
    assert method.backbone_backprop == (name != "lst")
    assert method.help


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("name", PEERS)
def test_forward_backward(name, num_labels, pooling):
    model = build(name, num_labels, pooling).train()
    batch = pair_batch(num_labels)
    out = model(**batch)
    assert out.logits.shape == (3, num_labels)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trainable)
    # Every trained tensor reaches the loss (no trainable-but-unused parameters inflating counts).
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None] == []


@pytest.mark.parametrize("name", PEERS)
def test_optimizer_steps_change_only_trainable_parameters(name):
    model = build(name, 3).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    for _ in range(2):  # two steps: zero-initialised up-projections unlock the rest on step 2
        optimizer.zero_grad()
        model(**pair_batch(3)).loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed - trainable == set()                     # frozen tensors bit-identical
    assert trainable - changed == set()                     # and every trained tensor moved
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    t, total = count_parameters(model)
    assert 0 < t < total


@pytest.mark.parametrize("name", PEERS)
def test_lm_task_on_encoder_only_backbone_is_refused(name):
    with pytest.raises(ValueError, match=name):
        get_method(name).build(tiny_bert(), None, {})


@pytest.mark.parametrize("name", PEERS)
def test_no_peft_token_type_warning(name):
    """Sentence-pair inputs keep their segments: nothing in the stack may drop token_type_ids."""
    model = build(name, 3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Tt]oken type ids.*")
        model(**pair_batch(3))


@pytest.mark.parametrize("name", ["bitfit", "lora", "prompt", "adapter"])
def test_causal_lm_task(name):
    """head None on a causal LM trains the model's own LM loss (GPT-2 has biases, so BitFit works)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    model = get_method(name).build(gpt2, None, dict(OPTIONS.get(name, {}))).train()
    batch = pair_batch(3)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    t, total = count_parameters(model)
    assert 0 < t < total / 5


@pytest.mark.parametrize("name", PEERS)
def test_decoder_only_classification(name):
    """Decoder-only backbones with a head (train.py: last-token pooling, left padding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    head = HeadSpec(num_labels=3, pooling="last")
    if name == "lst":
        with pytest.raises(ValueError, match="encoder-only"):
            get_method(name).build(gpt2, head, {})
        return
    model = get_method(name).build(gpt2, head, dict(OPTIONS.get(name, {}))).train()
    ids = torch.randint(5, 100, (3, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
    assert out.logits.shape == (3, 3) and math.isfinite(out.loss.item())
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", PEERS)
def test_unset_options_mean_defaults(name):
    """train.py passes every knob; None (an unset flag) must mean the method's default."""
    options = {"lora_r": None, "num_virtual_tokens": None, "rnn_dim": None, "adapter_reduction": None,
               "lst_reduction": None}
    a = count_parameters(get_method(name).build(tiny_bert(), HeadSpec(num_labels=2), options))
    b = count_parameters(get_method(name).build(tiny_bert(), HeadSpec(num_labels=2), {}))
    assert a == b
