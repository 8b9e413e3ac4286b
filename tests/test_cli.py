"""Every bad input gets one line on stderr naming the problem and the fix, a non-zero exit code,
no traceback (--debug shows it) and no output directory; the Python API raises the same error as a
ValueError subclass. One test per bad input of the hardening issue, through both doors."""

import json
import shutil
from pathlib import Path

import pytest

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

from conftest import csv_rows
import readapt.train
from readapt import ConfigError
from readapt.backbones import UnsupportedModelError
from readapt.backbones.loading import ModelLoadError
from readapt.checkpoint import CheckpointError
from readapt.cli import build_parser, main
from readapt.config import CONFIG_NAME, WEIGHTS_NAME
from readapt.data import DataError, TaskSpec
from readapt.train import TrainArgs, TrainingError, train


@pytest.fixture(autouse=True)
def _quiet(quiet):
    """No progress bars on stderr, so that stderr holds exactly what the CLI prints."""


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    """Good data, every kind of bad data file, and bad model folders."""
    d = tmp_path_factory.mktemp("cli-inputs")
    p = {"model": tiny_model_dir, "dir": d}
    p["train"] = _write(d / "train.csv", "text,label\n" + csv_rows(24))
    p["val"] = _write(d / "val.csv", "text,label\n" + csv_rows(8, 1))
    p["missing"] = str(d / "no-such-file.csv")
    (d / "folder.csv").mkdir()
    p["folder"] = str(d / "folder.csv")
    (d / "latin1.csv").write_bytes(b"text,label\ncaf\xe9 cr\xe8me,pos\nbad,neg\n")
    p["latin1"] = str(d / "latin1.csv")
    p["bad_ext"] = _write(d / "data.xlsx", "text,label\na,pos\n")
    p["wrong_cols"] = _write(d / "wrong_cols.csv", "sentence,label\na,pos\nb,neg\n")
    p["wrong_label_col"] = _write(d / "wrong_label_col.csv", "text,target\na,pos\nb,neg\n")
    p["empty"] = _write(d / "empty.csv", "")
    p["header_only"] = _write(d / "header_only.csv", "text,label\n")
    p["empty_jsonl"] = _write(d / "empty.jsonl", "\n\n")
    p["bad_jsonl"] = _write(d / "bad.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": \n')
    p["unknown_label"] = _write(d / "unknown_label.csv", "text,label\na,pos\nb,maybe\n")
    p["one_class"] = _write(d / "one_class.csv", "text,label\na,pos\nb,pos\n")
    p["regression"] = _write(d / "regression.csv", "text,label\na,0.5\nb,1.5\nc,2.25\nd,3.75\n")
    p["regression_word"] = _write(d / "regression_word.csv", "text,label\na,0.5\nb,high\n")
    p["mixed"] = _write(d / "mixed.csv", "text,label\na,1\nb,pos\nc,2\n")
    p["empty_text"] = _write(d / "empty_text.csv", "text,label\na,pos\n   ,neg\n")
    p["missing_label"] = _write(d / "missing_label.csv", "text,label\na,pos\nb,\n")
    p["huge_label"] = _write(d / "huge_label.csv", "text,label\ngood film,0.5\nbad film,1e30\nok,2.5\nmeh,3.5\n")
    for name, model_type in (("gpt_neo", "gpt_neo"), ("foobar", "foobar")):
        (d / name).mkdir()
        _write(d / name / "config.json", json.dumps({"model_type": model_type}))
        p[name] = str(d / name)
    (d / "no_tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_model_dir) / name, d / "no_tokenizer" / name)
    p["no_tokenizer"] = str(d / "no_tokenizer")
    (d / "empty_model").mkdir()
    p["empty_model"] = str(d / "empty_model")
    return p


BASE = {"epochs": 1, "batch_size": 8, "max_length": 16, "device": "cpu", "rnn_dim": 8}


def _argv(command: str, options: dict) -> list[str]:
    argv = [command]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """(exit code, the single stderr line); asserts the one-line contract."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("readapt: error: "), err
    return code, lines[0]


def _has(line: str, words) -> None:
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"


# id -> (overrides given the paths, the exception the Python API raises, words the message must hold)
BAD_INPUTS = {
    "model-path-unknown": (lambda p: {"model": "/nonexistent/readapt-model"}, ModelLoadError,
                           ["cannot load model", "/nonexistent/readapt-model", "not a local model folder"]),
    "model-folder-empty": (lambda p: {"model": p["empty_model"]}, ModelLoadError,
                           ["cannot load model", "empty_model"]),
    "model-type-unsupported": (lambda p: {"model": p["gpt_neo"]}, UnsupportedModelError,
                               ["model type 'gpt_neo' is not supported", "supported: ", "bert"]),
    "model-type-unknown": (lambda p: {"model": p["foobar"]}, ModelLoadError,
                           ["cannot load model", "foobar"]),
    "model-tokenizer-missing": (lambda p: {"model": p["no_tokenizer"]}, ValueError,
                                ["no usable tokenizer", "tokenizer.save_pretrained"]),
    "task-unknown": (lambda p: {"task": "glue/nope", "train_file": None, "validation_file": None}, DataError,
                     ["unknown task 'glue/nope'", "choose one of", "glue/rte", "--train-file"]),
    "task-typo": (lambda p: {"task": "rte", "train_file": None, "validation_file": None}, DataError,
                  ["unknown task", "did you mean glue/rte"]),
    "task-none": (lambda p: {"train_file": None, "validation_file": None}, DataError,
                  ["no task given", "--task", "--train-file"]),
    "method-unknown": (lambda p: {"method": "magic"}, ValueError, ["unknown method 'magic'", "choose one of", "read"]),
    "data-file-missing": (lambda p: {"train_file": p["missing"]}, DataError,
                          ["no-such-file.csv does not exist", "--train-file"]),
    "data-file-folder": (lambda p: {"validation_file": p["folder"]}, DataError,
                         ["is a folder, not a file", "--validation-file"]),
    "data-file-not-utf8": (lambda p: {"train_file": p["latin1"]}, DataError, ["not UTF-8", "re-save it as UTF-8"]),
    "data-file-extension": (lambda p: {"train_file": p["bad_ext"]}, DataError,
                            ["unsupported extension '.xlsx'", ".csv"]),
    "data-jsonl-broken": (lambda p: {"train_file": p["bad_jsonl"]}, DataError,
                          ["line 2 is not valid JSON", "one complete JSON object per line"]),
    "columns-text-wrong": (lambda p: {"train_file": p["wrong_cols"]}, DataError,
                           ["no column 'text'", "columns: sentence, label", "--text-column"]),
    "columns-label-wrong": (lambda p: {"train_file": p["wrong_label_col"]}, DataError,
                            ["no column 'label'", "--label-column"]),
    "columns-text-option-wrong": (lambda p: {"text_column": ["review"]}, DataError,
                                  ["no column 'review'", "--text-column"]),
    "dataset-empty-file": (lambda p: {"train_file": p["empty"]}, DataError, ["is empty", "add a header line"]),
    "dataset-header-only": (lambda p: {"train_file": p["header_only"]}, DataError, ["no data rows", "add examples"]),
    "dataset-empty-jsonl": (lambda p: {"train_file": p["empty_jsonl"]}, DataError, ["is empty"]),
    "dataset-one-class": (lambda p: {"train_file": p["one_class"]}, DataError,
                          ["only one class", "at least two classes"]),
    "labels-outside-classes": (lambda p: {"validation_file": p["unknown_label"]}, DataError,
                               ["labels not seen in the train file", "'maybe' (line 3)", "known classes: neg, pos"]),
    "labels-outside-classes-test-file": (lambda p: {"test_file": p["unknown_label"]}, DataError,
                                         ["test file", "labels not seen in the train file", "known classes"]),
    "label-regression-not-number": (lambda p: {"train_file": p["regression"], "validation_file": p["regression_word"]},
                                    DataError, ["label 'high', which is not a number",
                                                "regression labels must all be numbers"]),
    "labels-mixed-types": (lambda p: {"train_file": p["mixed"]}, DataError,
                           ["mixed label types", "make every label a class name or every label a number"]),
    "label-missing": (lambda p: {"train_file": p["missing_label"]}, DataError, ["line 3 has no label", "fill it in"]),
    "text-empty": (lambda p: {"train_file": p["empty_text"]}, DataError,
                   ["line 3 has an empty 'text'", "fill in the text or remove the row"]),
    "max-length-zero": (lambda p: {"max_length": 0}, ValueError, ["--max-length 0 is out of range", "use 1.."]),
    "max-length-negative": (lambda p: {"max_length": -5}, ValueError, ["--max-length -5 is out of range"]),
    "batch-size-absurd": (lambda p: {"batch_size": 10_000_000}, ValueError,
                          ["--batch-size 10000000 is out of range", "use 1..65536"]),
    "batch-size-zero": (lambda p: {"batch_size": 0}, ValueError, ["--batch-size 0 is out of range"]),
    "eval-batch-size-zero": (lambda p: {"eval_batch_size": 0}, ValueError, ["--eval-batch-size 0 is out of range"]),
    "lr-absurd": (lambda p: {"lr": 100.0}, ValueError, ["--lr 100.0 is out of range", "e.g. 1e-3"]),
    "lr-zero": (lambda p: {"lr": 0.0}, ValueError, ["--lr 0.0 is out of range"]),
    "lr-negative": (lambda p: {"lr": -0.001}, ValueError, ["--lr -0.001 is out of range"]),
    "lr-nan": (lambda p: {"lr": float("nan")}, ValueError, ["--lr nan is out of range"]),
    "lr-inf": (lambda p: {"lr": float("inf")}, ValueError, ["--lr inf is out of range"]),
    "epochs-zero": (lambda p: {"epochs": 0}, ValueError, ["--epochs 0 is out of range", "use 1..10000"]),
    "epochs-absurd": (lambda p: {"epochs": 10**7}, ValueError, ["--epochs 10000000 is out of range"]),
    "rnn-dim-zero": (lambda p: {"rnn_dim": 0}, ValueError, ["--rnn-dim 0 is out of range"]),
    "rnn-type-unknown": (lambda p: {"rnn_type": "transformer"}, ValueError, ["--rnn-type transformer", "gru, lstm, rnn"]),
    "layer-stride-zero": (lambda p: {"layer_stride": 0}, ValueError, ["--layer-stride 0 is out of range"]),
    "layer-stride-and-layers": (lambda p: {"layer_stride": 2, "layers": [2]}, ValueError,
                                ["--layers and --layer-stride", "give one of them"]),
    "layer-stride-not-read": (lambda p: {"layer_stride": 2, "method": "lora"}, ValueError,
                              ["--layer-stride is a READ option"]),
    "side-chunk-negative": (lambda p: {"side_chunk_tokens": -1}, ValueError, ["--side-chunk-tokens -1 is out of range"]),
    "side-chunk-not-read": (lambda p: {"side_chunk_tokens": 0, "method": "full"}, ValueError,
                            ["--side-chunk-tokens is a READ option"]),
    "side-dtype-unknown": (lambda p: {"side_dtype": "float16"}, ValueError,
                           ["--side-dtype float16", "choose one of auto, float32, bfloat16"]),
    "side-dtype-not-read": (lambda p: {"side_dtype": "bfloat16", "method": "lora"}, ValueError,
                            ["--side-dtype is a READ option"]),
    "bidirectional-odd": (lambda p: {"bidirectional": True, "rnn_dim": 9}, ValueError,
                          ["--bidirectional", "even --rnn-dim (got 9)"]),
    "bidirectional-not-read": (lambda p: {"bidirectional": True, "method": "lora"}, ValueError,
                               ["--bidirectional is a READ option"]),
    "top-layers-not-read-top": (lambda p: {"top_layers": 2}, ValueError, ["--top-layers is a read_top option"]),
    "top-layers-zero": (lambda p: {"top_layers": 0, "method": "read_top"}, ValueError,
                        ["--top-layers 0 is out of range"]),
    "top-layers-every-layer": (lambda p: {"top_layers": 2, "method": "read_top"}, ConfigError,
                               ["--top-layers 2", "this backbone has 2 layers", "--method full"]),
    "warmup-ratio-one": (lambda p: {"warmup_ratio": 1.0}, ValueError, ["--warmup-ratio 1.0", "[0, 1)"]),
    "max-train-examples-zero": (lambda p: {"max_train_examples": 0}, ValueError,
                                ["--max-train-examples 0", "positive"]),
    "device-cuda-missing": (lambda p: {"device": "cuda"}, ValueError, ["no CUDA device", "--device cpu"]),
}
if torch.cuda.is_available():
    del BAD_INPUTS["device-cuda-missing"]


def _options(files, tmp_path, case: str) -> dict:
    make, _, _ = BAD_INPUTS[case]
    options = {"model": files["model"], "output": str(tmp_path / "out"), "train_file": files["train"],
               "validation_file": files["val"], **BASE}
    options.update(make(files))
    return options


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_cli(case, files, tmp_path, capsys):
    options = _options(files, tmp_path, case)
    _, line = run_cli(capsys, _argv("train", options))
    _has(line, BAD_INPUTS[case][2])
    assert not (tmp_path / "out").exists()  # nothing written: errors come before the run directory


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_api(case, files, tmp_path):
    options = _options(files, tmp_path, case)
    expected = BAD_INPUTS[case][1]
    with pytest.raises(expected) as info:
        train(TrainArgs(**options))
    assert isinstance(info.value, ValueError)  # every bad input is a ValueError subclass
    _has(str(info.value), BAD_INPUTS[case][2])
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(files, tmp_path, capsys):
    options = _options(files, tmp_path, "labels-mixed-types")
    with pytest.raises(DataError, match="mixed label types"):
        main(_argv("train", options) + ["--debug"])
    with pytest.raises(DataError, match="mixed label types"):  # also before the command name
        main(["--debug", *_argv("train", options)])
    assert not (tmp_path / "out").exists()


def test_unexpected_exception_points_to_debug(files, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(readapt.train, "load_task", broken)
    options = _options(files, tmp_path, "labels-mixed-types")
    _, line = run_cli(capsys, _argv("train", options))
    assert line == "readapt: error: 'surprise' (run with --debug for the traceback)"
    # user-facing errors (ValueError, OSError, TrainingError) carry no such hint
    monkeypatch.setattr(readapt.train, "load_task", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    _, line = run_cli(capsys, _argv("train", options))
    assert line == "readapt: error: disk gone"


# -- the output directory ----------------------------------------------------------------------------
def _good(files, out, **extra) -> dict:
    return {"model": files["model"], "output": str(out), "train_file": files["train"],
            "validation_file": files["val"], **BASE, **extra}


@pytest.fixture(scope="module")
def finished_run(files, tmp_path_factory):
    """A finished READ run (1 epoch, checkpoints each step); tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    train(TrainArgs(**_good(files, out, save_every=1)))
    return out


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_output_holding_a_run_is_refused(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    _, line = run_cli(capsys, _argv("train", _good(files, run)))
    _has(line, ["already holds a run", "choose another --output", "--resume", "--overwrite"])
    assert sorted(p.name for p in run.iterdir()) == before
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainArgs(**_good(files, run)))


def test_overwrite_replaces_a_run_only_when_asked(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    # a file readapt writes, left by an older run of another method: replaced (a user's file would
    # block --overwrite instead: tests/test_rundir.py)
    (run / "trainable.safetensors").write_text("from the old run")
    assert main(_argv("train", _good(files, run, overwrite=True))) == 0
    assert not (run / "trainable.safetensors").exists() and (run / "metrics.json").is_file()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(files, tmp_path, capsys):
    folder = tmp_path / "my-documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    _, line = run_cli(capsys, _argv("train", _good(files, folder, overwrite=True)))
    _has(line, ["not a readapt run", "choose another --output"])
    assert (folder / "thesis.tex").read_text() == "precious"


def test_overwrite_with_a_bad_input_keeps_the_old_run(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    _, line = run_cli(capsys, _argv("train", _good(files, run, overwrite=True, train_file=files["mixed"])))
    _has(line, ["mixed label types"])
    assert sorted(p.name for p in run.iterdir()) == before  # deleted only once everything is valid


def test_output_that_is_a_file(files, tmp_path, capsys):
    path = tmp_path / "out"
    path.write_text("x")
    _, line = run_cli(capsys, _argv("train", _good(files, path)))
    _has(line, ["is a file, not a folder", "choose another --output"])


def test_resume_without_a_run(files, tmp_path, capsys):
    _, line = run_cli(capsys, _argv("train", _good(files, tmp_path / "out", resume=True)))
    _has(line, ["--resume", "holds no checkpoint", "drop --resume"])
    assert not (tmp_path / "out").exists()


def test_resume_a_finished_run_is_refused(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    _, line = run_cli(capsys, _argv("train", _good(files, run, resume=True)))
    _has(line, ["already finished", "readapt eval --run", "--overwrite"])


def test_resume_with_different_arguments_is_refused(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    (run / "metrics.json").unlink()  # as if killed just before the end
    _, line = run_cli(capsys, _argv("train", _good(files, run, resume=True, lr=1e-3, save_every=1)))
    _has(line, ["--resume with different arguments", "lr 0.001 vs None", "repeat the original arguments"])
    _, line = run_cli(capsys, _argv("train", _good(files, run, resume=True, rnn_dim=16, save_every=1)))
    _has(line, ["rnn_dim 16 vs 8"])
    # what does not change the training (device, --save-every) may differ
    assert main(_argv("train", _good(files, run, resume=True, save_every=5))) == 0


# -- saved runs and side networks: eval / predict ----------------------------------------------------
def _tiny_backbone_dir(tmp_path: Path, tokenizer_dir: str, layers: int, hidden: int) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=128))
    path = tmp_path / f"bert-{layers}x{hidden}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_eval_and_predict_work_on_the_run(finished_run, capsys):
    assert main(["eval", "--run", str(finished_run), "--split", "validation", "--device", "cpu"]) == 0
    assert main(["predict", "--run", str(finished_run), "--text", "good film", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert '"split": "validation"' in out and '"prediction"' in out


def test_side_network_for_another_backbone_depth(files, finished_run, tmp_path, capsys):
    """The side network's size does not depend on depth: only the recorded identity catches this."""
    run = _copy_run(finished_run, tmp_path)
    deeper = _tiny_backbone_dir(tmp_path, files["model"], layers=3, hidden=32)
    _edit_json(run / "run_config.json", lambda d: d["args"].update(model=deeper))
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["saved for another backbone", "num_layers 2 vs 3", "load the backbone it was trained on"])
    with pytest.raises(ConfigError, match="num_layers 2 vs 3"):
        readapt.train.load_run(run, "cpu")


def test_side_network_for_another_backbone_width(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    wider = _tiny_backbone_dir(tmp_path, files["model"], layers=2, hidden=64)
    _edit_json(run / "run_config.json", lambda d: d["args"].update(model=wider))
    _, line = run_cli(capsys, ["predict", "--run", str(run), "--text", "hi", "--device", "cpu"])
    _has(line, ["saved for another backbone", "hidden_size 32 vs 64"])


def test_side_network_for_another_backbone_type(files, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    _edit_json(run / CONFIG_NAME, lambda d: d.update(backbone_model_type="roberta"))
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["saved for another backbone", "model_type 'roberta' vs 'bert'"])


def test_side_network_for_another_config(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    _edit_json(run / CONFIG_NAME, lambda d: d.update(rnn_dim=16))
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["saved for another READ config", "rnn_dim 16 vs 8"])


def test_side_network_weights_for_another_config(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    save_file({"side.rnn.weight_ih_l0": torch.zeros(3, 3)}, str(run / WEIGHTS_NAME))
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["saved for another READ config", "missing", "unexpected"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_side_network_safetensors_damaged(finished_run, tmp_path, capsys, damage):
    run = _copy_run(finished_run, tmp_path)
    path = run / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x07" * 300, "empty": b""}[damage])
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["not a readable safetensors file", "truncated or corrupted"])


def test_side_network_weights_missing(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    (run / WEIGHTS_NAME).unlink()
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["no trained weights", "did training finish"])


@pytest.mark.parametrize("edit,words", [
    (lambda d: d.update(colour="red"), ["unknown config key(s) ['colour']", "known keys"]),
    (lambda d: d.pop("rnn_dim"), ["missing key(s) ['rnn_dim']"]),
    (lambda d: d.update(rnn_dim="8"), ["rnn_dim='8'", "expected int"]),
    (lambda d: d.update(layers=[1, "2"]), ["layers=[1, '2']", "expected"]),
    (lambda d: d.update(head_dropout=True), ["head_dropout=True", "expected float"]),
], ids=["unknown-key", "missing-key", "wrong-type-str", "wrong-type-list-item", "wrong-type-bool"])
def test_read_config_json_strict(finished_run, tmp_path, capsys, edit, words):
    run = _copy_run(finished_run, tmp_path)
    _edit_json(run / CONFIG_NAME, edit)
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, words)


def test_read_config_json_not_json(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    (run / CONFIG_NAME).write_text('{"rnn_dim": 8,')
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["is not valid JSON", "corrupted"])


@pytest.mark.parametrize("edit,words", [
    (lambda d: d["args"].update(colour="red"), ["unknown key(s) ['colour']", "another readapt version"]),
    (lambda d: d["args"].pop("epochs"), ["missing key(s) ['epochs']"]),
    (lambda d: d["args"].update(epochs="1"), ["epochs='1'", "expected int"]),
    (lambda d: d["args"].update(max_length=0), ["--max-length 0 is out of range"]),
    (lambda d: d["args"].update(method="magic"), ["unknown method 'magic'"]),
    (lambda d: d["args"].update(layers="1 2"), ["layers='1 2'", "expected"]),
    (lambda d: d.update(args=[]), ["'args' must be a JSON object"]),
    (lambda d: d.pop("task"), ["has keys", "expected"]),
    (lambda d: d.update(task={"name": "x"}), ["'task' must be an object"]),
    (lambda d: d["task"].update(label_names=["only"]), ["fewer than two classes"]),
    (lambda d: d.update(lr="fast"), ["'lr' must be a positive number"]),
    (lambda d: d.update(text_to_text=1), ["'text_to_text' must be true or false"]),
], ids=["unknown-key", "missing-key", "wrong-type", "bad-value", "bad-method", "wrong-list-type", "args-not-object",
        "missing-top-key", "task-shape", "task-classes", "lr-type", "text-to-text-type"])
def test_run_config_json_strict(finished_run, tmp_path, capsys, edit, words):
    run = _copy_run(finished_run, tmp_path)
    _edit_json(run / "run_config.json", edit)
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["run_config.json", *words])
    with pytest.raises(ConfigError):
        readapt.train.load_run(run, "cpu")


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"null"])
def test_run_config_json_damaged(finished_run, tmp_path, capsys, content):
    run = _copy_run(finished_run, tmp_path)
    (run / "run_config.json").write_bytes(content)
    _, line = run_cli(capsys, ["eval", "--run", str(run), "--device", "cpu"])
    _has(line, ["run_config.json", "re-create the run"])


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    _, line = run_cli(capsys, ["eval", "--run", str(tmp_path), "--device", "cpu"])
    _has(line, ["is not a readapt run directory", "--output folder"])


# -- the training loop: non-finite loss, out of memory -----------------------------------------------
def test_infinite_loss_from_an_absurd_regression_label(files, tmp_path, capsys):
    out = tmp_path / "out"
    options = _good(files, out, train_file=files["huge_label"], validation_file=files["regression"])
    _, line = run_cli(capsys, _argv("train", options))
    _has(line, ["loss became inf at step 1", "check the labels", "no checkpoint had been written yet"])
    with pytest.raises(TrainingError, match="loss became inf at step 1"):
        train(TrainArgs(**{**options, "overwrite": True}))


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes. "
                 "Error code 12 (Cannot allocate memory)"),
], ids=["cuda", "cpu"])
def test_out_of_memory_says_what_to_lower(files, tmp_path, capsys, monkeypatch, error):
    def clip(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    code, line = run_cli(capsys, _argv("train", _good(files, tmp_path / "out")))
    assert code == 1
    _has(line, ["out of memory: lower --batch-size or --max-length"])
    assert "Tried to allocate" not in line and "DefaultCPUAllocator" not in line


def test_other_runtime_errors_are_not_called_out_of_memory(files, tmp_path, capsys, monkeypatch):
    def clip(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    _, line = run_cli(capsys, _argv("train", _good(files, tmp_path / "out")))
    assert line == "readapt: error: mat1 and mat2 shapes cannot be multiplied (run with --debug for the traceback)"


# -- remote code -----------------------------------------------------------------------------------
def test_trust_remote_code_is_off_unless_asked(files, tmp_path, monkeypatch, capsys):
    import readapt.backbones.loading as loading

    seen = []

    def recorder(auto):
        class Recorder:
            @staticmethod
            def from_pretrained(*args, **kwargs):
                seen.append((auto.__name__, kwargs.get("trust_remote_code", "absent")))
                return auto.from_pretrained(*args, **kwargs)
        return Recorder

    for name in ("AutoConfig", "AutoModel", "AutoTokenizer"):
        monkeypatch.setattr(loading, name, recorder(getattr(loading, name)))
    assert build_parser().parse_args(["train", "--model", "m", "--output", "o"]).trust_remote_code is False
    assert TrainArgs(model="m", output="o").trust_remote_code is False
    asked = build_parser().parse_args(["train", "--model", "m", "--output", "o", "--trust-remote-code"])
    assert asked.trust_remote_code is True
    spec = TaskSpec("t", ("a", "b"), ("accuracy",), ("text",))
    readapt.train.build(TrainArgs(**_good(files, tmp_path / "o")), spec, torch.device("cpu"))
    assert {name for name, _ in seen} == {"AutoConfig", "AutoModel", "AutoTokenizer"}
    assert all(flag is False for _, flag in seen), seen
    seen.clear()
    readapt.train.build(TrainArgs(**_good(files, tmp_path / "o", trust_remote_code=True)), spec, torch.device("cpu"))
    assert all(flag is True for _, flag in seen), seen
    seen.clear()
    assert main(_argv("train", _good(files, tmp_path / "cli"))) == 0  # end to end through the CLI
    assert seen and all(flag is False for _, flag in seen), seen


# -- readapt cache (issue 10) -------------------------------------------------------------------------------------
def test_cache_command_bad_values_are_one_line(tmp_path, capsys):
    cache_dir = str(tmp_path)
    for argv, words in [
            (["clear"], "readapt cache clear needs one of --keep-gb N (keep the N GiB used most recently) or --all"),
            (["clear", "--keep-gb", "1", "--all"], "needs one of --keep-gb N"),
            (["clear", "--keep-gb", "-2"], "--keep-gb -2.0 is out of range: use 0..1000000 (GiB)"),
            (["clear", "--keep-gb", "inf"], "--keep-gb inf is out of range"),
            (["list", "--all"], "--keep-gb and --all go with readapt cache clear; drop them to list"),
            (["empty"], "readapt cache empty: choose one of list, clear")]:
        assert words in run_cli(capsys, ["cache", *argv, "--cache-dir", cache_dir])[1]


def test_cache_command_never_deletes_a_folder_readapt_did_not_tag(tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / ("a" * 40)).mkdir(parents=True)  # named like an entry: still the user's
    (mine / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n# another tool's cache\n")
    for argv in (["clear", "--all"], ["list"]):
        line = run_cli(capsys, ["cache", *argv, "--cache-dir", str(mine)])[1]
        assert line.endswith(f"{mine} is not a readapt state cache (no CACHEDIR.TAG written by readapt), "
                             f"{'nothing deleted' if argv[0] == 'clear' else 'nothing listed'}: pass --cache-dir "
                             f"with the cache's folder")
    assert sorted(p.name for p in mine.iterdir()) == ["CACHEDIR.TAG", "a" * 40]


def test_cache_clear_waits_for_no_one_while_a_run_builds(tmp_path, capsys):
    import fcntl
    import os

    from readapt.state_cache import StateCache

    cache = StateCache(tmp_path)
    cache._prepare()  # an empty readapt cache: tagged, with its lock file
    entry = tmp_path / ("b" * 40)
    entry.mkdir()
    building = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(building, fcntl.LOCK_SH)
    try:
        _, line = run_cli(capsys, ["cache", "clear", "--all", "--cache-dir", str(tmp_path)])
    finally:
        os.close(building)
    assert line == f"readapt: error: a run is building states in {tmp_path}: try again when it ends"
    assert entry.is_dir()
    assert main(["cache", "clear", "--all", "--cache-dir", str(tmp_path)]) == 0 and not entry.exists()
