"""The model card save_pretrained writes: Hub metadata, base model, task, READ config, metrics and
the training command when known; a README.md readapt did not write is kept."""

import pytest
import torch
from huggingface_hub import ModelCard

from tiny_models import tiny_bert, tiny_gpt2
from readapt import ReadConfig, get_read_model
from readapt.config import CARD_NAME


def test_card_names_base_model_task_config_metrics_and_command(tmp_path):
    backbone = tiny_bert()
    backbone.config._name_or_path = "someone/tiny-bert"
    model = get_read_model(backbone, ReadConfig(rnn_dim=8, num_labels=3, rnn_type="gru"))
    model.save_pretrained(tmp_path, dataset="glue/mnli", metrics={"test": {"accuracy": 0.8125}},
                          command="readapt train --model someone/tiny-bert --task glue/mnli")
    card = ModelCard.load(tmp_path / CARD_NAME)  # parses as a Hub model card
    assert card.data.library_name == "readapt" and card.data.base_model == "someone/tiny-bert"
    assert card.data.pipeline_tag == "text-classification"
    text = card.text
    for expected in ("`someone/tiny-bert`", "`SEQ_CLS`, 3 label(s)", "`glue/mnli`", "| rnn_type | `gru` |",
                     "| rnn_dim | `8` |", "| test accuracy | 0.8125 |",
                     "readapt train --model someone/tiny-bert --task glue/mnli",
                     'AutoModel.from_pretrained("someone/tiny-bert")'):
        assert expected in text, expected


def test_local_base_model_stays_out_of_the_hub_metadata(tmp_path):
    backbone = tiny_gpt2()
    backbone.config._name_or_path = str(tmp_path)  # a local folder: the Hub would reject it as base_model
    get_read_model(backbone, ReadConfig(task_type="CAUSAL_LM", rnn_dim=8)).save_pretrained(tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / CARD_NAME)
    assert card.data.base_model is None and card.data.pipeline_tag == "text-generation"
    assert f"`{tmp_path}`" in card.text and "AutoModelForCausalLM" in card.text
    assert "## Metrics" not in card.text and "## Training command" not in card.text


def test_a_readme_readapt_did_not_write_is_kept(tmp_path):
    (tmp_path / CARD_NAME).write_text("# my notes\n")
    model = get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2))
    with pytest.warns(UserWarning, match="not written by readapt"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / CARD_NAME).read_text() == "# my notes\n"
    (tmp_path / CARD_NAME).unlink()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, metrics={"accuracy": 0.5})  # its own card is updated
    assert "| accuracy | 0.5000 |" in (tmp_path / CARD_NAME).read_text()


def test_save_pretrained_takes_transformers_arguments(tmp_path):
    model = get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2))
    full = {k: v.clone() for k, v in model.state_dict().items()}  # what Trainer/accelerate pass: backbone too
    with torch.no_grad():
        full["side.out.weight"].fill_(0.5)
    from safetensors.torch import load_file

    model.save_pretrained(tmp_path / "a", state_dict=full, safe_serialization=True)
    saved = load_file(str(tmp_path / "a" / "read_model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict()) and bool((saved["side.out.weight"] == 0.5).all())
    model.save_pretrained(tmp_path / "b", is_main_process=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path / "c", safe_serialization=False)
