"""Batching for evaluation and training, and the cached-states path's parity with the live one."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from readapt import ReadConfig, get_read_model
from readapt.data import Example, TaskSpec, encode
from readapt.evaluate import attach_states, model_inputs, predict
from readapt.train import TrainArgs, train

SPEC = TaskSpec(name="files", label_names=("neg", "pos"), metrics=("accuracy",), text_names=("text",))
TEXTS = ["a fine bright film", "dull", "bright and fine, a joy to watch from start to end", "grey mess"]


def test_cached_states_give_the_same_logits_as_running_the_backbone(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = get_read_model(AutoModel.from_pretrained(tiny_model_dir), ReadConfig(num_labels=2, rnn_dim=8)).eval()
    torch.nn.init.normal_(model.side.out.weight)  # a non-trivial correction
    encoded = encode([Example((t,), i % 2) for i, t in enumerate(TEXTS)], tokenizer, 32)
    live = model(**{k: v for k, v in model_inputs(encoded, 0, "cpu").items() if k != "labels"}).logits
    attach_states(model, encoded, 0, "cpu", batch_size=3)  # other padding than the batch below
    cached_batch = model_inputs(encoded, 0, "cpu")
    assert set(cached_batch) == {"states", "labels"}
    torch.testing.assert_close(model(states=cached_batch["states"]).logits, live, rtol=1e-5, atol=1e-6)
    assert np.array_equal(predict(model, encoded, SPEC, tokenizer, 2, "cpu", False), live.argmax(-1).numpy())


def test_cache_states_run_matches_live_run(tiny_model_dir, tmp_path, quiet):
    # quoted: one text holds a comma (an unquoted one is an extra field, refused since issue 12)
    rows = ["text,label"] + [f"\"{TEXTS[i % 4]}\",{'pos' if i % 4 in (0, 2) else 'neg'}" for i in range(24)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("\n".join(rows[:9]) + "\n")
    common = dict(model=tiny_model_dir, train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "val.csv"),
                  epochs=2, batch_size=8, max_length=16, rnn_dim=8, device="cpu")
    live = train(TrainArgs(output=str(tmp_path / "live"), **common), argv=["t"])
    cached = train(TrainArgs(output=str(tmp_path / "cached"), cache_states=True, **common), argv=["t"])
    assert cached["validation"] == live["validation"]
    for a, b in zip(live["history"], cached["history"]):
        assert a["validation"] == b["validation"]
    with pytest.raises(ValueError, match="--cache-states works with --method read"):
        train(TrainArgs(output=str(tmp_path / "probe"), method="probe", cache_states=True, **common))
    assert not (tmp_path / "probe").exists()
