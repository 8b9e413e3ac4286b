"""`--config run.yaml|run.json`: options from a file, flags override it, bad files are one line naming
the key and the file."""

import json

import pytest

from conftest import csv_rows, one_error_line
from readapt.cli import main
from readapt.config import ConfigError
from readapt.configfile import load_config_file
from readapt.train import TrainArgs


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr."""


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("configfile-data") / "train.csv"
    path.write_text("text,label\n" + csv_rows(24))
    return str(path)


def test_a_yaml_config_trains_and_flags_override_it(tiny_model_dir, train_csv, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\noutput: {out}\ntrain-file: {train_csv}\n"
                      "epochs: 5\nbatch-size: 6\nmax_length: 16\nrnn_dim: 8\ndevice: cpu\nlr: 1e-3\n"
                      "layers: [0, 2]\n")
    assert main(["train", "--config", str(config), "--epochs", "1", "--layers", "1"]) == 0
    saved = json.loads((out / "run_config.json").read_text())["args"]
    # the file's values (dashed or not), the flags' where both are given; run_config.json records the result
    assert (saved["epochs"], saved["batch_size"], saved["max_length"], saved["lr"]) == (1, 6, 16, 0.001)
    assert saved["layers"] == [1]  # a repeatable flag replaces the file's list, it does not extend it
    assert saved["model"] == tiny_model_dir and saved["train_file"] == train_csv
    assert json.loads((out / "metrics.json").read_text())["history"][-1]["step"] == 4  # 24 / 6, one epoch


def test_json_and_yaml_read_the_same(tmp_path):
    values = {"model": "m", "output": "o", "batch_size": 4, "text-column": ["a", "b"], "overwrite": True,
              "lr": 0.5}
    (tmp_path / "a.json").write_text(json.dumps(values))
    (tmp_path / "a.yml").write_text("model: m\noutput: o\nbatch_size: 4\ntext-column: [a, b]\noverwrite: true\n"
                                    "lr: 5e-1\n")
    expected = {"model": "m", "output": "o", "batch_size": 4, "text_column": ["a", "b"], "overwrite": True, "lr": 0.5}
    assert load_config_file(str(tmp_path / "a.json"), TrainArgs) == expected
    assert load_config_file(str(tmp_path / "a.yml"), TrainArgs) == expected


@pytest.mark.parametrize("name, text, words", [
    ("run.yaml", "model: m\noutput: o\nepoch: 3\n", ["run.yaml", "unknown key 'epoch'", "did you mean epochs"]),
    ("run.yaml", "model: m\noutput: o\nepochs: '3'\n", ["run.yaml", "epochs='3'", "expected int"]),
    ("run.json", '{"model": "m", "output": "o", "overwrite": "yes"}', ["run.json", "overwrite", "expected bool"]),
    ("run.yaml", "model: m\noutput: o\nlayers: 3\n", ["run.yaml", "layers=3", "expected"]),
    ("run.yaml", "model: m\noutput: o\nepochs: 0\n", ["run.yaml", "--epochs 0 is out of range"]),
    ("run.yaml", "model: m\noutput: o\nmethod: nope\n", ["run.yaml", "method"]),
    ("run.yaml", "model: m\n output: [\n", ["run.yaml", "not valid YAML"]),
    ("run.json", '{"model": "m",', ["run.json", "not valid JSON"]),
    ("run.yaml", "- model\n- m\n", ["run.yaml", "expected a mapping"]),
    ("run.toml", "model = 'm'\n", ["--config", ".yaml, .yml or .json"]),
    ("run.yaml", "model: m\noutput: o\nbatch-size: 4\nbatch_size: 5\n", ["run.yaml", "given twice"]),
])
def test_bad_config_files_are_one_line_naming_file_and_key(tmp_path, capsys, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    line = one_error_line(capsys, ["train", "--config", str(path)])
    assert all(word in line for word in words), line
    assert not (tmp_path / "o").exists()


def test_a_bad_flag_is_not_blamed_on_the_file(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\noutput: o\nepochs: 2\n")
    line = one_error_line(capsys, ["train", "--config", str(path), "--epochs", "0"])
    assert "--epochs 0 is out of range" in line and "run.yaml" not in line


def test_a_missing_config_file(tmp_path, capsys):
    line = one_error_line(capsys, ["train", "--config", str(tmp_path / "none.yaml")])
    assert "--config" in line and "does not exist" in line


def test_required_options_come_from_the_file_or_the_command_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\n")
    with pytest.raises(SystemExit):  # argparse: --output is still required
        main(["train", "--config", str(path)])
    assert "--output" in capsys.readouterr().err


def test_api_error_type(tmp_path):
    (tmp_path / "x.yaml").write_text("nope: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config_file(str(tmp_path / "x.yaml"), TrainArgs)


def test_bench_reads_a_config_file_too(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("model: m\noutput: o\nmethods: [read, magic]\n")
    line = one_error_line(capsys, ["bench", "--config", str(path)])
    assert "grid.yaml" in line and "unknown method 'magic'" in line
    line = one_error_line(capsys, ["bench", "--config", str(path), "--methods", "read", "--lr", "0"])
    assert "--lr 0.0 is out of range" in line and "grid.yaml" not in line  # the flag's value, not the file's
