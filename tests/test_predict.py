"""`readapt predict`: --probabilities, --input-file in the training format (.csv/.tsv/.jsonl) or one
text per line, - for standard input, --output-format jsonl|text; and the model card of a run."""

import io
import json
import sys

import pytest
import torch

from conftest import csv_rows, one_error_line
from readapt import ReadModel
from readapt.cli import main
from readapt.config import CARD_NAME
from readapt.train import TrainArgs, train

TEXTS = ["good film 1", "awful plot 3", "lovely 4"]


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """A classification run (one text) and a regression run on sentence pairs, 1 epoch each."""
    d = tmp_path_factory.mktemp("predict")
    (d / "train.csv").write_text("text,label\n" + csv_rows(24))
    pairs = "".join(f"first {i},second {i % 5},{i % 4 + 0.5}\n" for i in range(24))
    (d / "pairs.csv").write_text("premise,hypothesis,score\n" + pairs)
    common = dict(model=tiny_model_dir, epochs=1, batch_size=8, max_length=16, device="cpu", rnn_dim=8)
    train(TrainArgs(output=str(d / "clf"), train_file=str(d / "train.csv"), **common),
          argv=["readapt", "train", "--train-file", "train.csv"])
    train(TrainArgs(output=str(d / "reg"), train_file=str(d / "pairs.csv"), text_column=["premise", "hypothesis"],
                    label_column="score", **common))
    return d


def _predict(capsys, *argv) -> list[str]:
    capsys.readouterr()
    assert main(["predict", "--device", "cpu", *map(str, argv)]) == 0
    return capsys.readouterr().out.strip().splitlines()


def _records(capsys, *argv) -> list[dict]:
    return [json.loads(line) for line in _predict(capsys, *argv)]


def test_probabilities_beside_each_label(runs, capsys):
    records = _records(capsys, "--run", runs / "clf", "--text", *TEXTS, "--probabilities")
    assert [r["text"] for r in records] == TEXTS
    for record in records:
        probabilities = record["probabilities"]
        assert sorted(probabilities) == ["neg", "pos"]
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-3)
        assert max(probabilities, key=probabilities.get) == record["prediction"]
    plain = _records(capsys, "--run", runs / "clf", "--text", *TEXTS)
    assert [r["prediction"] for r in plain] == [r["prediction"] for r in records]
    assert all("probabilities" not in r for r in plain)


def test_probabilities_match_the_saved_model(runs, capsys, tiny_model_dir):
    from transformers import AutoModel, AutoTokenizer

    record, = _records(capsys, "--run", runs / "clf", "--text", TEXTS[0], "--probabilities")
    model = ReadModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), runs / "clf").eval()
    batch = AutoTokenizer.from_pretrained(tiny_model_dir)([TEXTS[0]], return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits.softmax(-1)[0].tolist()
    assert [record["probabilities"][k] for k in ("neg", "pos")] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("name,content", [
    ("in.csv", "label,text\npos,good film 1\nneg,\"awful plot 3\"\npos,lovely 4\n"),
    ("in.tsv", "text\ngood film 1\nawful plot 3\nlovely 4\n"),
    ("in.jsonl", "".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS))),
    ("in.txt", "good film 1\n\nawful plot 3\nlovely 4\n"),
])
def test_input_file_in_the_training_format_or_lines(runs, capsys, tmp_path, name, content):
    (tmp_path / name).write_text(content)
    expected = _records(capsys, "--run", runs / "clf", "--text", *TEXTS)
    assert _records(capsys, "--run", runs / "clf", "--input-file", tmp_path / name) == expected


def test_standard_input(runs, capsys, monkeypatch):
    expected = _records(capsys, "--run", runs / "clf", "--text", *TEXTS)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(TEXTS).encode())))
    assert _records(capsys, "--run", runs / "clf", "--input-file", "-") == expected
    jsonl = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(jsonl.encode())))
    assert _records(capsys, "--run", runs / "clf", "--input-file", "-", "--input-format", "jsonl") == expected


def test_output_format_text(runs, capsys):
    records = _records(capsys, "--run", runs / "clf", "--text", *TEXTS, "--probabilities")
    lines = _predict(capsys, "--run", runs / "clf", "--text", *TEXTS, "--probabilities", "--output-format", "text")
    for line, record in zip(lines, records, strict=True):
        label, probabilities, text = line.split("\t")
        assert label == record["prediction"] and text == record["text"]
        assert probabilities == " ".join(f"{k}={v:.4f}" for k, v in record["probabilities"].items())


def test_regression_on_pairs_prints_the_value(runs, capsys, tmp_path):
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"premise": "first 1", "hypothesis": "second 2"}) + "\n")
    from_file, = _records(capsys, "--run", runs / "reg", "--input-file", tmp_path / "pairs.jsonl", "--probabilities")
    assert from_file["text"] == "first 1 ||| second 2" and isinstance(from_file["prediction"], float)
    assert "probabilities" not in from_file
    from_text, = _records(capsys, "--run", runs / "reg", "--text", "first 1 ||| second 2")
    assert from_text == from_file


def test_bad_inputs_are_one_line(runs, capsys, tmp_path, monkeypatch):
    (tmp_path / "wrong.csv").write_text("sentence,label\ngood,pos\n")
    line = one_error_line(capsys, ["predict", "--run", str(runs / "clf"), "--input-file", str(tmp_path / "wrong.csv")])
    assert "has no column 'text'" in line and "columns: sentence, label" in line
    (tmp_path / "pairs.csv").write_text("premise\nonly one side\n")
    line = one_error_line(capsys, ["predict", "--run", str(runs / "reg"), "--input-file", str(tmp_path / "pairs.csv")])
    assert "has no column 'hypothesis'" in line
    (tmp_path / "empty.jsonl").write_text('{"text": "   "}\n')
    line = one_error_line(capsys, ["predict", "--run", str(runs / "clf"), "--input-file", str(tmp_path / "empty.jsonl")])
    assert "line 1 has an empty 'text'" in line
    line = one_error_line(capsys, ["predict", "--run", str(runs / "clf"), "--text", "a", "--output-format", "xml"])
    assert "--output-format xml: choose one of jsonl, text" in line
    monkeypatch.setattr("readapt.inputs.PREDICT_INPUT_MAX_BYTES", 10)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * 100)))
    line = one_error_line(capsys, ["predict", "--run", str(runs / "clf"), "--input-file", "-"])
    assert "standard input holds more than readapt's limit" in line


def test_a_run_folder_has_a_model_card_with_scores_and_command(runs):
    card = (runs / "clf" / CARD_NAME).read_text()
    metrics = json.loads((runs / "clf" / "metrics.json").read_text())
    assert "library_name: readapt" in card and "readapt train --train-file train.csv" in card
    accuracy = metrics["validation"]["accuracy"]
    assert f"| validation accuracy | {accuracy:.4f} |" in card
