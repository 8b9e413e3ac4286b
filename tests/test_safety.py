"""Nothing executes on load, and no loader lets an unexpected exception out.

* A scan of src/ (by syntax tree, not just text) proves no code path unpickles: no pickle-family
  import, every torch.load passes weights_only=True, no eval/exec, no trust_remote_code=True.
* Property-based tests feed random bytes and random JSON to every loader (ReadConfig.from_pretrained,
  ReadModel.from_pretrained / load_trainable, checkpoint.load_checkpoint and the resume path,
  load_run's run_config.json, the data file readers) and random values to the ReadConfig
  constructor: each call either succeeds or raises the loader's own ValueError subclass, quickly.
"""

import ast
import dataclasses
import io
import json
import os
import random
import re
import shutil
import struct
import tokenize
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import readapt
import readapt.train
from readapt import checkpoint as ckpt
from readapt.checkpoint import CheckpointError
from readapt.config import CONFIG_NAME, WEIGHTS_NAME, ConfigError, ReadConfig
from readapt.data import DataError
from readapt.data.files import load_files, read_table
from readapt.model import ReadModel, get_read_model
from tiny_models import tiny_bert

SRC = Path(readapt.__file__).resolve().parent
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "pickletools"}

# READAPT_FUZZ_EXAMPLES=2000 for a deeper search than the default, quick one.
FAST = settings(max_examples=int(os.environ.get("READAPT_FUZZ_EXAMPLES", "60")), deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- nothing executes on load: a scan of src/ ---------------------------------------------------------
def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _scan(path: Path) -> tuple[list[str], int]:
    """(problems, number of torch.load calls) in one source file."""
    problems, loads = [], 0
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            problems += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in PICKLE_MODULES:
                problems.append(f"{where} imports from {node.module}")
            if node.module in ("torch", "torch.serialization") and any(a.name == "load" for a in node.names):
                problems.append(f"{where} imports torch's load by name (calls would escape this scan)")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ("torch.load", "torch.serialization.load"):
                loads += 1
                if not _is_true(keywords.get("weights_only")):
                    problems.append(f"{where} calls {name} without weights_only=True")
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where} calls {name}()")
            if name in ("yaml.load", "yaml.unsafe_load", "pd.read_pickle", "pandas.read_pickle"):
                problems.append(f"{where} calls {name}")
            for flag in ("trust_remote_code", "allow_pickle"):
                if flag in keywords and _is_true(keywords[flag]):
                    problems.append(f"{where} passes {flag}=True")
        elif (isinstance(node, ast.Attribute) and node.attr in ("load", "loads")
              and _dotted(node.value) in PICKLE_MODULES):
            problems.append(f"{where} uses {_dotted(node)}")
    return problems, loads


def _token_loads(text: str) -> int:
    """`torch . load (` in the token stream (comments and docstrings excluded)."""
    tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type in (tokenize.NAME, tokenize.OP)]
    return sum(tokens[i:i + 4] == ["torch", ".", "load", "("] for i in range(len(tokens)))


def test_no_code_path_unpickles_or_runs_remote_code():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    problems, loads, text_loads = [], 0, 0
    for path in files:
        found, n = _scan(path)
        problems += found
        loads += n
        text = path.read_text(encoding="utf-8")
        text_loads += _token_loads(text)
        problems += [f"{path.name}: {m.group(0)!r}" for m in re.finditer(r"weights_only\s*=\s*False|"
                                                                          r"trust_remote_code\s*=\s*True\b(?!`)", text)
                     if "``" not in text[max(0, m.start() - 2):m.start()]]
    assert not problems, "\n".join(problems)
    assert loads >= 1  # the checkpoint's trainer state: the scan is not vacuous
    assert loads == text_loads  # every textual torch.load( is a call the syntax scan checked


def test_the_scan_catches_what_it_should(tmp_path):
    bad = SRC / "_scan_probe_do_not_ship.py"
    try:
        bad.write_text("import pickle\nimport torch\nfrom dill import loads\n"
                       "x = torch.load('a')\ny = torch.load('b', weights_only=False)\n"
                       "z = torch.load('c', weights_only=True)\neval('1')\n"
                       "m = f(trust_remote_code=True)\n")
        problems, loads = _scan(bad)
    finally:
        bad.unlink()
    assert loads == 3
    assert len(problems) == 6, problems


def test_trust_remote_code_defaults_to_false_everywhere():
    import inspect

    from readapt.backbones.loading import load_pretrained
    from readapt.train import TrainArgs

    assert inspect.signature(load_pretrained).parameters["trust_remote_code"].default is False
    assert {f.name: f.default for f in dataclasses.fields(TrainArgs)}["trust_remote_code"] is False


# -- strategies ---------------------------------------------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
READ_FIELDS = [f.name for f in dataclasses.fields(ReadConfig)]
VALID_READ = ReadConfig(rnn_dim=8).to_dict()


@st.composite
def read_config_dicts(draw):
    """Anything from a random object to a valid config with a few fields broken, added or dropped."""
    kind = draw(st.sampled_from(["random", "mutated", "mutated", "valid-ish"]))
    if kind == "random":
        return draw(json_values)
    data = dict(VALID_READ)
    for name in draw(st.lists(st.sampled_from(READ_FIELDS), max_size=3 if kind == "mutated" else 1)):
        data[name] = draw(json_values)
    if kind == "mutated" and draw(st.booleans()):
        data.pop(draw(st.sampled_from(READ_FIELDS)), None)
    if kind == "mutated" and draw(st.booleans()):
        data[draw(st.text(min_size=1, max_size=8))] = draw(json_scalars)
    return data


def _dump(value) -> bytes:
    return json.dumps(value).encode()


# -- ReadConfig ---------------------------------------------------------------------------------
@given(kwargs=st.dictionaries(st.sampled_from(READ_FIELDS), json_values | st.floats() | st.integers(-10, 10**6),
                              max_size=6))
@FAST
def test_read_config_constructor_random_values(kwargs):
    try:
        config = ReadConfig(**kwargs)
    except ConfigError:
        return
    assert ReadConfig.from_dict(config.to_dict()) == config  # what it accepts, it can save and load


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@given(content=st.binary(max_size=600) | read_config_dicts().map(_dump))
@example(content=b"")
@example(content=b"\xff\xfe{}")
@example(content=b'{"rnn_dim": 8')
@example(content=_dump({**VALID_READ, "rnn_dim": 1e400}))
@FAST
def test_read_config_from_pretrained_random_files(scratch, content):
    folder = scratch / "read-config"
    folder.mkdir(exist_ok=True)
    (folder / CONFIG_NAME).write_bytes(content)
    try:
        ReadConfig.from_pretrained(folder)
    except ConfigError:
        pass


# -- ReadModel weights ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def read_model():
    return get_read_model(tiny_bert(), ReadConfig(rnn_dim=8))


SAFETENSORS_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64",
                      "XYZ", ""]


@st.composite
def safetensors_like(draw, names=()):
    """A safetensors file with a random header: lengths, dtypes, shapes and offsets that may lie."""
    keys = st.sampled_from(list(names)) | st.text(max_size=12) if names else st.text(max_size=12)
    info = st.fixed_dictionaries({"dtype": st.sampled_from(SAFETENSORS_DTYPES),
                                  "shape": st.lists(st.integers(-2, 6), max_size=3),
                                  "data_offsets": st.lists(st.integers(-4, 300), max_size=3)})
    header = draw(st.dictionaries(keys, info | json_values, max_size=4))
    if draw(st.booleans()):
        header["__metadata__"] = draw(json_values)
    raw = json.dumps(header).encode()
    declared = draw(st.sampled_from([len(raw), len(raw) + 1, max(0, len(raw) - 1), 2**63, 0])) \
        if draw(st.booleans()) else len(raw)
    return struct.pack("<Q", declared) + raw + draw(st.binary(max_size=300))


@st.composite
def valid_safetensors(draw, shapes):
    """A readable file with the right names (or some of them) and random shapes and dtypes."""
    tensors = {}
    for name, shape in shapes.items():
        if draw(st.integers(0, 9)) == 0:
            continue
        if draw(st.booleans()):
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8]))
        tensors[name] = torch.zeros(shape, dtype=dtype)
    return tensors


@given(data=st.data())
@example(data=None)
@FAST
def test_read_model_load_trainable_random_files(read_model, scratch, data):
    path = scratch / WEIGHTS_NAME
    names = list(read_model.trainable_state_dict())
    if data is None:
        path.write_bytes(b"")
    else:
        kind = data.draw(st.sampled_from(["bytes", "header", "tensors"]))
        if kind == "bytes":
            path.write_bytes(data.draw(st.binary(max_size=800)))
        elif kind == "header":
            path.write_bytes(data.draw(safetensors_like(names)))
        else:
            shapes = {n: tuple(t.shape) for n, t in read_model.trainable_state_dict().items()}
            save_file(data.draw(valid_safetensors(shapes)), str(path))
    before = {n: t.clone() for n, t in read_model.trainable_state_dict().items()}
    try:
        read_model.load_trainable(path)
    except ConfigError:
        after = read_model.trainable_state_dict()
        assert all(torch.equal(before[n], after[n]) for n in before)  # a refused file changes nothing


@given(config=st.binary(max_size=200) | read_config_dicts().map(_dump),
       weights=st.binary(max_size=300) | safetensors_like())
@example(config=_dump(VALID_READ), weights=b"")
@FAST
def test_read_model_from_pretrained_random_files(scratch, config, weights):
    folder = scratch / "read-model"
    folder.mkdir(exist_ok=True)
    (folder / CONFIG_NAME).write_bytes(config)
    (folder / WEIGHTS_NAME).write_bytes(weights)
    try:
        ReadModel.from_pretrained(_BACKBONE, folder)
    except ConfigError:
        pass


_BACKBONE = tiny_bert()


# -- checkpoints and the resume path ------------------------------------------------------------------
def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@st.composite
def state_files(draw):
    """trainer_state.pt content: random bytes, a saved random structure, or a saved one with flipped bytes."""
    kind = draw(st.sampled_from(["bytes", "saved", "flipped"]))
    if kind == "bytes":
        return draw(st.binary(max_size=600))
    data = _torch_bytes(draw(json_values) if draw(st.booleans())
                        else {"progress": draw(json_values), "optimizer": draw(json_values),
                              "scheduler": draw(json_values), "rng": draw(json_values)})
    if kind == "flipped":
        data = bytearray(data)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
            data[position] ^= draw(st.integers(1, 255))
        data = bytes(data)
    return data


@given(trainable=st.binary(max_size=300) | safetensors_like(), state=state_files())
@FAST
def test_load_checkpoint_random_files(scratch, trainable, state):
    folder = scratch / "checkpoint" / "step-000000001"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ckpt.TRAINABLE_NAME).write_bytes(trainable)
    (folder / ckpt.STATE_NAME).write_bytes(state)
    try:
        tensors, loaded = ckpt.load_checkpoint(folder)
    except CheckpointError:
        return
    assert isinstance(tensors, dict) and isinstance(loaded, dict)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)


def _valid_state(model, optimizer, scheduler) -> dict:
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(),
            "progress": {"epoch": 0, "step_in_epoch": 1, "global_step": 1, "best_score": None,
                         "best_epoch": None, "train_seconds": 0.0, "history": []}}


@given(data=st.data())
@FAST
def test_resume_from_random_trainer_states(scratch, data):
    """train()'s resume path: a loadable but wrong trainer state is a CheckpointError, never a crash."""
    model = _Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = readapt.train.linear_schedule_with_warmup(optimizer, 1, 10)
    state = _valid_state(model, optimizer, scheduler)
    for key in data.draw(st.lists(st.sampled_from(sorted(state)), min_size=1, max_size=2)):
        if data.draw(st.booleans()):
            state[key] = data.draw(json_values)
        elif isinstance(state[key], dict) and state[key]:
            inner = data.draw(st.sampled_from(sorted(state[key])))
            state[key] = {**state[key], inner: data.draw(json_values)}
        else:
            state.pop(key)
    run = scratch / "resume-run"
    shutil.rmtree(run, ignore_errors=True)
    ckpt.save_checkpoint(run, 1, {n: p.detach() for n, p in model.named_parameters()}, state)
    saved_rng = (torch.get_rng_state(), random.getstate())
    try:
        readapt.train._resume(run, model, optimizer, scheduler)
    except CheckpointError:
        pass
    finally:
        torch.set_rng_state(saved_rng[0])
        random.setstate(saved_rng[1])


# -- load_run's run_config.json ----------------------------------------------------------------------
class _Built(Exception):
    """Raised instead of loading a model, once run_config.json has passed validation."""


@pytest.fixture(scope="module")
def valid_run_config(tmp_path_factory, tiny_model_dir):
    from readapt.data import TaskSpec
    from readapt.train import TrainArgs

    args = TrainArgs(model=tiny_model_dir, output="x", train_file="t.csv", rnn_dim=8)
    return {"args": dataclasses.asdict(args), "task": TaskSpec("files", ("a", "b"), ("accuracy",), ("text",)).to_dict(),
            "lr": 3e-3, "text_to_text": False}


@given(data=st.data())
@example(data=None)
@FAST
def test_load_run_random_run_configs(scratch, valid_run_config, monkeypatch, data):
    def build(*args, **kwargs):
        raise _Built

    monkeypatch.setattr(readapt.train, "build", build)
    run = scratch / "run"
    run.mkdir(exist_ok=True)
    if data is None:
        content = _dump(valid_run_config)
    else:
        kind = data.draw(st.sampled_from(["bytes", "json", "mutated", "mutated-args"]))
        if kind == "bytes":
            content = data.draw(st.binary(max_size=400))
        elif kind == "json":
            content = _dump(data.draw(json_values))
        else:
            config = json.loads(json.dumps(valid_run_config))
            target = config["args"] if kind == "mutated-args" else config
            for key in data.draw(st.lists(st.sampled_from(sorted(target)), min_size=1, max_size=3)):
                if data.draw(st.integers(0, 4)) == 0:
                    target.pop(key, None)
                else:
                    target[key] = data.draw(json_values)
            if data.draw(st.integers(0, 4)) == 0:
                target[data.draw(st.text(min_size=1, max_size=6))] = 1
            content = _dump(config)
    (run / "run_config.json").write_bytes(content)
    try:
        readapt.train.load_run(run, "cpu")
    except _Built:
        pass  # valid: went on to load the model
    except ConfigError:
        pass


@pytest.mark.parametrize("content", [b"[" * 100_000, b'{"lr": 1' + b"0" * 5000 + b"}",
                                     b'{"args": {}, "task": {}, "lr": 1e999, "text_to_text": false}'],
                         ids=["deep-nesting", "huge-int", "inf"])
def test_load_run_hostile_json(tmp_path, content):
    (tmp_path / "run_config.json").write_bytes(content)
    with pytest.raises(ConfigError, match="run_config.json"):
        readapt.train.load_run(tmp_path, "cpu")


def test_load_run_huge_int_for_a_float_option(tmp_path, valid_run_config):
    config = json.loads(json.dumps(valid_run_config))
    config["args"]["warmup_ratio"] = 10**400
    (tmp_path / "run_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="too large for a float"):
        readapt.train.load_run(tmp_path, "cpu")


# -- the data file readers -----------------------------------------------------------------------------
csv_text = st.lists(st.sampled_from(["a", "b", " ", ",", ";", '"', "\t", "\n", "\r", "\\", "\x00", "é", "1", ".5",
                                      "-", "text", "label", "pos", "neg", "text,label\n"]), max_size=60).map("".join)


@st.composite
def jsonl_text(draw):
    rows = draw(st.lists(st.dictionaries(st.sampled_from(["text", "label", "other"]) | st.text(max_size=4),
                                         json_values, max_size=3) | json_values, max_size=6))
    lines = [json.dumps(r) for r in rows]
    if draw(st.booleans()) and lines:
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]  # a cut-off line
    return "\n".join(lines)


@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
       content=st.binary(max_size=400) | csv_text.map(str.encode) | jsonl_text().map(str.encode))
@example(suffix=".csv", content=b"text,label\n")
@example(suffix=".jsonl", content=b'{"text": "a", "label": NaN}\n{"text": "b", "label": Infinity}\n')
@example(suffix=".csv", content=b'text,label\n"unterminated,1\nb,2\n')
@FAST
def test_data_readers_random_files(scratch, suffix, content):
    path = scratch / f"data{suffix}"
    path.write_bytes(content)
    try:
        read_table(path, "train")
    except DataError:
        pass
    try:
        data = load_files(train_file=path, validation_file=path, test_file=path)
    except DataError:
        return
    assert data.train and data.validation  # what loads is usable


# -- edge cases: absurd numbers and nesting in files ------------------------------------------------------
def test_read_config_huge_int_for_a_float_field():
    with pytest.raises(ConfigError):
        ReadConfig(input_scale=10**400)


def test_read_config_deeply_nested_json(tmp_path):
    (tmp_path / CONFIG_NAME).write_bytes(b"[" * 100_000)
    with pytest.raises(ConfigError):
        ReadConfig.from_pretrained(tmp_path)


def test_read_config_int_over_the_digit_limit(tmp_path):
    (tmp_path / CONFIG_NAME).write_bytes(b'{"rnn_dim": 1' + b"0" * 5000 + b"}")
    with pytest.raises(ConfigError):
        ReadConfig.from_pretrained(tmp_path)


def test_jsonl_deeply_nested_line(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b"[" * 100_000)
    with pytest.raises(DataError):
        load_files(train_file=tmp_path / "train.jsonl")


def test_jsonl_huge_integer_label(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1%s}\n{"text": "b", "label": 2}\n' % ("0" * 400))
    try:
        load_files(train_file=tmp_path / "train.jsonl")
    except DataError:
        pass
