"""End to end through `readapt train` / eval / predict for each backbone family (tiny random
weights with a real tokenizer): encoder (tiny_model_dir), T5 text-to-text, GPT-2 classification."""

import json

import pytest
import torch
from transformers import AutoTokenizer, GPT2Model, T5ForConditionalGeneration

from conftest import save_model_dir
from readapt.cli import main
from readapt.train import TrainArgs, load_run, train
from tiny_models import tiny_gpt2_config, tiny_t5_config


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    vocab = tokenizer.vocab_size
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(tiny_t5_config(vocab))
    gpt2 = GPT2Model(tiny_gpt2_config(vocab))
    return {name: save_model_dir(tmp_path_factory, name, model, tokenizer) for name, model in (("t5", t5), ("gpt2", gpt2))}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    words = [("a fine bright film", "pos"), ("dull and grey", "neg"), ("bright and fine", "pos"), ("grey dull mess", "neg")]
    for name, n in (("train.csv", 24), ("val.csv", 8)):
        rows = ["text,label"] + [f"{words[i % 4][0]},{words[i % 4][1]}" for i in range(n)]
        (d / name).write_text("\n".join(rows) + "\n")
    return d


@pytest.mark.parametrize("family, method", [("t5", "read"), ("t5", "full"), ("t5", "lora"), ("gpt2", "read"),
                                            ("gpt2", "full")])
def test_train_eval_predict(model_dirs, files, tmp_path, family, method, quiet, capsys):
    out = tmp_path / "run"
    metrics = train(TrainArgs(model=model_dirs[family], output=str(out), method=method, train_file=str(files / "train.csv"),
                              validation_file=str(files / "val.csv"), epochs=2, batch_size=8, max_length=16,
                              rnn_dim=8, device="cpu"), argv=["test"])
    assert set(metrics["validation"]) == {"accuracy", "f1"} and metrics["test"] is None
    assert 0 <= metrics["validation"]["accuracy"] <= 1 and metrics["trainable_params"] > 0
    assert metrics["inference"]["latency_ms"] > 0 and metrics["inference"]["batch_size"] == 8
    model, tokenizer, spec, args, text_to_text, device = load_run(out, "cpu")
    assert text_to_text == (family == "t5")
    capsys.readouterr()  # drop what training printed
    assert main(["predict", "--run", str(out), "--text", "bright fine film", "grey mess", "--device", "cpu",
                 "--probabilities"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["prediction"] in ("neg", "pos") for line in lines] == [True, True]
    for line in lines:  # T5: the label strings' likelihoods, normalised over the task's labels
        probabilities = line["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        assert max(probabilities, key=probabilities.get) == line["prediction"]
    assert main(["eval", "--run", str(out), "--split", "validation", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_t5_text_to_text_caches_its_training_split_only(model_dirs, files, tmp_path, quiet, capsys):
    """T5 on a classification task trains over cached states (the gold label's text through the
    decoder) and scores validation live (every label's text): the cached run is the live run."""
    cache_dir = tmp_path / "cache"
    runs = {mode: train(TrainArgs(model=model_dirs["t5"], output=str(tmp_path / mode), train_file=str(files / "train.csv"),
                                  validation_file=str(files / "val.csv"), epochs=2, batch_size=8, max_length=16,
                                  rnn_dim=8, device="cpu", cache=mode, cache_dir=str(cache_dir)), argv=["test"])
            for mode in ("off", "on")}
    assert (runs["off"]["cache"], runs["on"]["cache"]) == ("off", "miss")
    (manifest,) = [json.loads(p.read_text()) for p in cache_dir.glob("*/manifest.json")]
    assert manifest["items"] == 24 and manifest["source"]["split"] == "train"  # no validation entry
    assert runs["on"]["validation"] == pytest.approx(runs["off"]["validation"])
    live, cached = (load_run(tmp_path / mode, "cpu")[0].trainable_state_dict() for mode in ("off", "on"))
    for name, tensor in live.items():
        torch.testing.assert_close(cached[name], tensor, rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "on"), "--split", "validation", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(runs["on"]["validation"]["accuracy"])


@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_read_trains_on_a_bf16_backbone_end_to_end(model_dirs, files, tmp_path, family, quiet):
    """`readapt train` on a bf16 backbone used to die on step 1 for T5 (the fp32 encoder correction met
    bf16 weights in the cross-attention value path). GPT-2 goes through --cache-states: bf16 states
    kept across epochs."""
    out = tmp_path / "run"
    cache = family == "gpt2"
    metrics = train(TrainArgs(model=model_dirs[family], output=str(out), train_file=str(files / "train.csv"),
                              validation_file=str(files / "val.csv"), epochs=1, batch_size=8, max_length=16,
                              rnn_dim=8, device="cpu", backbone_dtype="bfloat16", cache_states=cache),
                    argv=["test"])
    assert 0 <= metrics["validation"]["accuracy"] <= 1
    model = load_run(out, "cpu")[0]
    assert next(model.base_model.parameters()).dtype == torch.bfloat16


def test_demo_trains_read_on_the_packaged_model(monkeypatch, tmp_path, minilm_path):
    """`readapt demo` hands valid arguments to train() (the run itself is `make demo`)."""
    import readapt.train

    seen = {}

    def fake_train(args, argv=None):
        readapt.train.check_args(args)  # the real argument checks, types included
        seen.update(model=args.model, task=args.task, method=args.method, epochs=args.epochs)
        return {"method": args.method, "task": args.task, "test": {"accuracy": 0.5}, "validation": None,
                "trainable_params": 1, "total_params": 2, "trainable_percent": 50.0, "energy_joules": None,
                "peak_memory_mb": 1.0, "train_seconds": 1.0, "examples_per_second": 1.0}

    monkeypatch.setattr(readapt.train, "train", fake_train)
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 0
    assert seen == {"model": str(minilm_path), "task": "rotten_tomatoes", "method": "read", "epochs": 3}
