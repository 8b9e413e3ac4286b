"""The on-disk state cache (state_cache.py): a cached run is the uncached run, bit for bit (fp32);
a second run reads the cache and never runs the backbone; any change to the model or the data is
another key; a build cut short, a damaged shard or an unusable folder is never silently used."""

import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertModel

import readapt.state_cache as state_cache
import readapt.train
from conftest import csv_rows, one_error_line
from readapt import ReadConfig, get_read_model
from readapt.backbones.encoder import EncoderBackbone
from readapt.cli import main
from readapt.data import Example, encode
from readapt.evaluate import attach_states, model_inputs
from readapt.model import ReadModel
from readapt.rundir import check_resume_args
from readapt.state_cache import use_state_cache
from readapt.train import TrainArgs, read_run_config, train

PAIRS = [("a man sleeps", "someone rests", "yes"), ("a dog runs", "the cat sleeps", "no"),
         ("two kids play", "children are playing happily outside", "yes"), ("it rains", "the sun is out", "no")]


@pytest.fixture(autouse=True)
def _quiet(quiet):
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache-data")
    (d / "train.csv").write_text("text,label\n" + csv_rows(24))
    (d / "val.csv").write_text("text,label\n" + csv_rows(8, offset=3))
    for name, n in (("pairs.csv", 16), ("pairs-val.csv", 8)):
        rows = ["premise,hypothesis,label"] + [",".join(PAIRS[i % 4]) for i in range(n)]
        (d / name).write_text("\n".join(rows) + "\n")
    return d


def _args(model_dir, files, out, **extra):
    options = dict(model=model_dir, output=str(out), train_file=str(files / "train.csv"),
                   validation_file=str(files / "val.csv"), epochs=2, batch_size=8, max_length=16, rnn_dim=8,
                   device="cpu")
    return TrainArgs(**{**options, **extra})


def _weights(run: Path) -> dict:
    return load_file(str(run / "read_model.safetensors"))


class Calls:
    """Counts the frozen pass outside the training loop (ReadModel.backbone_states, what the cache
    builds from) and backbone runs inside it (training steps and per-epoch validation)."""

    def __init__(self, monkeypatch):
        self.frozen = self.in_loop = 0
        self._looping = False
        frozen, run, loop = ReadModel.backbone_states, EncoderBackbone.run, readapt.train._loop

        def counted_frozen(model, **batch):
            self.frozen += not self._looping
            return frozen(model, **batch)

        def counted_run(runner, *args, **kwargs):
            self.in_loop += self._looping
            return run(runner, *args, **kwargs)

        def counted_loop(*args, **kwargs):
            self._looping = True
            try:
                return loop(*args, **kwargs)
            finally:
                self._looping = False

        monkeypatch.setattr(ReadModel, "backbone_states", counted_frozen)
        monkeypatch.setattr(EncoderBackbone, "run", counted_run)
        monkeypatch.setattr(readapt.train, "_loop", counted_loop)


def test_cached_run_is_the_uncached_run_bit_for_bit_and_the_second_run_never_runs_the_backbone(
        tiny_model_dir, files, tmp_path, monkeypatch, capsys):
    cache_dir = str(tmp_path / "cache")
    calls = Calls(monkeypatch)
    off = train(_args(tiny_model_dir, files, tmp_path / "off", cache="off"), argv=["t"])
    assert (off["cache"], off["cache_bytes"], calls.frozen) == ("off", 0, 0) and calls.in_loop > 0
    calls.in_loop = 0
    miss = train(_args(tiny_model_dir, files, tmp_path / "miss", cache="on", cache_dir=cache_dir), argv=["t"])
    assert miss["cache"] == "miss" and miss["cache_bytes"] > 0 and calls.frozen > 0 and calls.in_loop == 0
    assert [h["validation"] for h in miss["history"]] == [h["validation"] for h in off["history"]]
    assert miss["validation"] == off["validation"]
    for name, tensor in _weights(tmp_path / "off").items():
        assert torch.equal(_weights(tmp_path / "miss")[name], tensor), name
    # Another seed and side config (auto: on for READ): every state is read from disk.
    calls.frozen = 0
    hit = train(_args(tiny_model_dir, files, tmp_path / "hit", cache_dir=cache_dir, seed=1, rnn_type="gru"),
                argv=["t"])
    assert (hit["cache"], hit["cache_bytes"], calls.frozen, calls.in_loop) == ("hit", miss["cache_bytes"], 0, 0)
    # What is stored: the layers read (1..N, the last being the final state; not the embeddings), real tokens only.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [line.rsplit(",", 1)[0] for line in csv_rows(24).splitlines()]
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=16)["input_ids"])
    (manifest,) = [m for m in map(json.loads, map(Path.read_text, Path(cache_dir).glob("*/manifest.json")))
                   if m["items"] == 24]
    assert manifest["layers"] == [1, 2] and manifest["num_hidden_states"] == 3
    assert manifest["bytes"] == tokens * 2 * 32 * 4  # tokens x layers x d x fp32
    # `readapt eval` reads the run's entry too (it builds none): the same scores, no backbone run.
    calls.in_loop, calls._looping = 0, True
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "hit"), "--split", "validation", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == round(hit["validation"]["accuracy"], 6)
    assert calls.in_loop == 0
    shutil.rmtree(cache_dir)
    assert main(["eval", "--run", str(tmp_path / "hit"), "--split", "validation", "--device", "cpu"]) == 0
    assert calls.in_loop > 0 and not Path(cache_dir).exists()


def _model(model_dir):
    torch.manual_seed(0)
    model = get_read_model(AutoModel.from_pretrained(model_dir), ReadConfig(num_labels=2, rnn_dim=8)).eval()
    torch.nn.init.normal_(model.side.out.weight)  # a non-trivial correction
    return model


def _encoded(tokenizer, texts=("a fine bright film", "dull", "bright and fine, a joy to watch", "grey mess")):
    return encode([Example((t,), i % 2) for i, t in enumerate(texts)], tokenizer, 32)


def _use(model, tokenizer, items, cache_dir, model_dir, **extra):
    options = dict(model_name=model_dir, max_length=32, separate_pairs=False, device=torch.device("cpu"),
                   batch_size=3, cache_dir=str(cache_dir), mode="on")
    return use_state_cache(model, tokenizer, {"train": items}, **{**options, **extra})


@pytest.mark.parametrize("dtype,tolerance", [("float16", 2.0**-11), ("bfloat16", 2.0**-8)])
def test_half_precision_storage_is_the_states_rounded_once(tiny_model_dir, tmp_path, dtype, tolerance):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    exact, half = _encoded(tokenizer), _encoded(tokenizer)
    attach_states(model, exact, 0, "cpu", batch_size=3)  # all layers, fp32, in RAM
    found = _use(model, tokenizer, half, tmp_path, tiny_model_dir, dtype=dtype)
    assert found["cache"] == "miss"
    for a, b in zip(exact, half):
        assert b["states"].dtype == getattr(torch, dtype) and b["state_layers"] == (None, 0, 1)
        assert torch.equal(b["states"], a["states"][1:].to(b["states"].dtype))  # layers 1, 2: rounded once
        torch.testing.assert_close(b["states"].float(), a["states"][1:], rtol=tolerance, atol=1e-6)
    live = model(**{k: v for k, v in model_inputs(exact, 0, "cpu").items() if k != "labels"}).logits
    cached = model(states=model_inputs(half, 0, "cpu")["states"]).logits
    torch.testing.assert_close(cached, live, rtol=0, atol=1e-2)  # documented in the README: within rounding


def test_half_precision_run_is_within_rounding_of_the_fp32_run(tiny_model_dir, files, tmp_path):
    runs = {dtype: train(_args(tiny_model_dir, files, tmp_path / dtype, cache="on", cache_dtype=dtype,
                               cache_dir=str(tmp_path / "cache")), argv=["t"]) for dtype in ("float32", "float16")}
    assert runs["float16"]["cache_bytes"] * 2 == runs["float32"]["cache_bytes"]
    assert abs(runs["float16"]["validation"]["accuracy"] - runs["float32"]["validation"]["accuracy"]) <= 1 / 8
    full, half = _weights(tmp_path / "float32"), _weights(tmp_path / "float16")
    for name, tensor in full.items():
        torch.testing.assert_close(half[name], tensor, rtol=0, atol=1e-3)


def test_a_build_cut_short_leaves_nothing_that_is_used(tiny_model_dir, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    frozen, calls = ReadModel.backbone_states, []

    def dies_on_the_second_batch(self, **batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return frozen(self, **batch)

    monkeypatch.setattr(ReadModel, "backbone_states", dies_on_the_second_batch)
    with pytest.raises(RuntimeError, match="killed"):
        _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "CACHEDIR.TAG"]  # no entry, no temp folder
    # A SIGKILL leaves its temporary folder (shards, even a manifest): never read, cleared once no build runs.
    monkeypatch.setattr(ReadModel, "backbone_states", frozen)
    items = _encoded(tokenizer)
    _use(model, tokenizer, items, tmp_path / "ref", tiny_model_dir)
    (entry,) = [p for p in (tmp_path / "ref").iterdir() if p.is_dir()]
    killed = tmp_path / f"tmp-{entry.name}-4242-deadbeef"
    shutil.copytree(entry, killed)
    (killed / "shard-00000.bin").write_bytes(b"\0" * 8)
    busy = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(busy, fcntl.LOCK_SH)  # another process building: its folder is kept
    try:
        again = _encoded(tokenizer)
        assert _use(model, tokenizer, again, tmp_path, tiny_model_dir)["cache"] == "miss"
        assert killed.is_dir()
    finally:
        os.close(busy)
    (tmp_path / entry.name / "manifest.json").unlink()  # an entry without a manifest is not an entry
    again = _encoded(tokenizer)
    assert _use(model, tokenizer, again, tmp_path, tiny_model_dir)["cache"] == "miss"
    assert not killed.exists() and not list(tmp_path.glob("tmp-*"))
    assert all(torch.equal(a["states"], b["states"]) for a, b in zip(items, again))


def test_a_damaged_shard_is_detected_and_rebuilt_never_used(tiny_model_dir, tmp_path, capsys):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    first = _encoded(tokenizer)
    _use(model, tokenizer, first, tmp_path, tiny_model_dir)
    first = [item["states"].clone() for item in first]  # not the mapped file we are about to damage
    (shard,) = tmp_path.glob("*/shard-00000.bin")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # one flipped bit: same size, other content
    shard.write_bytes(bytes(raw))
    capsys.readouterr()
    again = _encoded(tokenizer)
    assert _use(model, tokenizer, again, tmp_path, tiny_model_dir)["cache"] == "miss"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "is damaged or stale (shard-00000.bin does not match its sha256); rebuilding it" in err[0]
    assert all(torch.equal(a, b["states"]) for a, b in zip(first, again))
    # A truncated shard, and a manifest naming another key: the same.
    (shard,) = tmp_path.glob("*/shard-00000.bin")
    shard.write_bytes(shard.read_bytes()[:-4])
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)["cache"] == "miss"
    (manifest,) = tmp_path.glob("*/manifest.json")
    manifest.write_text(manifest.read_text().replace(manifest.parent.name, "0" * 40))
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)["cache"] == "miss"
    assert "does not match this key (key)" in capsys.readouterr().err
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)["cache"] == "hit"


def test_a_changed_model_or_data_is_another_key(tiny_model_dir, files, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)["cache"] == "miss"
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir)["cache"] == "hit"
    changed_text = _encoded(tokenizer, ("a fine bright film", "dull", "bright and fine, a joy to watch", "grey"))
    assert _use(model, tokenizer, changed_text, tmp_path, tiny_model_dir)["cache"] == "miss"
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, tiny_model_dir, max_length=31)["cache"] == "miss"
    # The same model in another folder is the same key; one changed weight in it is another.
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "model-copy"))
    assert _use(model, tokenizer, _encoded(tokenizer), tmp_path, str(copy))["cache"] == "hit"
    backbone = BertModel.from_pretrained(copy)
    with torch.no_grad():
        backbone.encoder.layer[0].output.dense.bias[0] += 1.0
    backbone.save_pretrained(copy)
    changed = get_read_model(BertModel.from_pretrained(copy), ReadConfig(num_labels=2, rnn_dim=8))
    assert _use(changed, tokenizer, _encoded(tokenizer), tmp_path, str(copy))["cache"] == "miss"
    # Through `train`: a changed data file is a miss for its split only.
    cache_dir = str(tmp_path / "runs-cache")
    def run(data, out):
        return train(_args(tiny_model_dir, data, tmp_path / out, cache_dir=cache_dir, epochs=1))

    assert run(files, "a")["cache"] == "miss"
    data = Path(shutil.copytree(files, tmp_path / "data"))
    (data / "train.csv").write_text("text,label\n" + csv_rows(24, offset=1))
    assert run(data, "b")["cache"] == "miss"
    assert len([p for p in Path(cache_dir).iterdir() if p.is_dir()]) == 3  # two train entries, one validation


def test_an_unusable_cache_folder_is_one_line_or_a_warning(tiny_model_dir, files, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    blocked = str(tmp_path / "a-file" / "cache")  # any write below a regular file fails (even as root)
    argv = ["train", "--model", tiny_model_dir, "--train-file", str(files / "train.csv"), "--epochs", "1",
            "--max-length", "16", "--rnn-dim", "8", "--device", "cpu"]
    line = one_error_line(capsys, [*argv, "--output", str(tmp_path / "on"), "--cache", "on", "--cache-dir", blocked])
    assert f"cannot write the state cache ({blocked} does not exist (a part of the path is a file" in line
    assert line.endswith("pass --cache-dir elsewhere or --cache off")
    assert not (tmp_path / "on").exists()
    metrics = train(_args(tiny_model_dir, files, tmp_path / "auto", epochs=1, cache_dir=blocked), argv=["t"])
    assert metrics["cache"] == "off"
    assert "readapt: warning: state cache off: cannot write the state cache" in capsys.readouterr().err
    # A full disk while writing: no entry left; --cache on is one line.
    monkeypatch.setattr(state_cache._ShardWriter, "write", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    cache_dir = tmp_path / "full"
    line = one_error_line(capsys, [*argv, "--output", str(tmp_path / "full-run"), "--cache", "on",
                                   "--cache-dir", str(cache_dir)])
    assert f"cannot write the state cache ({cache_dir}: no space left on device)" in line
    assert sorted(p.name for p in cache_dir.iterdir()) == [".lock", "CACHEDIR.TAG"]
    # Too little free space, or over the cap: auto says why and runs without; on refuses.
    monkeypatch.setattr(state_cache.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1000))
    line = one_error_line(capsys, [*argv, "--output", str(tmp_path / "small"), "--cache", "on",
                                   "--cache-dir", str(tmp_path / "small-cache")])
    assert "this run's states would take" in line and "free; free space, or pass --cache-dir elsewhere" in line
    capsys.readouterr()
    metrics = train(_args(tiny_model_dir, files, tmp_path / "small-auto", epochs=1, cache_dir=str(tmp_path / "c2")),
                    argv=["t"])
    assert metrics["cache"] == "off" and "state cache off: this run's states would take" in capsys.readouterr().out
    monkeypatch.undo()
    capsys.readouterr()
    metrics = train(_args(tiny_model_dir, files, tmp_path / "cap", epochs=1, cache_dir=str(tmp_path / "c3"),
                          cache_max_gb=0.0), argv=["t"])
    assert metrics["cache"] == "off"
    assert "above --cache-max-gb 0; raise it, or pass --cache on" in capsys.readouterr().out


def test_separately_encoded_pairs_cache_both_texts(tiny_model_dir, files, tmp_path):
    common = dict(model=tiny_model_dir, train_file=str(files / "pairs.csv"),
                  validation_file=str(files / "pairs-val.csv"),
                  text_column=["premise", "hypothesis"], pair_encoding="separate", epochs=2, batch_size=8,
                  max_length=24, rnn_dim=8, device="cpu")
    off = train(TrainArgs(output=str(tmp_path / "off"), cache="off", **common), argv=["t"])
    on = train(TrainArgs(output=str(tmp_path / "on"), cache="on", cache_dir=str(tmp_path / "c"), **common),
               argv=["t"])
    assert on["cache"] == "miss"
    assert [h["validation"] for h in on["history"]] == [h["validation"] for h in off["history"]]
    for name, tensor in _weights(tmp_path / "off").items():
        assert torch.equal(_weights(tmp_path / "on")[name], tensor), name
    manifests = [json.loads(m.read_text()) for m in (tmp_path / "c").glob("*/manifest.json")]
    assert sorted((m["items"], m["sequences"]) for m in manifests) == [(8, 16), (16, 32)]


def test_cache_flags_are_checked_and_do_not_block_resume(tiny_model_dir, files, tmp_path, capsys):
    argv = ["train", "--model", tiny_model_dir, "--train-file", str(files / "train.csv"), "--device", "cpu",
            "--output", str(tmp_path / "x")]
    refusals = [
        (["--method", "full", "--cache", "on"], "--cache on works with --method read (--method full has no frozen "
                                                "states to reuse); drop it"),
        (["--method", "probe", "--cache-states"], "--cache-states works with --method read"),
        (["--cache", "always"], "--cache always: choose one of auto, on, off"),
        (["--cache-dtype", "int8"], "--cache-dtype int8: choose one of float32, float16, bfloat16"),
        (["--cache-states", "--cache", "off"], "--cache-states is the old name of --cache on"),
        (["--cache-max-gb", "-1"], "--cache-max-gb -1.0 is out of range"),
        (["--cache-keep-gb", "nan"], "--cache-keep-gb nan is out of range: use 0..1000000 (GiB)")]
    for extra, words in refusals:
        assert words in one_error_line(capsys, [*argv, *extra])
    assert not (tmp_path / "x").exists()
    # The old flag is --cache on; a run made before the cache options existed still reads and resumes.
    run = tmp_path / "old"
    metrics = train(_args(tiny_model_dir, files, run, epochs=1, cache_states=True, cache_dir=str(tmp_path / "c")),
                    argv=["t"])
    assert metrics["cache"] == "miss"
    config = json.loads((run / "run_config.json").read_text())
    for name in ("cache", "cache_dir", "cache_max_gb", "cache_keep_gb", "cache_dtype"):
        del config["args"][name]
    config["args"]["cache_states"] = False
    (run / "run_config.json").write_text(json.dumps(config))
    assert read_run_config(run)[0].cache == "auto"
    check_resume_args(run, _args(tiny_model_dir, files, run, epochs=1, cache="off", cache_dtype="bfloat16",
                                 cache_dir="/elsewhere", cache_max_gb=1.0, cache_keep_gb=0.0))


def test_a_hub_model_is_keyed_by_the_snapshot_it_was_loaded_from(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = Path(shutil.copytree(tiny_model_dir, tmp_path / "models--org--tiny" / "snapshots" / "abc123"))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(snapshot / name) if repo == "org/tiny" else None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _model(tiny_model_dir)
    by_id, by_folder = (state_cache.model_fields(name, model, tokenizer) for name in ("org/tiny", tiny_model_dir))
    assert by_id == by_folder and "model.safetensors" in by_id["files"]  # the same files, wherever they live
    not_cached = state_cache.model_fields("org/other", model, tokenizer)
    assert (not_cached["files"], not_cached["name"]) == ({}, "org/other")  # only the id names the weights


def test_default_folder_and_the_suite_never_writes_into_home(monkeypatch):
    assert not state_cache.default_cache_dir().resolve().is_relative_to(Path.home().resolve())  # conftest
    monkeypatch.setenv("READAPT_CACHE", "/somewhere/states")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert state_cache.default_cache_dir() == Path("/somewhere/states")
    monkeypatch.delenv("READAPT_CACHE")
    assert state_cache.default_cache_dir() == Path("/xdg/readapt/states")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert state_cache.default_cache_dir() == Path.home() / ".cache" / "readapt" / "states"



# -- eviction: last use, readapt cache list / clear, --cache-keep-gb (issue 10) ---------------------------------------
TEXT_SETS = [("a fine film", "dull"), ("bright and fine", "grey mess"), ("a joy", "a bore"), ("fine", "not fine"),
             ("grey", "bright"), ("a mess", "a joy to watch")]
LONG_AGO = 1_000_000_000.0  # 2001-09-09


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """(model, tokenizer), as _use takes them."""
    return _model(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _entry(tiny, cache_dir, model_dir, texts, **extra) -> Path:
    """The entry use_state_cache builds for ``texts`` (one split, train)."""
    model, tokenizer = tiny
    before = set(Path(cache_dir).glob("*/"))
    assert _use(model, tokenizer, _encoded(tokenizer, texts), cache_dir, model_dir, task="toy", **extra)["cache"] \
        == "miss"
    (entry,) = set(Path(cache_dir).glob("*/")) - before
    return entry


def _used_long_ago(entries: list[Path]) -> None:
    """The first entry used longest ago, each next one an hour later."""
    for hour, entry in enumerate(entries):
        os.utime(entry, (LONG_AGO + 3600 * hour,) * 2)


def _size(*entries: Path) -> int:
    return sum(f.stat().st_size for entry in entries for f in entry.iterdir())


def _cache_cli(capsys, *argv) -> list[str]:
    capsys.readouterr()
    assert main(["cache", *argv]) == 0
    return capsys.readouterr().out.strip().splitlines()


def _left(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.iterdir() if p.is_dir()}


def test_cache_list_shows_each_entry_and_the_total(tiny, tiny_model_dir, tmp_path, capsys):
    cache_dir = tmp_path / "cache"
    assert _cache_cli(capsys, "list", "--cache-dir", str(cache_dir)) == [
        f"no state cache at {cache_dir} (no run has built one there)"]
    old, new = (_entry(tiny, cache_dir, tiny_model_dir, texts) for texts in TEXT_SETS[:2])
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["source"]  # an entry built before manifests named their source
    (old / "manifest.json").write_text(json.dumps(manifest))
    _used_long_ago([old, new])
    header, *lines, total = _cache_cli(capsys, "list", "--cache-dir", str(cache_dir))
    assert header.split() == ["key", "size", "last", "used", "source"]
    assert [line.split()[0] for line in lines] == [new.name[:12], old.name[:12]]  # most recently used first
    assert lines[0].endswith(f"{tiny_model_dir} toy train, 2 examples, float32")
    assert lines[1].endswith("2 examples, float32 (source not recorded)")
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(LONG_AGO)) in lines[1]
    assert total == f"2 entries, {state_cache.human_bytes(_size(old, new))} in {cache_dir}"
    for entry in (old, new):
        shutil.rmtree(entry)
    assert _cache_cli(capsys, "list", "--cache-dir", str(cache_dir)) == [f"state cache {cache_dir} is empty"]


def test_a_hit_marks_the_entry_used(tiny, tiny_model_dir, tmp_path):
    entry = _entry(tiny, tmp_path, tiny_model_dir, TEXT_SETS[0])
    _used_long_ago([entry])
    model, tokenizer = tiny
    assert _use(model, tokenizer, _encoded(tokenizer, TEXT_SETS[0]), tmp_path, tiny_model_dir)["cache"] == "hit"
    assert time.time() - entry.stat().st_mtime < 60


def test_cache_clear_deletes_the_least_recently_used_first(tiny, tiny_model_dir, tmp_path, capsys):
    first, second, third = (_entry(tiny, tmp_path, tiny_model_dir, texts) for texts in TEXT_SETS[:3])
    _used_long_ago([first, third, second])  # the second built is the one used last
    sizes = {entry.name: _size(entry) for entry in (first, second, third)}
    human = state_cache.human_bytes
    keep_gb = (_size(second, third) + sizes[first.name] // 2) / 1024**3
    assert _cache_cli(capsys, "clear", "--keep-gb", repr(keep_gb), "--cache-dir", str(tmp_path)) == [
        f"deleted 1 entry used least recently ({human(sizes[first.name])}); "
        f"2 entries ({human(_size(second, third))}) left in {tmp_path}"]
    assert _left(tmp_path) == {second.name, third.name}
    keep_gb = (sizes[second.name] + sizes[third.name] // 2) / 1024**3
    _cache_cli(capsys, "clear", "--keep-gb", repr(keep_gb), "--cache-dir", str(tmp_path))
    assert _left(tmp_path) == {second.name}
    assert _cache_cli(capsys, "clear", "--keep-gb", "1", "--cache-dir", str(tmp_path)) == [
        f"nothing to delete: 1 entry ({human(sizes[second.name])}) left in {tmp_path}"]
    model, tokenizer = tiny
    reading = _encoded(tokenizer, TEXT_SETS[1])  # a run reading the last entry: its shards stay mapped
    assert _use(model, tokenizer, reading, tmp_path, tiny_model_dir)["cache"] == "hit"
    before = [item["states"].clone() for item in reading]
    assert _cache_cli(capsys, "clear", "--all", "--cache-dir", str(tmp_path))[0].startswith("deleted 1 entry")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "CACHEDIR.TAG"]  # nothing set aside is left
    assert all(torch.equal(item["states"], states) for item, states in zip(reading, before))


def test_a_build_evicts_the_least_recently_used_but_never_what_the_run_uses(
        tiny, tiny_model_dir, files, tmp_path, capsys):
    model, tokenizer = tiny
    hit, a, b = (_entry(tiny, tmp_path, tiny_model_dir, texts) for texts in TEXT_SETS[:3])
    _used_long_ago([hit, a, b])
    human = state_cache.human_bytes

    def run(new_texts, keep_gb):
        splits = {"train": _encoded(tokenizer, TEXT_SETS[0]), "validation": _encoded(tokenizer, new_texts)}
        found = use_state_cache(model, tokenizer, splits, model_name=tiny_model_dir, max_length=32,
                                separate_pairs=False, device=torch.device("cpu"), batch_size=3,
                                cache_dir=str(tmp_path), mode="on", keep_gb=keep_gb)
        assert found["cache"] == "miss"  # the train split a hit, validation built
        return state_cache.estimate_bytes(splits["validation"], state_cache.layout(model), "float32")

    # Room for all but half of `a`: `a` goes, the least recently used once the run's hit marks `hit` used.
    needed = state_cache.estimate_bytes(_encoded(tokenizer, TEXT_SETS[3]), state_cache.layout(model), "float32")
    size_a = _size(a)
    capsys.readouterr()
    run(TEXT_SETS[3], (_size(hit, b) + needed + size_a // 2) / 1024**3)
    assert f"state cache: freed {human(size_a)} (1 entry used least recently) to stay within --cache-keep-gb" \
        in capsys.readouterr().out
    assert _left(tmp_path) == {hit.name, b.name, _key_of(tmp_path, a, hit, b)}
    # No room at all: everything goes but the run's own entries; a build in flight and other files stay.
    (tmp_path / "notes").mkdir()
    in_flight = tmp_path / f"tmp-{'0' * 40}-4242-cafe0000"
    shutil.copytree(b, in_flight)
    building = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(building, fcntl.LOCK_SH)
    try:
        run(TEXT_SETS[4], 1e-9)
    finally:
        os.close(building)
    assert "(2 entries used least recently) to stay within --cache-keep-gb 1e-09" in capsys.readouterr().out
    assert _left(tmp_path) == {hit.name, _key_of(tmp_path, hit), "notes", in_flight.name}
    # --cache-keep-gb 0: nothing is evicted (the folder of the build no longer in flight is a killed build's).
    kept = _left(tmp_path) - {in_flight.name}
    run(TEXT_SETS[5], 0)
    assert _left(tmp_path) - kept == {_key_of(tmp_path, *(tmp_path / name for name in kept))}
    assert "freed" not in capsys.readouterr().out


def _key_of(cache_dir: Path, *but: Path) -> str:
    """The one entry in ``cache_dir`` other than ``but``."""
    (key,) = {p.name for p in cache_dir.iterdir() if state_cache._ENTRY_NAME.fullmatch(p.name)} - {p.name for p in but}
    return key


def test_train_evicts_within_cache_keep_gb(tiny, tiny_model_dir, files, tmp_path, capsys):
    old = _entry(tiny, tmp_path, tiny_model_dir, TEXT_SETS[0])
    capsys.readouterr()
    metrics = train(_args(tiny_model_dir, files, tmp_path / "run", epochs=1, cache_dir=str(tmp_path),
                          cache_keep_gb=1e-9), argv=["t"])
    assert metrics["cache"] == "miss" and "state cache: freed" in capsys.readouterr().out
    assert not old.exists() and len(_left(tmp_path) - {"run"}) == 2  # the run's train and validation entries


def test_t5_entries_hold_decoder_encoder_and_cross_attention_and_give_the_live_loss(tmp_path, tiny_model_dir):
    """An encoder-decoder entry: per example the decoder's states over its target tokens, the
    encoder's states over its real tokens and the cross-attention probabilities of the decoder
    layers read; a batch built from them gives the live loss and logits (a non-trivial correction
    on both side networks), whatever the lengths in the batch."""
    from tiny_models import tiny_t5

    torch.manual_seed(0)
    model = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8)).eval()
    for side in (model.side, model.encoder_side):
        torch.nn.init.normal_(side.out.weight, std=0.1)
    lengths = [(5, 3), (9, 1), (2, 4), (7, 2)]  # (input tokens, target tokens): both vary across the batch
    make = lambda: [{"input_ids": list(range(3, 3 + n)), "attention_mask": [1] * n, "labels": list(range(10, 10 + t))}
                    for n, t in lengths]  # noqa: E731
    items = make()
    found = use_state_cache(model, AutoTokenizer.from_pretrained(tiny_model_dir), {"train": items}, model_name="tiny-t5",
                            max_length=16, separate_pairs=False, device=torch.device("cpu"), batch_size=3,
                            cache_dir=str(tmp_path), mode="on")
    assert found["cache"] == "miss"
    heads, decoder_layers, encoder_layers = 4, len(state_cache.stored_layers(model)), len(model.encoder_layers)
    cross_layers = len([i for i in model.layers if i > 0])
    for item, (n, t) in zip(items, lengths):
        assert item["states"].shape == (decoder_layers, t, 32)
        assert item["encoder_states"].shape == (encoder_layers, n, 32)
        assert item["cross_attentions"].shape == (cross_layers, heads, t, n)
        torch.testing.assert_close(item["cross_attentions"].sum(-1), torch.ones(cross_layers, heads, t))  # softmax rows
    (manifest,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/manifest.json")]
    values = sum(t * 32 * decoder_layers + n * 32 * encoder_layers + cross_layers * heads * t * n for n, t in lengths)
    assert manifest["bytes"] == found["cache_bytes"] == values * 4
    with torch.no_grad():
        live = model(**model_inputs(make(), 0, "cpu"))
        cached = model(**model_inputs(items, 0, "cpu"))
    torch.testing.assert_close(cached.loss, live.loss, rtol=1e-5, atol=0)
    labels = model_inputs(make(), 0, "cpu")["labels"]
    torch.testing.assert_close(cached.logits[labels != -100], live.logits[labels != -100], rtol=1e-4, atol=1e-5)
    # Other target texts are other entries: the decoder's states depend on them.
    other = make()
    other[0]["labels"] = [11, 12, 13]
    assert _use(model, AutoTokenizer.from_pretrained(tiny_model_dir), other, tmp_path, "tiny-t5",
                max_length=16)["cache"] == "miss"
