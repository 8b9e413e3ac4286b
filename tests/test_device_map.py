"""--device-map auto: a frozen backbone split between the CPU and disk by accelerate's big-model
loading trains READ to the very numbers of the backbone in one place."""

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from conftest import csv_rows, refused_train, save_model_dir
from readapt.backbones.loading import execution_device
from readapt.train import TrainArgs, load_run, train


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, minilm_path):
    """Layers wider than the embedding table, so a memory cap can split them (accelerate keeps room
    for the largest module): 3 layers of ~8 MB, a ~4 MB embedding table."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                 num_attention_heads=4, intermediate_size=32768, max_position_embeddings=128))
    return save_model_dir(tmp_path_factory, "wide-bert", model, tokenizer)


def test_a_backbone_split_over_cpu_and_disk_trains_like_one_in_memory(wide_model_dir, tmp_path, quiet):
    (tmp_path / "train.csv").write_text("text,label\n" + csv_rows(16))
    (tmp_path / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    common = dict(model=wide_model_dir, train_file=str(tmp_path / "train.csv"),
                  validation_file=str(tmp_path / "val.csv"), epochs=2, batch_size=8, max_length=16, rnn_dim=8,
                  device="cpu", cache="off")   # every step runs the (dispatched) backbone
    whole = train(TrainArgs(output=str(tmp_path / "whole"), **common), argv=["t"])
    split = train(TrainArgs(output=str(tmp_path / "split"), device_map="auto", max_memory=["cpu=22MB"],
                            offload_folder=str(tmp_path / "offload"), **common), argv=["t"])
    assert [h["validation"] for h in split["history"]] == [h["validation"] for h in whole["history"]]
    model, *_ = load_run(tmp_path / "split", device="cpu")  # eval/predict load it dispatched again
    placed = set(model.base_model.hf_device_map.values())
    assert placed == {"cpu", "disk"}                          # really split: some layers on disk
    assert any(p.device.type == "meta" for p in model.base_model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters() if p.requires_grad)


def test_execution_device_is_the_one_gpu_or_the_cpu():
    assert execution_device({"embeddings": "cpu", "encoder": "disk"}) == torch.device("cpu")
    assert execution_device({"embeddings": 0, "encoder": "cpu", "pooler": "disk"}) == torch.device("cuda:0")
    with pytest.raises(ValueError, match="one GPU plus CPU/disk offload"):
        execution_device({"embeddings": 0, "encoder": 1})


@pytest.mark.parametrize("flags, words", [
    (["--device-map", "balanced"], "--device-map balanced: the one value is auto"),
    (["--device-map", "auto", "--method", "full"], "--method full trains its weights"),
    (["--max-memory", "cpu=1GB"], "go with --device-map auto"),
    (["--device-map", "auto", "--max-memory", "gpu0=1GB"], "write DEVICE=SIZE"),
])
def test_bad_device_map_options_are_one_line(tiny_model_dir, tmp_path, capsys, flags, words):
    line = refused_train(capsys, tiny_model_dir, tmp_path, flags)
    assert words in line
