"""ReadModel.generate and `readapt generate` (issue 9, item 4): the backbone's own generate with the
READ correction at every new position, on the KV cache.

* a fresh READ model (zero W_out) generates exactly what the backbone's own generate does, scores
  included (greedy and beam, with and without left padding);
* with a correction, greedy output equals a naive loop that recomputes the whole prefix's corrected
  logits at every token;
* the cache is used: after the prompt, the backbone and the side network see one position per step;
* the CLI on a T5 run trained by `readapt train`, on a decoder-only LM model, and its refusals.
"""

import io
import json
import sys

import pytest
import torch
from transformers import AutoTokenizer, DynamicCache, EncoderDecoderCache, GPT2LMHeadModel

import readapt.train
from conftest import one_error_line, save_model_dir
from readapt import ReadConfig, get_read_model
from readapt.cli import main
from readapt.generation import generate_text
from readapt.train import TrainArgs, load_run, train
from tiny_models import tiny_gpt2, tiny_gpt2_config, tiny_llama, tiny_t5, tiny_t5_config



def tiny_gemma2():
    """Gemma2 soft-caps its logits after the LM head: generate must keep that on the corrected state."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    return Gemma2ForCausalLM(Gemma2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                          final_logit_softcapping=0.5, pad_token_id=0, eos_token_id=1, bos_token_id=2))


BACKBONES = {"gpt2": (tiny_gpt2, "CAUSAL_LM"), "llama": (tiny_llama, "CAUSAL_LM"),
             "llama-bf16": (lambda: tiny_llama().to(torch.bfloat16), "CAUSAL_LM"), "gemma2": (tiny_gemma2, "CAUSAL_LM"),
             "t5": (tiny_t5, "SEQ_2_SEQ_LM")}
PAD, EOS = 0, 1  # tiny_models' ids
NEW_TOKENS = 6


def read_model(name: str, corrected: bool = False, **config):
    make, task_type = BACKBONES[name]
    backbone = make()
    model = get_read_model(backbone, ReadConfig(task_type=task_type, rnn_dim=8, **config))
    if corrected:  # a trained-looking side network: W_out away from zero
        torch.manual_seed(1)
        for side in (model.side, getattr(model, "encoder_side", None)):
            if side is not None:
                torch.nn.init.normal_(side.out.weight, std=2.0)
    return model.eval(), backbone


def prompts(padded: bool, causal: bool):
    """(input_ids, attention_mask): three prompts; with padding, of three lengths (left-padded for a
    decoder-only model, right-padded for T5, as tokenizers are set for each)."""
    rows = [[5, 17, 42, 8, 23], [61, 9, 33], [12, 70, 4, 88]] if padded else [[5, 17, 42, 8], [61, 9, 33, 2],
                                                                             [12, 70, 4, 88]]
    width = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        pad = [PAD] * (width - len(row))
        ids.append(pad + row if causal else row + pad)
        mask.append([0] * len(pad) + [1] * len(row) if causal else [1] * len(row) + [0] * len(pad))
    return torch.tensor(ids), torch.tensor(mask)


def backbone_cache(name: str) -> dict:
    # transformers sizes T5's default cache from the encoder's depth; tiny_t5's decoder is deeper
    return {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())} if name == "t5" else {}


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_a_fresh_read_model_generates_what_the_backbone_does(name, beams, padded):
    model, backbone = read_model(name)
    ids, mask = prompts(padded, causal=name != "t5")
    options = dict(max_new_tokens=NEW_TOKENS, num_beams=beams, do_sample=False, pad_token_id=PAD,
                   return_dict_in_generate=True, output_scores=True)
    ours = model.generate(input_ids=ids, attention_mask=mask, **options)
    theirs = backbone.generate(input_ids=ids, attention_mask=mask, **options, **backbone_cache(name))
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores)
    for a, b in zip(ours.scores, theirs.scores):
        assert torch.equal(a, b)


def naive_greedy(model, row: list[int], causal: bool) -> list[int]:
    """Greedy decoding of one unpadded prompt by recomputing every corrected logit over the whole
    prefix at each token (model(...).logits[:, -1]), stopping at EOS as generate does."""
    ids = torch.tensor([row])
    out = ids.clone() if causal else torch.tensor([[model.base_model.config.decoder_start_token_id]])
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=out).logits if causal else model(input_ids=ids, decoder_input_ids=out).logits
            token = int(logits[0, -1].argmax())
            out = torch.cat([out, torch.tensor([[token]])], dim=1)
            if token == EOS:
                break
    return out[0, len(row) if causal else 0:].tolist()


@pytest.mark.parametrize("name", list(BACKBONES))
def test_greedy_with_a_correction_equals_a_full_recompute_loop(name):
    causal = name != "t5"
    model, backbone = read_model(name, corrected=True)
    ids, mask = prompts(padded=True, causal=causal)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                         pad_token_id=PAD)
    plain = backbone.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                              pad_token_id=PAD, **backbone_cache(name))
    assert not torch.equal(out, plain)  # the correction changes what is generated: the test can see it
    new = out[:, ids.shape[1]:] if causal else out
    for i, row in enumerate(ids.tolist()):
        real = [t for t, m in zip(row, mask[i].tolist()) if m]
        expected = naive_greedy(model, real, causal)
        got = new[i].tolist()[:len(expected)]
        assert got == expected, f"prompt {i}"
        assert all(t == PAD for t in new[i].tolist()[len(expected):])  # after EOS: padding only


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_beam_search_with_a_correction_gives_each_prompt_what_it_gets_alone(name):
    """Beam search repeats each input's rows; T5's encoder correction must follow its own input."""
    causal = name != "t5"
    model, _ = read_model(name, corrected=True)
    ids, mask = prompts(padded=True, causal=causal)
    options = dict(max_new_tokens=NEW_TOKENS, num_beams=3, do_sample=False, pad_token_id=PAD)
    together = model.generate(input_ids=ids, attention_mask=mask, **options)
    for i, row in enumerate(ids.tolist()):
        real = torch.tensor([[t for t, m in zip(row, mask[i].tolist()) if m]])
        alone = model.generate(input_ids=real, **options)[0]
        got = together[i, ids.shape[1]:] if causal else together[i]
        start = real.shape[1] if causal else 0
        assert got[:len(alone) - start].tolist() == alone[start:].tolist(), f"prompt {i}"


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_each_step_runs_the_backbone_and_side_network_on_the_new_position_only(name):
    causal = name != "t5"
    model, backbone = read_model(name, corrected=True)
    ids, mask = prompts(padded=True, causal=causal)
    lengths, side_tokens, encoder_calls = [], [], []
    key = "input_ids" if causal else "decoder_input_ids"
    hooks = [backbone.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw[key].shape[1]), with_kwargs=True),
             model.side.register_forward_pre_hook(lambda m, a: side_tokens.append(len(a[0])))]
    if not causal:
        hooks.append(backbone.encoder.register_forward_pre_hook(lambda m, a: encoder_calls.append(1)))
    try:
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                       pad_token_id=PAD)
    finally:
        for hook in hooks:
            hook.remove()
    assert lengths == [ids.shape[1] if causal else 1] + [1] * 4
    assert side_tokens == [len(ids)] * 5  # one corrected position per prompt and step
    assert encoder_calls == ([] if causal else [1])


def test_disable_adapter_generates_the_backbones_text():
    model, backbone = read_model("llama", corrected=True)
    ids, mask = prompts(padded=True, causal=True)
    options = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=PAD)
    with model.disable_adapter():
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, **options),
                           backbone.generate(input_ids=ids, attention_mask=mask, **options))


def test_a_classification_model_cannot_generate():
    from tiny_models import tiny_bert

    model = get_read_model(tiny_bert(), ReadConfig(task_type="SEQ_CLS", rnn_dim=8))
    with pytest.raises(ValueError, match="readapt predict"):
        model.generate(input_ids=torch.tensor([[5, 6]]))


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, minilm_path):
    """A T5 run and a GPT-2 classification run from `readapt train`, and a decoder-only LM with the
    same real tokenizer (MiniLM's), all tiny and random."""
    from transformers import T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    vocab = tokenizer.vocab_size
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(tiny_t5_config(vocab))
    gpt2 = GPT2LMHeadModel(tiny_gpt2_config(vocab))
    data = tmp_path_factory.mktemp("gen-data")
    rows = ["text,label"] + [f"{w},{lab}" for w, lab in [("a fine bright film", "pos"), ("dull and grey", "neg")] * 8]
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    found = {"tokenizer": tokenizer, "gpt2_lm": gpt2}
    for name, model in (("t5", t5), ("gpt2", gpt2)):
        folder = save_model_dir(tmp_path_factory, name, model, tokenizer)
        out = tmp_path_factory.mktemp("runs") / name
        train(TrainArgs(model=folder, output=str(out), train_file=str(data / "train.csv"), epochs=1,
                        batch_size=8, max_length=16, rnn_dim=8, device="cpu"), argv=["test"])
        found[name] = str(out)
    return found


def test_generate_streams_one_prompt_and_writes_jsonl_for_several_t5(runs, quiet, capsys, monkeypatch, tmp_path):
    model, tokenizer, *_ = load_run(runs["t5"], "cpu")
    expected = generate_text(model, tokenizer, ["bright fine film", "grey", "a dull film"], max_new_tokens=4)
    capsys.readouterr()
    assert main(["generate", "--run", runs["t5"], "--prompt", "bright fine film", "--max-new-tokens", "4",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out == expected[0] + "\n"
    (tmp_path / "prompts.txt").write_text("grey\n\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a dull film\n")))
    for source in (["--input-file", str(tmp_path / "prompts.txt")], ["--input-file", "-"]):
        assert main(["generate", "--run", runs["t5"], "--prompt", "bright fine film", *source,
                     "--max-new-tokens", "4", "--device", "cpu", "--output-format", "jsonl"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        second = "grey" if "prompts.txt" in source[1] else "a dull film"
        assert lines == [{"prompt": "bright fine film", "completion": expected[0]},
                         {"prompt": second, "completion": expected[1 if second == "grey" else 2]}]


def test_generate_on_a_decoder_only_lm_decodes_only_the_new_text(runs, quiet, capsys, monkeypatch):
    """The run folder format of decoder-only LM runs comes with `readapt train --task-type causal_lm`
    (issue 9, item 3); here load_run hands the CLI a CAUSAL_LM READ model directly."""
    tokenizer = runs["tokenizer"]
    model = get_read_model(runs["gpt2_lm"], ReadConfig(task_type="CAUSAL_LM", rnn_dim=8))
    torch.nn.init.normal_(model.side.out.weight, std=2.0)
    monkeypatch.setattr(readapt.train, "load_run", lambda run, device: (model, tokenizer, None, None, False, "cpu"))
    texts = ["a fine bright film", "grey"]
    alone = [generate_text(model, tokenizer, [text], max_new_tokens=5)[0] for text in texts]
    assert main(["generate", "--run", runs["gpt2"], "--prompt", *texts, "--max-new-tokens", "5",
                 "--output-format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["completion"] for line in lines] == alone  # left padding changes nothing
    assert not any(line["completion"].startswith(text) for line, text in zip(lines, texts))
    assert main(["generate", "--run", runs["gpt2"], "--prompt", texts[0], "--max-new-tokens", "5",
                 "--do-sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]) == 0
    sampled = capsys.readouterr().out
    assert main(["generate", "--run", runs["gpt2"], "--prompt", texts[0], "--max-new-tokens", "5",
                 "--do-sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]) == 0
    assert capsys.readouterr().out == sampled  # the seed makes sampling repeatable
    long_prompt = " ".join(["film"] * 70)
    line = one_error_line(capsys, ["generate", "--run", runs["gpt2"], "--prompt", long_prompt])
    assert "passes the model's context of 64 tokens" in line


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "x", "--temperature", "0.5"], "add --do-sample"),
    (["--prompt", "x", "--num-beams", "0"], "--num-beams 0 is out of range"),
    ([], "nothing to generate from"),
    (["--prompt", "x", "--output-format", "csv"], "choose one of text, jsonl"),
])
def test_generate_refuses_bad_options(runs, quiet, capsys, argv, message):
    assert message in one_error_line(capsys, ["generate", "--run", runs["t5"], *argv])


def test_generate_refuses_a_classification_run(runs, quiet, capsys):
    line = one_error_line(capsys, ["generate", "--run", runs["gpt2"], "--prompt", "x", "--device", "cpu"])
    assert "is a classification run" in line and "readapt predict" in line
