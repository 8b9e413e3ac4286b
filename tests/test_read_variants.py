"""READ's side-network variants (token mixing, pair pooling) keep READ's invariants and train
end to end: a fresh model is the backbone, the backbone gets no gradient, cached states give the
live run's numbers, and the options are validated like the others."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from readapt import ReadConfig, get_read_model
from readapt.cli import main
from readapt.data import Example, encode
from readapt.evaluate import model_inputs
from readapt.train import TrainArgs, train

PAIRS = [("a man sleeps", "someone rests", "yes"), ("a dog runs", "the cat sleeps", "no"),
         ("two kids play", "children are playing", "yes"), ("it rains", "the sun is out", "no")]


@pytest.fixture(autouse=True)
def _quiet(quiet):
    pass


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    for name, n in (("train.csv", 24), ("val.csv", 8)):
        rows = ["premise,hypothesis,label"] + [",".join(PAIRS[i % 4]) for i in range(n)]
        (d / name).write_text("\n".join(rows) + "\n")
    return d


def _common(model_dir, files, **extra):
    return dict(model=model_dir, train_file=str(files / "train.csv"), validation_file=str(files / "val.csv"),
                text_column=["premise", "hypothesis"], epochs=2, batch_size=8, max_length=24, rnn_dim=8,
                device="cpu", **extra)


@pytest.mark.parametrize("pooling,mixing", [("pair", "none"), ("mean", "attention"), ("pair", "attention"),
                                            ("mean", "rnn")])
def test_fresh_variant_is_the_backbone_and_never_differentiates_it(tiny_model_dir, pooling, mixing):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    backbone = AutoModel.from_pretrained(tiny_model_dir)
    model = get_read_model(backbone, ReadConfig(num_labels=2, rnn_dim=8, pooling=pooling, mixing=mixing)).train()
    batch = model_inputs(encode([Example(p[:2], i % 2) for i, p in enumerate(PAIRS)], tokenizer, 24), 0, "cpu")
    states = model.backbone_states(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=batch["token_type_ids"])
    read = batch["attention_mask"].bool()
    assert torch.equal(model.corrected_final_state(states, read), states.hidden_states[-1])
    model(**batch).loss.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("mixing", ["attention", "rnn"])
def test_mixing_and_pair_pooling_train_and_predict_end_to_end(tiny_model_dir, pair_files, tmp_path, capsys, mixing):
    common = _common(tiny_model_dir, pair_files, pooling="pair", pair_encoding="joint", mixing=mixing)
    live = train(TrainArgs(output=str(tmp_path / "live"), **common), argv=["t"])
    cached = train(TrainArgs(output=str(tmp_path / "cached"), cache_states=True, **common), argv=["t"])
    assert [h["validation"] for h in cached["history"]] == [h["validation"] for h in live["history"]]
    saved = json.loads((tmp_path / "live" / "read_config.json").read_text())
    assert (saved["pooling"], saved["mixing"]) == ("pair", mixing)
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "live"), "--text", "a man sleeps ||| someone rests",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("yes", "no")


@pytest.mark.parametrize("method", ["read", "full", "lst"])
def test_separately_encoded_pairs_train_for_every_method(tiny_model_dir, pair_files, tmp_path, capsys, method):
    common = _common(tiny_model_dir, pair_files, method=method, pair_encoding="separate")
    metrics = train(TrainArgs(output=str(tmp_path / "live"), **common), argv=["t"])
    assert 0 <= metrics["validation"]["accuracy"] <= 1
    assert metrics["majority_baseline"]["validation"] == {"accuracy": 0.5, "f1": 0.0}  # 4 yes, 4 no; answers class 0
    if method == "read":  # READ's defaults on separate pairs (validation: README, "What we tried")
        saved = json.loads((tmp_path / "live" / "read_config.json").read_text())
        assert (saved["joiner"], saved["rnn_type"], saved["layer_stride"]) == ("projection", "gru", 2)
        # cached states (two sequences per example) give the live run's numbers
        cached = train(TrainArgs(output=str(tmp_path / "cached"), cache_states=True, **common), argv=["t"])
        assert [h["validation"] for h in cached["history"]] == [h["validation"] for h in metrics["history"]]
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "live"), "--text", "a man sleeps ||| someone rests",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("yes", "no")


@pytest.mark.parametrize("method", ["read", "full"])
def test_attention_pooling_trains_its_query_saves_and_predicts(tiny_model_dir, pair_files, tmp_path, capsys, method):
    common = _common(tiny_model_dir, pair_files, method=method, pooling="attention", pair_encoding="joint", lr=1e-2)
    metrics = train(TrainArgs(output=str(tmp_path / "run"), **common), argv=["t"])
    assert 0 <= metrics["validation"]["accuracy"] <= 1
    if method == "read":
        query = load_file(str(tmp_path / "run" / "read_model.safetensors"))["head.query"]
        assert query.shape == (32,) and query.abs().sum() > 0  # trained away from its zero start
        assert json.loads((tmp_path / "run" / "read_config.json").read_text())["pooling"] == "attention"
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--split", "validation", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_read_encodes_pairs_separately_by_default_unless_told_otherwise():
    from readapt.data import TaskSpec
    from readapt.train import separate_pairs

    pairs = TaskSpec("glue/rte", ("entailment", "not_entailment"), ("accuracy",), ("sentence1", "sentence2"))
    single = TaskSpec("glue/sst2", ("negative", "positive"), ("accuracy",), ("sentence",))
    args = lambda **kw: TrainArgs(model="m", output="o", **kw)  # noqa: E731
    assert separate_pairs(args(), pairs, text_to_text=False)
    assert separate_pairs(args(pooling="pair"), pairs, text_to_text=False)
    assert not separate_pairs(args(pair_encoding="joint"), pairs, text_to_text=False)
    assert not separate_pairs(args(pooling="mean"), pairs, text_to_text=False)  # a one-sequence head
    assert not separate_pairs(args(), single, text_to_text=False)
    assert not separate_pairs(args(), pairs, text_to_text=True)                 # T5 reads one input
    assert not separate_pairs(args(method="full"), pairs, text_to_text=False)   # each method its own default
    assert separate_pairs(args(method="full", pair_encoding="separate"), pairs, text_to_text=False)


def test_read_defaults_per_input_a_projecting_gru_for_separate_pairs_r96_for_single_texts():
    from readapt.train import side_network

    args = lambda **kw: TrainArgs(model="m", output="o", **kw)  # noqa: E731
    assert side_network(args(), separate=True) == {"joiner": "projection", "rnn_type": "gru", "rnn_dim": 128,
                                                   "layer_stride": 2}
    # single sentences, joint pairs: the paper's Joiner, an LSTM, every layer, r = 96 (validation's tie)
    assert side_network(args(), separate=False) == {"joiner": "norm", "rnn_type": "lstm", "rnn_dim": 96,
                                                    "layer_stride": None}
    # language-model tasks were not validated: the paper's network, r = 128 (ReadConfig's default)
    for task_type in ("causal_lm", "seq2seq_lm"):
        assert side_network(args(task_type=task_type), separate=False)["rnn_dim"] == ReadConfig().rnn_dim == 128
    given = {"joiner": "norm", "rnn_type": "lstm", "rnn_dim": 64, "layer_stride": 1}  # flags win
    assert side_network(args(**given), separate=True) == given
    assert side_network(args(joiner="projection", rnn_type="gru", rnn_dim=200, layer_stride=3), separate=False) == {
        "joiner": "projection", "rnn_type": "gru", "rnn_dim": 200, "layer_stride": 3}
    assert side_network(args(layers=[1, 2]), separate=True)["layer_stride"] is None  # --layers says which


def test_a_run_loads_into_the_side_network_it_trained_whatever_todays_default(tiny_model_dir, tmp_path):
    """A run that left r to the default (run_config.json: rnn_dim null) loads the r its read_config.json
    recorded, so a later change of the default never lands its weights on another network."""
    from readapt.train import load_run

    (tmp_path / "train.csv").write_text("text,label\n" + "good film,pos\nbad film,neg\n" * 6)
    common = dict(model=tiny_model_dir, train_file=str(tmp_path / "train.csv"), epochs=1, batch_size=4,
                  max_length=16, device="cpu")
    train(TrainArgs(output=str(tmp_path / "run"), **common), argv=["t"])
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["args"]["rnn_dim"] is None
    assert json.loads((tmp_path / "run" / "read_config.json").read_text())["rnn_dim"] == 96  # today's default
    state = load_file(str(tmp_path / "run" / "read_model.safetensors"))
    assert state["side.rnn.weight_hh_l0"].shape == (4 * 96, 96)
    # the same run as if trained when the default was r = 128: loads a 128-wide network
    train(TrainArgs(output=str(tmp_path / "old"), rnn_dim=128, **common), argv=["t"])
    run_config = json.loads((tmp_path / "old" / "run_config.json").read_text())
    run_config["args"]["rnn_dim"] = None
    (tmp_path / "old" / "run_config.json").write_text(json.dumps(run_config))
    model = load_run(tmp_path / "old", device="cpu")[0]
    assert model.side.rnn.hidden_size == 128


def test_separate_pairs_are_two_sequences_paired_row_by_row(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [Example(p[:2], i % 2) for i, p in enumerate(PAIRS)]
    items = encode(examples, tokenizer, 24, separate_pairs=True)
    assert items[0]["input_ids"] == tokenizer("a man sleeps")["input_ids"]
    assert items[0]["input_ids_b"] == tokenizer("someone rests")["input_ids"]
    batch = model_inputs(items, 0, "cpu")
    assert batch["input_ids"].shape[0] == 2 * len(PAIRS) and batch["labels"].shape == (len(PAIRS),)
    assert set(batch["segment_ids"][:4].unique().tolist()) == {0, 1}
    assert set(batch["segment_ids"][4:].unique().tolist()) == {0, 2}
    # the pair head reads u from row i and v from row B + i: the same features as pooling each text alone
    from readapt.heads import pool

    hidden = torch.randn(8, batch["input_ids"].shape[1], 4)
    features = pool(hidden, batch["attention_mask"], "pair", batch["segment_ids"])
    u, v = pool(hidden[:4], batch["attention_mask"][:4], "mean"), pool(hidden[4:], batch["attention_mask"][4:], "mean")
    torch.testing.assert_close(features, torch.cat([u, v, (u - v).abs(), u * v], -1))


@pytest.mark.parametrize("flags,words", [
    (["--pair-encoding", "separate"], "--pair-encoding separate reads two texts per example"),
    (["--pair-encoding", "separate", "--pooling", "mean"], "--pair-encoding separate compares the two texts"),
    (["--pair-encoding", "both"], "--pair-encoding both: choose one of joint, separate"),
    (["--pooling", "pair"], "--pooling pair reads two texts per example"),
    (["--pooling", "max"], "--pooling max: choose one of cls, mean, mean_max, attention, last, pair"),
    (["--mixing", "conv"], "--mixing conv: choose one of none, attention, rnn"),
    (["--mixing", "attention", "--method", "probe"], "--mixing attention is a READ option"),
])
def test_bad_variant_options_are_one_line_errors(tiny_model_dir, tmp_path, capsys, flags, words):
    (tmp_path / "train.csv").write_text("text,label\n" + "good,pos\nbad,neg\n" * 6)
    code = main(["train", "--model", tiny_model_dir, "--train-file", str(tmp_path / "train.csv"),
                 "--output", str(tmp_path / "out"), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_side_chunk_tokens_reaches_the_side_network_and_leaves_training_unchanged(
        tiny_model_dir, pair_files, tmp_path, monkeypatch):
    """--side-chunk-tokens 5 (every batch in several chunks, each recomputed in backward) and 0 (the
    whole batch at once) train the same model; the value is what the side network gets."""
    from readapt.model import ReadModel

    seen, original = [], ReadModel.set_side_chunk_tokens
    monkeypatch.setattr(ReadModel, "set_side_chunk_tokens", lambda self, n: seen.append(n) or original(self, n))
    common = _common(tiny_model_dir, pair_files, cache="off", side_dtype="float32")  # bf16 rounds per chunk
    runs = [train(TrainArgs(output=str(tmp_path / str(n)), side_chunk_tokens=n, **common), argv=["t"])
            for n in (5, 0)]
    assert seen == [5, None]
    assert runs[0]["history"] == [{**h, "train_seconds": c["train_seconds"]}
                                  for h, c in zip(runs[1]["history"], runs[0]["history"])]
    chunked, whole = (load_file(tmp_path / str(n) / "read_model.safetensors") for n in (5, 0))
    assert chunked.keys() == whole.keys() and any(t.abs().sum() > 0 for t in whole.values())
    for name, tensor in whole.items():
        torch.testing.assert_close(chunked[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def test_bidirectional_depth_trains_saves_and_predicts(tiny_model_dir, pair_files, tmp_path, capsys):
    """--bidirectional reaches the saved config, a reloaded run predicts what the trained model does,
    and cached states give the live run's numbers."""
    from readapt import ReadModel

    common = _common(tiny_model_dir, pair_files, bidirectional=True)
    live = train(TrainArgs(output=str(tmp_path / "live"), cache="off", **common), argv=["t"])
    cached = train(TrainArgs(output=str(tmp_path / "cached"), cache="on", **common), argv=["t"])
    assert [h["validation"] for h in cached["history"]] == [h["validation"] for h in live["history"]]
    saved = json.loads((tmp_path / "live" / "read_config.json").read_text())
    assert saved["bidirectional"] is True and saved["rnn_dim"] == 8
    model = ReadModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), tmp_path / "live")
    assert model.side.rnn.bidirectional and model.side.rnn.hidden_size == 4
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "live"), "--text", "a man sleeps ||| someone rests",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("yes", "no")


def test_a_run_loads_the_side_network_it_trained_after_the_defaults_change(
        tiny_model_dir, pair_files, tmp_path, capsys, monkeypatch):
    """A run that left --rnn-type/--joiner/--layer-stride to the defaults predicts with the network it
    trained even when a later readapt picks other defaults (here: the paper's LSTM on every layer)."""
    import readapt.train

    train(TrainArgs(output=str(tmp_path / "run"), **_common(tiny_model_dir, pair_files)), argv=["t"])
    predict = ["predict", "--run", str(tmp_path / "run"), "--text", "a man sleeps ||| someone rests",
               "--probabilities", "--device", "cpu"]
    capsys.readouterr()
    assert main(predict) == 0
    before = json.loads(capsys.readouterr().out)
    paper = {"joiner": "norm", "rnn_type": "lstm", "layer_stride": None}
    monkeypatch.setattr(readapt.train, "side_network",
                        lambda args, separate: {k: getattr(args, k) or v for k, v in paper.items()})
    assert main(predict) == 0
    assert json.loads(capsys.readouterr().out) == before


def test_the_hybrid_trains_saves_its_top_layer_and_reloads(tiny_model_dir, pair_files, tmp_path, capsys):
    """read_top end to end on pairs (READ's pair defaults): the run saves the top layer it trained
    beside the side network, and `readapt eval` reloads both to the same validation score."""
    from readapt.checkpoint import TRAINABLE_NAME

    run = tmp_path / "hybrid"
    result = train(TrainArgs(output=str(run), method="read_top", **_common(tiny_model_dir, pair_files)), argv=["t"])
    saved = load_file(run / TRAINABLE_NAME)
    assert any(".encoder.layer.1." in name for name in saved)            # the top layer of 2
    assert not any(".encoder.layer.0." in name or "embeddings" in name for name in saved)
    assert any(name.startswith("read.side.") for name in saved)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--split", "validation", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == round(result["validation"]["accuracy"], 6)


def test_side_dtype_reaches_the_side_network_in_training_and_in_a_reloaded_run(
        tiny_model_dir, pair_files, tmp_path, monkeypatch):
    """--side-dtype bfloat16 trains the side network under bf16 autocast (another model than float32's,
    from the same start), `load_run` evaluates it the same way, and a run saved before the option
    existed loads as what it trained in: float32."""
    from readapt.side import SideNetwork
    from readapt.train import load_run

    seen, original = [], SideNetwork.forward
    monkeypatch.setattr(SideNetwork, "forward", lambda self, *a, **k: seen.append(self.compute_dtype) or original(self, *a, **k))
    common = _common(tiny_model_dir, pair_files, cache="off")
    runs = {d: train(TrainArgs(output=str(tmp_path / d), side_dtype=d, **common), argv=["t"]) for d in ("float32", "bfloat16")}
    assert set(seen) == {None, torch.bfloat16}
    assert [runs[d]["side_dtype"] for d in runs] == ["float32", "bfloat16"]  # metrics.json says which
    weights = {d: load_file(tmp_path / d / "read_model.safetensors") for d in runs}
    assert all(t.dtype == torch.float32 for t in weights["bfloat16"].values())
    assert any(not torch.equal(weights["bfloat16"][k], t) for k, t in weights["float32"].items())
    model, *_ = load_run(tmp_path / "bfloat16", "cpu")
    assert {m.compute_dtype for m in model.modules() if isinstance(m, SideNetwork)} == {torch.bfloat16}
    config = tmp_path / "float32" / "run_config.json"
    saved = json.loads(config.read_text())
    del saved["args"]["side_dtype"]
    config.write_text(json.dumps(saved))
    model, *_ = load_run(tmp_path / "float32", "cpu")
    assert {m.compute_dtype for m in model.modules() if isinstance(m, SideNetwork)} == {None}
