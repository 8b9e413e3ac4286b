"""The READ invariants: the backbone is never differentiated, a fresh model is the backbone,
the Joiner is the first-order cross-attention effect, size is depth-free, save/load is exact."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel

from tiny_models import tiny_bert, tiny_gpt2, tiny_llama, tiny_t5
from readapt import ConfigError, ReadConfig, ReadModel, get_read_model
from readapt.config import WEIGHTS_NAME
from readapt.model import SIDE_CHUNK_TOKENS


@pytest.fixture(scope="module")
def minilm(minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    batch = tokenizer(["a gripping, beautifully acted film", "dull and far too long", "fine"],
                      padding=True, return_tensors="pt")
    return minilm_path, batch


def _load(path):
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def _saved_tensors(fn):
    """Every tensor autograd saves for backward while fn() runs, plus fn's result."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return saved, result


def _storages(tensors):
    return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}


def test_backbone_gets_no_gradient_and_saves_nothing(minilm):
    path, batch = minilm
    model = get_read_model(_load(path), ReadConfig(rnn_dim=32))
    model.train()
    inside, saved_inside = [False], []
    backbone = model.runner.body
    backbone.register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
    backbone.register_forward_hook(lambda *a: inside.__setitem__(0, False))

    def pack(t):
        if inside[0]:
            saved_inside.append(t)
        return t

    saved, out = _saved_tensors(lambda: model(**batch, labels=torch.tensor([1, 0, 1])))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch, labels=torch.tensor([1, 0, 1]))
    out.loss.backward()
    assert saved_inside == []  # the backbone ran outside autograd
    assert all(p.grad is None for p in model.base_model.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    # Nothing saved for backward is (a view of) a backbone weight: no backbone layer is in the graph.
    backbone_storage = _storages(model.base_model.parameters())
    side_storage = _storages(p for n, p in model.named_parameters() if p.requires_grad)
    assert not _storages(saved) & backbone_storage
    # All saved bytes belong to the side network and head: their own weights, or activations
    # no larger than the side network's inputs and states (L x tokens x (d + gates)).
    activations = [t for t in saved if t.untyped_storage().data_ptr() not in side_storage]
    tokens = int(batch["attention_mask"].sum())
    # per token and layer: the gathered state, its norm and the RNN's gates and states are a
    # handful of d-sized fp32 vectors (16 is generous; a backbone layer would save far more).
    per_token_bound = 6 * 16 * 384 * 4
    assert sum(t.numel() * t.element_size() for t in activations) < tokens * per_token_bound


def test_saved_activation_bytes_far_below_full_fine_tuning(minilm):
    path, batch = minilm
    read = get_read_model(_load(path), ReadConfig())
    full = _load(path)
    read_saved, _ = _saved_tensors(lambda: read(**batch, labels=torch.tensor([1, 0, 1])))
    full_saved, _ = _saved_tensors(lambda: full(**batch, labels=torch.tensor([1, 0, 1])))
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
    assert nbytes(read_saved) < 0.25 * nbytes(full_saved)


def test_fresh_model_is_exactly_the_frozen_backbone(minilm):
    path, batch = minilm
    backbone = _load(path)
    with torch.no_grad():
        reference = backbone.bert(**batch, output_hidden_states=True).hidden_states[-1]
    model = get_read_model(backbone, ReadConfig(pooling="mean"))
    states = model.backbone_states(**batch)
    read = batch["attention_mask"].bool()
    assert torch.equal(model.corrected_final_state(states, read), reference)


def test_side_network_size_does_not_grow_with_depth():
    shallow = get_read_model(tiny_bert(layers=6, hidden=64), ReadConfig(rnn_dim=16, num_labels=2))
    deep = get_read_model(tiny_bert(layers=24, hidden=64), ReadConfig(rnn_dim=16, num_labels=2))
    assert shallow.get_nb_trainable_parameters()[0] == deep.get_nb_trainable_parameters()[0]
    assert shallow.get_nb_trainable_parameters()[1] < deep.get_nb_trainable_parameters()[1]


def test_save_load_reproduces_logits_bit_for_bit_and_file_is_small(minilm, tmp_path):
    path, batch = minilm
    torch.manual_seed(0)
    model = get_read_model(_load(path), ReadConfig())
    with torch.no_grad():  # a trained-looking side network: non-zero W_out
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    before = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).stat().st_size < 2 * 1024 * 1024
    loaded = ReadModel.from_pretrained(_load(path), tmp_path).eval()
    assert torch.equal(loaded(**batch).logits, before)
    assert loaded.config.backbone_model_type == "bert" and loaded.config.backbone_num_layers == 6


def test_loading_onto_another_backbone_or_config_is_refused(tmp_path):
    model = get_read_model(tiny_bert(layers=2), ReadConfig(rnn_dim=8, num_labels=2))
    model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="another backbone.*num_layers 2 vs 3"):
        ReadModel.from_pretrained(tiny_bert(layers=3), tmp_path)
    with pytest.raises(ConfigError, match="another backbone.*hidden_size"):
        ReadModel.from_pretrained(tiny_bert(layers=2, hidden=64), tmp_path)
    other = get_read_model(tiny_bert(layers=2), ReadConfig(rnn_dim=16, num_labels=2))
    with pytest.raises(ConfigError, match="another config"):
        other.load_trainable(tmp_path / WEIGHTS_NAME)
    (tmp_path / WEIGHTS_NAME).write_bytes((tmp_path / WEIGHTS_NAME).read_bytes()[:100])
    with pytest.raises(ConfigError, match="truncated or corrupted"):
        ReadModel.from_pretrained(tiny_bert(layers=2), tmp_path)


def test_unsupported_model_type_is_one_line_naming_supported():
    from transformers import ViTConfig, ViTModel

    with pytest.raises(ValueError, match=r"model type 'vit' is not supported; supported: .*bert.*t5") as err:
        get_read_model(ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                          intermediate_size=64, image_size=8, patch_size=4)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("targets", [4, 1])
def test_t5_joiner_matches_finite_difference_of_real_cross_attention(targets):
    """c_i = O.A.(d_enc V) against the real module with the encoder output's value path perturbed,
    in both orders cross_value_path computes it: 4 target tokens project first, 1 mixes first."""
    from readapt.backbones.seq2seq import mix_first

    assert mix_first(t_enc=6, t_dec=targets, d=32, heads=4, width=8) == (targets == 1)
    model = get_read_model(tiny_t5().double(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8))
    runner = model.runner
    torch.manual_seed(0)
    input_ids, labels = torch.randint(2, 100, (2, 6)), torch.randint(2, 100, (2, targets))
    states = runner.run(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    encoder_out = states.encoder_hidden_states[-1]
    direction = torch.randn_like(encoder_out)
    eps = 1e-4
    for layer in range(1, runner.num_layers + 1):
        attn = runner.cross_attention(layer)
        captured = {}
        pre = attn.register_forward_pre_hook(lambda m, a, k: captured.update(args=a, kwargs=dict(k)), with_kwargs=True)
        with torch.no_grad():
            runner.run(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
        pre.remove()
        kwargs = {**captured["kwargs"], "cache": None}
        with torch.no_grad():
            base = attn(*captured["args"], **kwargs)[0]
            keys = attn.k(kwargs["key_value_states"])
            hold = attn.k.register_forward_hook(lambda m, a, out: keys)  # value path only
            kwargs["key_value_states"] = kwargs["key_value_states"] + eps * direction
            moved = attn(*captured["args"], **kwargs)[0]
            hold.remove()
        finite_difference = (moved - base) / eps
        joiner_term = runner.cross_value_path(layer, direction, states.cross_attentions[layer - 1])
        torch.testing.assert_close(joiner_term, finite_difference, rtol=1e-6, atol=1e-8)


def test_t5_read_trains_encoder_side_through_the_joiner():
    model = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8))
    input_ids, labels = torch.randint(2, 100, (2, 6)), torch.randint(2, 100, (2, 3))
    labels[1, 2] = -100
    with torch.no_grad():
        reference = model.base_model(input_ids=input_ids, labels=labels).logits
        fresh = model(input_ids=input_ids, labels=labels).logits
    torch.testing.assert_close(fresh, reference)  # zero W_out: exactly the backbone
    torch.nn.init.normal_(model.side.out.weight, std=0.1)  # as after a first update
    torch.nn.init.normal_(model.encoder_side.out.weight, std=0.1)
    out = model(input_ids=input_ids, labels=labels)
    out.loss.backward()
    assert model.encoder_side.rnn.weight_ih_l0.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.base_model.parameters())


def test_side_chunking_is_on_by_default_and_leaves_t5_training_unchanged():
    """Both side networks of an encoder-decoder chunk their tokens; loss and gradients do not move."""
    torch.manual_seed(0)
    input_ids, labels = torch.randint(2, 100, (3, 7)), torch.randint(2, 100, (3, 5))
    runs = []
    for chunk in (None, 4):  # 21 encoder tokens, 15 decoder tokens: several chunks each, one partial
        torch.manual_seed(1)
        model = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8))
        assert model.side.chunk_tokens == model.encoder_side.chunk_tokens == SIDE_CHUNK_TOKENS
        model.set_side_chunk_tokens(chunk)
        assert model.side.chunk_tokens == model.encoder_side.chunk_tokens == chunk
        torch.nn.init.normal_(model.side.out.weight, std=0.1)
        torch.nn.init.normal_(model.encoder_side.out.weight, std=0.1)
        out = model(input_ids=input_ids, labels=labels)
        out.loss.backward()
        runs.append((out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss, grads), (chunked_loss, chunked_grads) = runs
    torch.testing.assert_close(chunked_loss, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_side_chunk_size_must_be_a_positive_count(bad):
    model = get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2))
    with pytest.raises(ValueError, match="positive number of tokens"):
        model.set_side_chunk_tokens(bad)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_decoder_only_causal_lm_and_classification(make):
    input_ids = torch.randint(2, 100, (2, 5))
    lm = get_read_model(make(), ReadConfig(task_type="CAUSAL_LM", rnn_dim=8))
    with torch.no_grad():
        reference = lm.base_model(input_ids=input_ids, labels=input_ids)
    out = lm(input_ids=input_ids, labels=input_ids)
    torch.testing.assert_close(out.loss, reference.loss)  # fresh READ = the backbone's own LM loss
    out.loss.backward()
    assert all(p.grad is None for p in lm.base_model.parameters())
    clf = get_read_model(make().base_model, ReadConfig(num_labels=3, rnn_dim=8))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = clf(input_ids=input_ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert clf.head.pooling == "last" and out.logits.shape == (2, 3)
    out.loss.backward()


def test_task_type_must_fit_the_backbone():
    with pytest.raises(ConfigError, match="encoder-decoder"):
        get_read_model(tiny_bert(), ReadConfig(task_type="SEQ_2_SEQ_LM"))
    with pytest.raises(ConfigError, match="SEQ_2_SEQ_LM"):
        get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_CLS"))
    with pytest.raises(ConfigError, match="layers"):
        get_read_model(tiny_bert(layers=2), ReadConfig(layers=[1, 5], num_labels=2))


def test_subset_of_layers_and_lstm():
    model = get_read_model(tiny_bert(layers=4), ReadConfig(layers=[0, 2, 4], rnn_type="lstm", rnn_dim=8, num_labels=2))
    out = model(input_ids=torch.randint(2, 100, (2, 5)), labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert model.layers == [0, 2, 4]


def test_a_layer_stride_reads_every_kth_layer_down_from_the_last():
    """layer_stride=k is layers=[..., N-k, N] spelt by depth: the same network and the same result,
    the final layer (the one corrected) always read; T5's encoder and decoder stacks both thinned."""
    strided = get_read_model(tiny_bert(layers=6), ReadConfig(layer_stride=2, rnn_dim=8, num_labels=2))
    listed = get_read_model(tiny_bert(layers=6), ReadConfig(layers=[2, 4, 6], rnn_dim=8, num_labels=2))
    assert strided.layers == listed.layers == [2, 4, 6]
    torch.nn.init.normal_(strided.side.out.weight, std=0.1)  # a correction that shows
    listed.load_state_dict(strided.state_dict())
    ids = torch.randint(2, 100, (2, 5))
    torch.testing.assert_close(strided.eval()(input_ids=ids).logits, listed.eval()(input_ids=ids).logits)
    t5 = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", layer_stride=2, rnn_dim=8))
    assert (t5.encoder_layers, t5.layers) == ([2], [1, 3])  # 2 encoder and 3 decoder layers
    with pytest.raises(ConfigError, match="give one of them"):
        ReadConfig(layers=[2], layer_stride=2)


# -- sizes checked before anything is allocated (issue 12, item 6) ----------------------------------------
@pytest.mark.parametrize("make, config", [
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3)),
    (tiny_bert, ReadConfig(rnn_dim=5, rnn_type="gru", num_labels=1)),
    (tiny_gpt2, ReadConfig(rnn_dim=7, rnn_type="rnn", num_labels=2)),
    (tiny_gpt2, ReadConfig(task_type="CAUSAL_LM", rnn_dim=6)),
    (tiny_llama, ReadConfig(task_type="CAUSAL_LM", rnn_dim=6)),
    (tiny_t5, ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=4)),
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3, pooling="pair", mixing="attention")),
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3, joiner="projection")),
    (tiny_llama, ReadConfig(task_type="CAUSAL_LM", rnn_dim=6, joiner="projection", rnn_type="gru")),
    (tiny_t5, ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=4, joiner="projection")),
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3, bidirectional=True)),
    (tiny_t5, ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=4, bidirectional=True, joiner="projection")),
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3, pooling="attention")),
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=3, mixing="rnn")),
    (tiny_bert, ReadConfig(rnn_dim=6, num_labels=2, mixing="rnn", rnn_type="gru", joiner="projection")),
])
def test_trainable_parameter_estimate_is_exact(make, config):
    from readapt.model import trainable_parameters

    model = get_read_model(make(), config)
    num_labels = model.head.num_labels if model.head is not None else None
    estimate = trainable_parameters(config, model.runner.hidden_size, model.runner.norm, model.runner.family,
                                    num_labels)
    assert estimate == model.get_nb_trainable_parameters()[0]


def _no_allocation(monkeypatch):
    import readapt.model

    def refuse(*args, **kwargs):
        raise AssertionError("a side network or head was built before the config was checked")

    monkeypatch.setattr(readapt.model, "SideNetwork", refuse)
    monkeypatch.setattr(readapt.model, "ClassificationHead", refuse)


def test_side_network_over_the_size_cap_is_refused_before_allocation(monkeypatch):
    import readapt.model

    monkeypatch.setattr(readapt.model, "MAX_TRAINABLE_BYTES", 10_000)
    _no_allocation(monkeypatch)
    with pytest.raises(ConfigError) as err:
        get_read_model(tiny_bert(), ReadConfig(rnn_dim=64, num_labels=2))
    message = str(err.value)
    assert message.startswith("this READ config would train 27,266 parameters (106.5 KiB in fp32) on a 32-wide "
                              "backbone, above readapt's limit of 9.8 KiB; lower rnn_dim (64) or num_labels (2)")


def test_from_pretrained_validates_before_allocating(tmp_path, monkeypatch):
    import json

    from readapt.config import CONFIG_NAME

    get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2)).save_pretrained(tmp_path)
    backbone = tiny_bert()
    _no_allocation(monkeypatch)
    for change, words in [({"num_labels": 10**8}, "num_labels=100000000"), ({"rnn_dim": 65536}, "rnn_dim=65536"),
                          ({"layers": [1, 9]}, "the backbone has layers 0..2"),
                          ({"backbone_num_layers": 5}, "another backbone")]:
        data = json.loads((tmp_path / CONFIG_NAME).read_text())
        (tmp_path / CONFIG_NAME).write_text(json.dumps({**data, **change}))
        with pytest.raises(ConfigError, match=words):
            ReadModel.from_pretrained(backbone, tmp_path)
        (tmp_path / CONFIG_NAME).write_text(json.dumps(data))


def test_backbone_num_labels_is_bounded_too(monkeypatch):
    backbone = tiny_bert()
    # A hostile config.json; ReadConfig(num_labels=None) reads it. (Patched on the class: setting
    # num_labels on a transformers config builds an id2label dict of 10**8 entries, ~8 GB.)
    monkeypatch.setattr(type(backbone.config), "num_labels", property(lambda self: 10**8), raising=False)
    _no_allocation(monkeypatch)
    with pytest.raises(ConfigError, match="num_labels=100000000"):
        get_read_model(backbone, ReadConfig(rnn_dim=8))


# -- the frozen pass runs with grad mode off, in every family (issue 12, item 10) ---------------------------
@pytest.mark.parametrize("make, config", [
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=2)),
    (tiny_gpt2, ReadConfig(rnn_dim=8, num_labels=2)),
    (tiny_gpt2, ReadConfig(task_type="CAUSAL_LM", rnn_dim=8)),
    (tiny_t5, ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8)),
], ids=["encoder", "causal-classifier", "causal-lm", "seq2seq"])
def test_every_backbone_module_runs_with_grad_mode_off(make, config):
    """Freezing alone already keeps gradients off the backbone's weights; what makes READ cheap is
    that the frozen pass records no graph at all. A hook on every backbone submodule sees the grad
    mode it actually runs under during a READ training step."""
    model = get_read_model(make(), config).train()
    names = {module: name or "(root)" for name, module in model.base_model.named_modules()}
    # The backbone's frozen LM head is the one exception, by design: it reads the *corrected* final
    # state, so the loss differentiates through it (never through a backbone layer).
    lm_head = model.base_model.get_output_embeddings() if config.task_type != "SEQ_CLS" else None
    seen, with_grad = set(), []

    def record(module, *_):
        seen.add(module)
        if torch.is_grad_enabled() and module is not lm_head:
            with_grad.append(names[module])

    handles = [m.register_forward_pre_hook(record) for m in names]
    handles += [m.register_forward_hook(record) for m in names]
    torch.manual_seed(0)
    ids = torch.randint(2, 100, (2, 6))
    labels = {"SEQ_CLS": torch.tensor([0, 1]), "CAUSAL_LM": ids, "SEQ_2_SEQ_LM": torch.randint(2, 100, (2, 3))}
    try:
        with torch.enable_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels[config.task_type]).loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) > 10  # the hooks fired: the check is not vacuous
    assert with_grad == [], f"backbone modules ran with grad mode on: {with_grad[:5]}"


# -- the projecting Joiner (a cheaper side network) ---------------------------------------------------------
@pytest.mark.parametrize("make, config", [
    (tiny_bert, dict(num_labels=2)),
    (tiny_gpt2, dict(task_type="CAUSAL_LM")),
    (tiny_llama, dict(task_type="CAUSAL_LM")),
    (tiny_t5, dict(task_type="SEQ_2_SEQ_LM")),
])
def test_projecting_joiner_keeps_the_invariants(make, config):
    """A fresh model is still the backbone, the side network trains, the backbone gets nothing."""
    torch.manual_seed(0)
    input_ids = torch.randint(2, 100, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    labels = {"SEQ_CLS": torch.tensor([0, 1]), "CAUSAL_LM": input_ids,
              "SEQ_2_SEQ_LM": torch.randint(2, 100, (2, 4))}[config.get("task_type", "SEQ_CLS")]
    kwargs = dict(input_ids=input_ids, attention_mask=mask, labels=labels)
    plain = get_read_model(make(), ReadConfig(rnn_dim=8, **config))
    projected = get_read_model(make(), ReadConfig(rnn_dim=8, joiner="projection", **config))
    assert projected.side.rnn.input_size == 8            # the RNN runs at width r, not d
    if plain.head is not None:                           # the same (random) head on both
        projected.head.load_state_dict(plain.head.state_dict())
    with torch.no_grad():  # eval: no head dropout
        torch.testing.assert_close(projected.eval()(**kwargs).logits, plain.eval()(**kwargs).logits, rtol=0, atol=0)
    projected.train()
    for side in [m for m in projected.modules() if m.__class__.__name__ == "SideNetwork"]:
        torch.nn.init.normal_(side.out.weight, std=0.1)  # as after a first update
    projected(**kwargs).loss.backward()
    assert projected.side.joiner.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in projected.base_model.parameters())


def test_projecting_joiner_is_cheaper_than_the_papers():
    """Fewer trainable parameters and fewer saved activation bytes for the same backbone and r."""
    input_ids = torch.randint(2, 100, (4, 20))
    sizes, saved = {}, {}
    for joiner in ("norm", "projection"):
        model = get_read_model(tiny_bert(hidden=64), ReadConfig(rnn_dim=16, num_labels=2, joiner=joiner))
        model.set_side_chunk_tokens(None)
        sizes[joiner] = model.get_nb_trainable_parameters()[0]
        tensors, _ = _saved_tensors(lambda: model(input_ids=input_ids, labels=torch.tensor([0, 1, 0, 1])))
        params = _storages(model.parameters())
        saved[joiner] = sum(t.numel() * t.element_size() for t in tensors
                            if t.untyped_storage().data_ptr() not in params)
    assert sizes["projection"] < sizes["norm"]
    assert saved["projection"] < 0.75 * saved["norm"]


def _nonzero_correction(model):
    with torch.no_grad():
        for module in (model.side, getattr(model, "encoder_side", None)):
            if module is not None:
                torch.nn.init.normal_(module.out.weight, std=0.5)  # as after training
    return model


def test_disable_adapter_classifies_the_uncorrected_state_and_restores_the_correction():
    model = _nonzero_correction(get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2))).eval()
    assert model.get_base_model() is model.base_model
    batch = {"input_ids": torch.randint(2, 100, (2, 6)), "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])}
    with torch.no_grad():
        corrected = model(**batch).logits
        with model.disable_adapter():
            plain = model(**batch).logits
        assert torch.equal(model(**batch).logits, corrected)  # back on after the block
        with pytest.raises(RuntimeError), model.disable_adapter():
            raise RuntimeError("inside the block")
        assert model.correction_enabled
        assert not torch.allclose(plain, corrected)
        model.side.out.weight.zero_()  # no correction at all: the same head on the backbone's state
        torch.testing.assert_close(model(**batch).logits, plain, rtol=0, atol=0)


@pytest.mark.parametrize("make,task", [(tiny_gpt2, "CAUSAL_LM"), (tiny_t5, "SEQ_2_SEQ_LM")])
def test_disable_adapter_gives_the_lm_backbones_own_logits(make, task):
    model = _nonzero_correction(get_read_model(make(), ReadConfig(task_type=task, rnn_dim=8)))
    input_ids, labels = torch.randint(2, 100, (2, 5)), torch.randint(2, 100, (2, 3 if task == "SEQ_2_SEQ_LM" else 5))
    with torch.no_grad():
        reference = model.get_base_model()(input_ids=input_ids, labels=labels).logits
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=input_ids, labels=labels).logits, reference)
        assert not torch.allclose(model(input_ids=input_ids, labels=labels).logits, reference)


# -- a half-precision backbone: the side network and head still train in fp32 ---------------------
@pytest.mark.parametrize("make, task", [(tiny_bert, "SEQ_CLS"), (lambda: tiny_gpt2().transformer, "SEQ_CLS"),
                                        (tiny_gpt2, "CAUSAL_LM"), (tiny_llama, "CAUSAL_LM"),
                                        (tiny_t5, "SEQ_2_SEQ_LM")],
                         ids=["bert", "gpt2-cls", "gpt2-lm", "llama-lm", "t5"])
def test_bf16_backbone_trains_an_fp32_side_network(make, task):
    backbone = make().to(torch.bfloat16)
    frozen = {n: p.clone() for n, p in backbone.named_parameters()}
    model = get_read_model(backbone, ReadConfig(task_type=task, num_labels=2 if task == "SEQ_CLS" else None,
                                                rnn_dim=8))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    for side in [m for m in model.modules() if hasattr(m, "rnn")]:
        torch.nn.init.normal_(side.out.weight, std=0.1)  # as after a first update: gradients reach every part
    torch.manual_seed(0)
    input_ids, mask = torch.randint(2, 100, (2, 6)), torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    labels = {"SEQ_CLS": torch.tensor([0, 1]), "CAUSAL_LM": input_ids.masked_fill(mask == 0, -100),
              "SEQ_2_SEQ_LM": torch.randint(2, 100, (2, 3))}[task]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert "side.rnn.weight_ih_l0" in moved and "side.out.weight" in moved
    if task == "SEQ_2_SEQ_LM":  # through the Joiner's cross-attention value path, in fp32
        assert "encoder_side.rnn.weight_ih_l0" in moved
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainable)
    assert all(p.dtype == torch.bfloat16 and p.grad is None and torch.equal(p, frozen[n])
               for n, p in backbone.named_parameters())


def test_t5_loss_and_gradients_are_the_same_when_every_target_position_is_scored():
    """Targets of one length take _lm_output's one-pass head (its logits serve the loss); a padded
    column (-100, nothing scored) takes the two-pass one. Same loss, same gradients."""
    model = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8))
    torch.nn.init.normal_(model.side.out.weight, std=0.1)
    torch.nn.init.normal_(model.encoder_side.out.weight, std=0.1)
    input_ids = torch.randint(2, 100, (2, 6))
    labels = torch.tensor([[5, 6, 7], [8, 9, 10]])
    results = []
    for targets in (labels, torch.cat([labels, torch.full((2, 1), -100)], 1)):
        model.zero_grad()
        out = model(input_ids=input_ids, labels=targets)
        out.loss.backward()
        results.append((out.loss.detach(), out.logits[:, :3], {n: p.grad.clone() for n, p in model.named_parameters()
                                                                if p.grad is not None}))
    (loss, logits, grads), (padded_loss, padded_logits, padded_grads) = results
    torch.testing.assert_close(loss, padded_loss)
    torch.testing.assert_close(logits, padded_logits)
    assert grads.keys() == padded_grads.keys() and len(grads) > 4
    for name, grad in grads.items():
        torch.testing.assert_close(grad, padded_grads[name], msg=name)


@pytest.mark.parametrize("mixing", ["none", "attention", "rnn"])
def test_mean_pooling_maps_the_mean_side_summary_once_with_the_same_logits(mixing):
    """Mean pooling reads mean(phi_N + correction) = mean(phi_N) + W_out(mean(h)): the model's fast
    path gives the logits (and gradients) of correcting every token, then pooling."""
    torch.manual_seed(0)
    model = get_read_model(tiny_bert(), ReadConfig(num_labels=3, rnn_dim=8, mixing=mixing, output_scale=0.5))
    model.eval()
    with torch.no_grad():
        model.side.out.weight.normal_()                      # a correction that is not zero
    ids = torch.randint(5, 90, (4, 7))
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6])
    states = model.backbone_states(input_ids=ids, attention_mask=mask)
    per_token = model.head(model.corrected_final_state(states, mask.bool()), mask)    # correct, then pool
    fast = model(states=states)                                                       # pool, then W_out
    torch.testing.assert_close(fast.logits, per_token, rtol=1e-5, atol=1e-6)
    per_token.sum().backward()
    slow_grads = [p.grad.clone() for p in model.side.parameters()]
    model.zero_grad()
    model(states=states).logits.sum().backward()
    for slow, quick in zip(slow_grads, (p.grad for p in model.side.parameters())):
        torch.testing.assert_close(quick, slow, rtol=1e-4, atol=1e-6)
