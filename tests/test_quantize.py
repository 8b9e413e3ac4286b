"""An int8 frozen backbone (backbones/quantize.py): READ trains on it end to end on the CPU, the
backbone's Linear layers really hold int8 weights, and what the loss differentiates through stays."""

import json

import pytest
import torch

from conftest import csv_rows, refused_train
from tiny_models import tiny_bert, tiny_llama, tiny_t5
from readapt import ReadConfig, get_read_model
from readapt.backbones.quantize import DynamicLinear, quantize_int8, weight_bytes
from readapt.train import TrainArgs, load_run, train


def _int8_linears(model) -> int:
    return sum(isinstance(m, DynamicLinear) for m in model.modules())


def test_read_trains_end_to_end_on_an_int8_backbone(tiny_model_dir, tmp_path, quiet, capsys):
    (tmp_path / "train.csv").write_text("text,label\n" + csv_rows(24))
    (tmp_path / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    common = dict(model=tiny_model_dir, train_file=str(tmp_path / "train.csv"),
                  validation_file=str(tmp_path / "val.csv"), epochs=2, batch_size=8, max_length=24, rnn_dim=8,
                  device="cpu")
    fp32 = train(TrainArgs(output=str(tmp_path / "fp32"), **common), argv=["t"])
    int8 = train(TrainArgs(output=str(tmp_path / "int8"), quantize="int8", **common), argv=["t"])
    assert int8["cache"] == "miss"            # not the fp32 run's states: another cache entry
    assert all(len(h["validation"]) for h in int8["history"]) and int8["train_seconds"] > 0
    assert json.loads((tmp_path / "int8" / "run_config.json").read_text())["args"]["quantize"] == "int8"
    model, *_ = load_run(tmp_path / "int8", device="cpu")   # eval and predict load it quantised again
    assert _int8_linears(model.base_model) == 2 * 6 + 1      # q, k, v, out, up, down in 2 layers; the pooler
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert fp32["validation"].keys() == int8["validation"].keys()


@pytest.mark.parametrize("make, config, kind", [
    (tiny_bert, ReadConfig(rnn_dim=8, num_labels=2), "encoder"),
    (tiny_llama, ReadConfig(task_type="CAUSAL_LM", rnn_dim=8), "causal"),
    (tiny_t5, ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8), "seq2seq"),
])
def test_int8_backbone_keeps_what_the_loss_differentiates_and_gets_no_gradient(make, config, kind):
    backbone = make()
    reference = weight_bytes(backbone)
    quantized = quantize_int8(backbone, kind)
    assert _int8_linears(quantized) > 0
    assert weight_bytes(quantized) < 0.7 * reference
    head = quantized.get_output_embeddings() if kind != "encoder" else None
    assert head is None or isinstance(head, torch.nn.Linear)        # the LM head stays fp32 (the loss passes it)
    if kind == "seq2seq":                                           # the Joiner reads V and O of cross-attention
        assert isinstance(quantized.decoder.block[0].layer[1].EncDecAttention.v, torch.nn.Linear)
    model = get_read_model(quantized, config).train()
    for side in [m for m in model.modules() if type(m).__name__ == "SideNetwork"]:
        torch.nn.init.normal_(side.out.weight, std=0.1)
    ids = torch.randint(2, 100, (2, 6))
    labels = {"SEQ_CLS": torch.tensor([0, 1]), "CAUSAL_LM": ids, "SEQ_2_SEQ_LM": torch.randint(2, 100, (2, 3))}
    loss = model(input_ids=ids, labels=labels[config.task_type]).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in model.base_model.parameters())
    assert model.side.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("flags, words", [
    (["--quantize", "int4"], "--quantize int4: choose one of none, int8"),
    (["--quantize", "nf4"], "needs bitsandbytes on a CUDA device"),
    (["--quantize", "int8", "--method", "full"], "--method full trains the backbone's weights"),
    (["--quantize", "int8", "--backbone-dtype", "bfloat16"], "quantises a float32 backbone"),
])
def test_bad_quantize_options_are_one_line(tiny_model_dir, tmp_path, capsys, flags, words):
    line = refused_train(capsys, tiny_model_dir, tmp_path, flags)
    assert words in line
    assert not (tmp_path / "run").exists()
