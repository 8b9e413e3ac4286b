"""ReadTrainer: a real transformers.Trainer saves READ (never the backbone), reloads it with
ReadModel.from_pretrained, resumes from its checkpoints and reloads the best one."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from tiny_models import tiny_bert
from readapt import ReadConfig, ReadModel, ReadTrainer, get_read_model
from readapt.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME


def _data(n=16, length=8):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(5, 100, (length,), generator=g),
             "attention_mask": torch.ones(length, dtype=torch.long), "labels": i % 2} for i in range(n)]


def _model():
    return get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2, head_dropout=0.0))


def _args(out, **extra):
    options = dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, save_steps=2, learning_rate=1e-2,
                   report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    return TrainingArguments(**{**options, **extra})


def _batch(data):
    return {k: torch.stack([d[k] for d in data]) for k in ("input_ids", "attention_mask")}


def _trained(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_trainer_saves_read_and_from_pretrained_reloads_the_same_logits(tmp_path):
    data = _data()
    model = _model()
    trainer = ReadTrainer(model=model, args=_args(tmp_path / "run"), train_dataset=data)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "final", tmp_path / "run" / "checkpoint-4"):
        names = set(os.listdir(folder))
        assert {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME} <= names
        assert not names & {"model.safetensors", "pytorch_model.bin"}  # no backbone weights anywhere
        saved = load_file(str(folder / WEIGHTS_NAME))
        assert set(saved) == set(_trained(model))
        assert not any(k.startswith(("base_model.", "runner.")) for k in saved)
    assert "library_name: readapt" in (tmp_path / "final" / CARD_NAME).read_text()

    loaded = ReadModel.from_pretrained(tiny_bert(), tmp_path / "final").eval()
    model.eval()
    batch = _batch(data[:4])
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)
        with model.disable_adapter():  # training did move the model away from the backbone
            assert not torch.allclose(model(**batch).logits, loaded(**batch).logits)


def test_resume_from_a_trainer_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    data = _data()
    straight = _model()
    ReadTrainer(model=straight, args=_args(tmp_path / "a"), train_dataset=data).train()

    ReadTrainer(model=_model(), args=_args(tmp_path / "b"), train_dataset=data).train()
    shutil.rmtree(tmp_path / "b" / "checkpoint-4")  # as if killed after step 2's checkpoint
    resumed = _model()  # fresh weights: only the checkpoint can bring step 2's back
    ReadTrainer(model=resumed, args=_args(tmp_path / "b"), train_dataset=data).train(resume_from_checkpoint=True)
    for name, tensor in _trained(straight).items():
        torch.testing.assert_close(_trained(resumed)[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_load_best_model_at_end_reloads_the_best_read_checkpoint(tmp_path):
    data = _data()
    model = _model()
    args = _args(tmp_path / "run", eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                 metric_for_best_model="loss", greater_is_better=True)  # the worse loss: not the last step
    trainer = ReadTrainer(model=model, args=args, train_dataset=data, eval_dataset=data[:4])
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best.endswith("checkpoint-2")
    on_disk = load_file(os.path.join(best, WEIGHTS_NAME))
    for name, tensor in _trained(model).items():
        assert torch.equal(tensor, on_disk[name]), name
    assert "eval_loss" in open(os.path.join(best, CARD_NAME)).read()  # the model card names the metric


def test_plain_trainer_checkpoint_is_refused_with_the_reason(tmp_path):
    data = _data()
    Trainer(model=_model(), args=_args(tmp_path / "plain", max_steps=2), train_dataset=data).train()
    trainer = ReadTrainer(model=_model(), args=_args(tmp_path / "plain"), train_dataset=data)
    with pytest.raises(ValueError, match="holds no read_config.json.*plain transformers.Trainer"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="plain transformers.Trainer saves a model; train with readapt.ReadTrainer"):
        ReadModel.from_pretrained(tiny_bert(), tmp_path / "plain" / "checkpoint-2")
