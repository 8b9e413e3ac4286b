"""`readapt train --task-type causal_lm|seq2seq_lm` on text files: plain text and instruction pairs,
the response-only label mask, loss/perplexity/exact match, --resume, --cache-states, `readapt eval`,
and one-line refusals (tiny random GPT-2 / Llama / T5 with MiniLM's real tokenizer)."""

import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config
from transformers import T5ForConditionalGeneration

import readapt.train
from readapt.backbones.seq2seq import Seq2SeqBackbone
from readapt.cli import main
from readapt.data import Example
from readapt.data.lm import encode_lm, load_lm_files
from readapt.evaluate import model_inputs
from readapt.train import Interrupted, TrainArgs, load_run, train

from conftest import one_error_line, save_model_dir

FRUITS = {"banana": "yellow", "cherry": "red", "lime": "green", "plum": "purple"}


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.eos_token = "[SEP]"  # a BERT tokenizer has none; LM data appends it after each response
    return tokenizer


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tokenizer):
    vocab, eos = tokenizer.vocab_size, tokenizer.eos_token_id
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                           bos_token_id=101, eos_token_id=eos)),
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, bos_token_id=101,
                                              eos_token_id=eos, pad_token_id=0, max_position_embeddings=64)),
        "t5": T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                  num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                                  pad_token_id=0, eos_token_id=eos)),
    }
    return {name: save_model_dir(tmp_path_factory, name, model, tokenizer) for name, model in models.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm-data")
    lines = ["the cat sat on the mat", "the dog sat on the log", "the cat ate the fish", "the dog ate the bone"]
    for name, n in (("text.csv", 32), ("text_val.csv", 8)):
        (d / name).write_text("\n".join(["text"] + [lines[i % 4] for i in range(n)]) + "\n")
    pairs = list(FRUITS.items())
    for name, n in (("pairs.jsonl", 32), ("pairs_val.jsonl", 8)):
        rows = [{"question": f"what colour is a {pairs[i % 4][0]} ?", "answer": pairs[i % 4][1]} for i in range(n)]
        (d / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return d


def _args(model_dirs, files, out, family="gpt2", pairs=False, **overrides):
    data = dict(train_file=str(files / ("pairs.jsonl" if pairs else "text.csv")),
                validation_file=str(files / ("pairs_val.jsonl" if pairs else "text_val.csv")))
    if pairs:
        data.update(prompt_column="question", response_column="answer")
    task_type = "seq2seq_lm" if family == "t5" else "causal_lm"
    return TrainArgs(**{**dict(model=model_dirs[family], output=str(out), task_type=task_type, epochs=3, batch_size=8,
                               max_length=24, rnn_dim=16, device="cpu", **data), **overrides})


# -- data: what the loss reads ---------------------------------------------------------------------
def test_causal_pairs_put_labels_only_on_the_response_and_eos(tokenizer):
    examples = [Example(("what colour is a lime ?", "green"), 0), Example(("hi", "a long answer here"), 0)]
    items = encode_lm(examples, tokenizer, 32, "causal_lm")
    prompt = tokenizer("what colour is a lime ?")["input_ids"]
    response = tokenizer("green", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert items[0]["input_ids"] == prompt + response
    assert items[0]["labels"] == [-100] * len(prompt) + response
    batch = model_inputs(items, tokenizer.pad_token_id, torch.device("cpu"))  # padding: no loss either
    padded = batch["attention_mask"] == 0
    assert padded[1].any() and (batch["labels"][padded] == -100).all()
    assert batch["labels"][1, len(tokenizer("hi")["input_ids"]):].ne(-100).sum() == len(
        tokenizer("a long answer here", add_special_tokens=False)["input_ids"]) + 1


def test_plain_text_labels_every_token_and_seq2seq_targets_the_response(tokenizer):
    (plain,) = encode_lm([Example(("the cat sat",), 0)], tokenizer, 32, "causal_lm")
    assert plain["labels"] == plain["input_ids"] == tokenizer("the cat sat")["input_ids"]  # ends in EOS already
    (pair,) = encode_lm([Example(("question text", "answer"), 0)], tokenizer, 32, "seq2seq_lm")
    assert pair["input_ids"] == tokenizer("question text")["input_ids"]
    assert pair["labels"] == tokenizer(text_target="answer")["input_ids"]


def test_a_prompt_that_fills_max_length_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"validation example 2: its prompt is \d+ tokens, .* --max-length 4"):
        encode_lm([Example(("a", "b"), 0), Example(("a much longer prompt", "b"), 0)], tokenizer, 4, "causal_lm",
                  "validation")


def test_response_column_missing_from_a_file_is_one_line(files):
    with pytest.raises(ValueError, match=r"has no column 'reply' .*pass --response-column"):
        load_lm_files("causal_lm", train_file=files / "pairs.jsonl", prompt_column="question",
                      response_column="reply")


# -- training --------------------------------------------------------------------------------------
def test_read_causal_lm_lowers_validation_loss_and_eval_reports_perplexity(model_dirs, files, tmp_path, quiet,
                                                                           capsys):
    out = tmp_path / "run"
    metrics = train(_args(model_dirs, files, out), argv=["test"])
    losses = [h["validation"]["loss"] for h in metrics["history"]]
    assert losses[2] < losses[1] < losses[0], losses
    assert set(metrics["validation"]) == {"loss", "perplexity"} and metrics["best_epoch"] == 3
    assert metrics["validation"]["perplexity"] == pytest.approx(math.exp(metrics["validation"]["loss"]))
    model, *_ = load_run(out, "cpu")
    assert model.config.task_type == "CAUSAL_LM"
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--split", "validation", "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-5)
    assert scores["perplexity"] == pytest.approx(metrics["validation"]["perplexity"], rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_fresh_read_scores_what_the_backbone_scores(model_dirs, files, family, quiet):
    """The loss evaluate_lm reports for an untrained READ model is the HF model's own loss (the
    correction starts at zero), for response-only labels."""
    from readapt.evaluate import evaluate_lm
    from readapt.train import build

    args = _args(model_dirs, files, "unused", family=family, pairs=True)
    data = load_lm_files(args.task_type, train_file=args.train_file, prompt_column="question", response_column="answer")
    model, tok, _ = build(args, data.spec, torch.device("cpu"))
    items = encode_lm(data.validation, tok, 24, args.task_type)
    ours = evaluate_lm(model, items, tok.pad_token_id, 64, "cpu", causal=family != "t5")["loss"]
    batch = model_inputs(items, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        theirs = model.base_model(**batch).loss.item()  # HF averages over the same response tokens
    assert ours == pytest.approx(theirs, rel=1e-4)


@pytest.mark.parametrize("family, method", [("llama", "read"), ("t5", "read"), ("gpt2", "lora")])
def test_instruction_pairs_train_and_report_exact_match(model_dirs, files, tmp_path, quiet, family, method):
    metrics = train(_args(model_dirs, files, tmp_path / "run", family=family, pairs=True, method=method, epochs=2),
                    argv=["test"])
    validation = metrics["validation"]
    assert set(validation) == {"loss", "perplexity", "exact_match"}  # answers are 1-2 tokens + EOS
    assert 0 <= validation["exact_match"] <= 1 and math.isfinite(validation["loss"])
    assert metrics["task"] == metrics["task_type"] == ("seq2seq_lm" if family == "t5" else "causal_lm")
    assert metrics["majority_baseline"] == {"validation": None, "test": None}


@pytest.mark.parametrize("family, dtype", [("gpt2", "float32"), ("gpt2", "bfloat16"), ("t5", "float32")])
def test_state_cache_gives_the_live_result_for_lm_tasks(model_dirs, files, tmp_path, quiet, family, dtype, capsys,
                                                        monkeypatch):
    runs = {"in_loop": 0, "looping": False}
    run, loop = Seq2SeqBackbone.run, readapt.train._loop

    def counted_run(runner, *args, **kwargs):
        runs["in_loop"] += runs["looping"]
        return run(runner, *args, **kwargs)

    def counted_loop(*args, **kwargs):
        runs["looping"] = True
        try:
            return loop(*args, **kwargs)
        finally:
            runs["looping"] = False

    monkeypatch.setattr(Seq2SeqBackbone, "run", counted_run)
    monkeypatch.setattr(readapt.train, "_loop", counted_loop)
    options = dict(family=family, pairs=family == "t5", epochs=2, backbone_dtype=dtype, cache_dir=str(tmp_path / "cache"))
    live = train(_args(model_dirs, files, tmp_path / "live", **options, cache="off"), argv=["test"])
    out = tmp_path / "cached"
    cached = train(_args(model_dirs, files, out, **options, cache="on"), argv=["test"])
    assert (live["cache"], cached["cache"]) == ("off", "miss")  # the second run read its states from the disk cache
    assert cached["validation"]["loss"] == pytest.approx(live["validation"]["loss"], rel=1e-5)
    # T5: the encoder's and decoder's states and the cross-attention all come from the cache, so
    # neither training nor validation runs the backbone (a live run runs it every step)
    assert family != "t5" or runs["in_loop"] == 2 * (4 + 1)  # the live run only: 4 steps + 1 validation pass an epoch
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--split", "validation", "--device", "cpu"]) == 0  # eval reads it too
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(cached["validation"]["loss"], rel=1e-5)


def test_interrupted_lm_run_resumes_to_the_same_weights(model_dirs, files, tmp_path, monkeypatch, quiet):
    reference = tmp_path / "reference"
    train(_args(model_dirs, files, reference, epochs=2, save_every=2), argv=["test"])
    real = readapt.train._step

    def step_then_signal(model, batch, optimizer, scheduler, max_grad_norm, global_step):
        loss = real(model, batch, optimizer, scheduler, max_grad_norm, global_step)
        if global_step + 1 == 5:  # mid epoch 2, one step after the step-4 checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(readapt.train, "_step", step_then_signal)
        with pytest.raises(Interrupted):
            train(_args(model_dirs, files, out, epochs=2, save_every=2), argv=["test"])
    assert not (out / "metrics.json").exists()
    metrics = train(_args(model_dirs, files, out, epochs=2, save_every=2, resume=True), argv=["test"])
    assert metrics["resumed"] is True
    a, b = (load_file(str(d / "read_model.safetensors")) for d in (reference, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref = json.loads((reference / "metrics.json").read_text())
    assert [h["validation"] for h in metrics["history"]] == [h["validation"] for h in ref["history"]]


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, family, message", [
    (["--prompt-column", "question"], "gpt2", "--prompt-column needs --response-column too"),
    (["--task-type", "seq2seq_lm"], "t5", "--task-type seq2seq_lm needs an input and a target: pass --prompt-column"),
    (["--method", "probe"], "gpt2", "--method probe has no language-model form; with --task-type causal_lm use one of:"),
    (["--label-column", "label"], "gpt2", "--label-column is a classification option"),
    (["--task-type", "sequence"], "gpt2", "--task-type sequence: choose one of classification, causal_lm, seq2seq_lm"),
    (["--task-type", "seq2seq_lm", "--prompt-column", "text", "--response-column", "text"], "t5",
     "--prompt-column and --response-column are both 'text'"),
    (["--max-length", "100"], "gpt2", "--max-length 100 is longer than the model's context (64 tokens)"),
    (["--task-type", "causal_lm"], "t5", "--task-type causal_lm needs a causal model; t5 is seq2seq: use --task-type seq2seq_lm"),
    (["--task-type", "seq2seq_lm", "--train-file", "PAIRS", "--prompt-column", "question", "--response-column",
      "answer", "--method", "lora", "--cache", "on"], "t5",
     "--cache on works with --method read (--method lora has no frozen states to reuse); drop it"),
    (["--task", "rotten_tomatoes"], "gpt2", "--task-type causal_lm trains on your own files: pass --train-file"),
])
def test_bad_lm_options_are_one_line_errors(model_dirs, files, tmp_path, capsys, quiet, extra, family, message):
    argv = ["train", "--model", model_dirs[family], "--output", str(tmp_path / "run"), "--task-type", "causal_lm",
            "--train-file", str(files / "text.csv"), "--device", "cpu",
            *[str(files / "pairs.jsonl") if arg == "PAIRS" else arg for arg in extra]]
    assert message in one_error_line(capsys, argv)
    assert not (tmp_path / "run" / "run_config.json").exists()


def test_prompt_columns_without_an_lm_task_and_predict_on_an_lm_run_are_refused(model_dirs, files, tmp_path,
                                                                                capsys, quiet):
    argv = ["train", "--model", model_dirs["gpt2"], "--output", str(tmp_path / "c"), "--train-file",
            str(files / "text.csv"), "--response-column", "answer", "--prompt-column", "question"]
    assert "--prompt-column and --response-column are for LM tasks" in one_error_line(capsys, argv)
    out = tmp_path / "run"
    train(_args(model_dirs, files, out, epochs=1), argv=["test"])
    assert "is a causal_lm run" in one_error_line(capsys, ["predict", "--run", str(out), "--text", "the cat"])


def test_exact_match_counts_examples_whose_every_response_token_is_the_argmax(tokenizer):
    """A stand-in model whose logits put all mass on the gold next token, except on one example's
    last response token: exact match 1/2, and a long response turns exact match off."""
    from types import SimpleNamespace

    from readapt.data.lm import short_responses
    from readapt.evaluate import evaluate_lm

    class Oracle(torch.nn.Module):
        def forward(self, input_ids, attention_mask, labels):
            logits = torch.zeros(*labels.shape, tokenizer.vocab_size)
            nxt = labels[:, 1:].clamp(min=0)  # position t predicts token t+1
            logits[:, :-1].scatter_(-1, nxt.unsqueeze(-1), 50.0)
            last = int((labels[1] != -100).nonzero().max()) - 1
            logits[1, last] = 0.0  # example 2: its last token is no longer the argmax
            return SimpleNamespace(logits=logits)

    items = encode_lm([Example(("what colour is a lime ?", "green"), 0), Example(("a plum ?", "purple"), 0)],
                      tokenizer, 32, "causal_lm")
    scores = evaluate_lm(Oracle(), items, tokenizer.pad_token_id, 8, "cpu", causal=True, exact_match=True)
    assert scores["exact_match"] == 0.5
    assert short_responses(items)
    assert not short_responses(encode_lm([Example(("q", "one two three four five six seven eight"), 0)], tokenizer,
                                         32, "causal_lm"))


def test_a_causal_lm_run_then_readapt_generate_continues_with_the_trained_correction(model_dirs, files, tmp_path,
                                                                                   quiet, capsys):
    """train --task-type causal_lm, then `readapt generate --run`: its greedy completion is the trained
    READ model's own greedy continuation (a full-recompute loop here), whose logits differ from the
    backbone's: the run's side network is loaded and applied at every new token."""
    out = tmp_path / "run"
    train(_args(model_dirs, files, out, family="llama", pairs=True, epochs=2, lr=5e-2), argv=["test"])
    prompt = "what colour is a lime ?"
    capsys.readouterr()
    assert main(["generate", "--run", str(out), "--prompt", prompt, "--max-new-tokens", "3", "--device", "cpu",
                 "--output-format", "jsonl"]) == 0
    completion = json.loads(capsys.readouterr().out)["completion"]
    model, tokenizer, *_ = load_run(out, "cpu")
    ids = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)["input_ids"]
    with torch.no_grad():
        with model.disable_adapter():
            backbone = model(input_ids=ids).logits[0, -1]
        assert not torch.allclose(model(input_ids=ids).logits[0, -1], backbone, atol=1e-3)
        plain = ids
        for _ in range(3):  # greedy, recomputing the whole sequence each step; and the backbone's own
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
            with model.disable_adapter():
                plain = torch.cat([plain, model(input_ids=plain).logits[:, -1:].argmax(-1)], dim=1)
    assert completion == tokenizer.decode(ids[0, -3:], skip_special_tokens=True)
    assert not torch.equal(ids, plain)  # so a generate that skipped the correction would fail here


def test_two_processes_match_one_on_a_causal_lm_task(model_dirs, tmp_path, quiet):
    """Data parallel (torchrun, 2 gloo processes): each shard's loss is weighed by its target tokens,
    so answers of different lengths give the weights of one process at the same global batch."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    answers = ["yellow", "deep dark red", "green", "a purple plum colour"]
    rows = [{"question": f"what colour is a {fruit} ?", "answer": answers[i % 4]}
            for i, fruit in enumerate(list(FRUITS) * 5)][:17]  # batches of 8: shards 4+4, 4+4, 1+0
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:6]))

    def options(out):
        return ["train", "--model", model_dirs["gpt2"], "--task-type", "causal_lm", "--train-file",
                str(tmp_path / "train.jsonl"), "--validation-file", str(tmp_path / "val.jsonl"), "--prompt-column",
                "question", "--response-column", "answer", "--output", str(out), "--epochs", "1", "--batch-size", "8",
                "--max-length", "24", "--rnn-dim", "8", "--device", "cpu", "--lr", "0.01", "--cache", "off",
                "--side-dtype", "float32"]  # exact parity is float32's (bf16 rounds each shard's own way)

    assert main(options(tmp_path / "single")) == 0
    env = {**os.environ, "PYTHONPATH": str(tests.parent / "src"), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tests / "dp_worker.py"), *options(tmp_path / "parallel")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[:3000] + " ... " + done.stderr[-1500:]
    a, b = (load_file(str(tmp_path / run / "read_model.safetensors")) for run in ("single", "parallel"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0, msg=key)
