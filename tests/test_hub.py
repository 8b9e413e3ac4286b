"""Hub ids in ReadModel.from_pretrained and push_to_hub, offline: huggingface_hub's real code path
against a local cache laid out as the Hub's, and mocked Hub calls for what needs a server."""

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors.torch import load as load_bytes, load_file

import readapt.hub
from tiny_models import tiny_bert
from readapt import ReadConfig, ReadModel, get_read_model
from readapt.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from readapt.hub import HubError

BATCH = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]),
         "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def saved(tmp_path):
    """A READ model whose correction is not zero, saved; (model, folder)."""
    model = get_read_model(tiny_bert(), ReadConfig(rnn_dim=8, num_labels=2)).eval()
    with torch.no_grad():
        model.side.out.weight.normal_()
    return model, model.save_pretrained(tmp_path / "saved")


def _logits(model):
    with torch.no_grad():
        return model.eval()(**BATCH).logits


def test_hub_id_is_read_from_the_local_hugging_face_cache_offline(saved, tmp_path, offline):
    model, folder = saved
    commit = "a" * 40
    repo = tmp_path / "cache" / "models--someone--rt-read"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    loaded = ReadModel.from_pretrained(tiny_bert(), "someone/rt-read", cache_dir=tmp_path / "cache")
    assert torch.equal(_logits(loaded), _logits(model))


def test_hub_id_asks_for_the_read_files_only(saved, monkeypatch):
    model, folder = saved
    calls = []

    def download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(folder)

    monkeypatch.setattr(readapt.hub, "snapshot_download", download)
    loaded = ReadModel.from_pretrained(tiny_bert(), "someone/rt-read", revision="v1", token="hf_x")
    assert torch.equal(_logits(loaded), _logits(model))
    (repo_id, kwargs), = calls
    assert repo_id == "someone/rt-read" and kwargs["revision"] == "v1" and kwargs["token"] == "hf_x"
    assert sorted(kwargs["allow_patterns"]) == sorted([CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])  # never a backbone


def test_hub_id_offline_and_not_cached_is_one_line(tmp_path, offline):
    with pytest.raises(HubError) as err:
        ReadModel.from_pretrained(tiny_bert(), "someone/rt-read", cache_dir=tmp_path / "empty-cache")
    message = str(err.value)
    assert "\n" not in message
    assert "someone/rt-read is not a local folder" in message and "cannot be reached" in message


def test_missing_repo_and_repo_without_read_files_are_one_line(tmp_path, monkeypatch):
    def missing(repo_id, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # no HTTP response offline
        Exception.__init__(error, "404 Client Error: Repository Not Found")
        raise error

    monkeypatch.setattr(readapt.hub, "snapshot_download", missing)
    with pytest.raises(HubError, match="the Hub has no model repo someone/nothing .*hf auth login"):
        ReadModel.from_pretrained(tiny_bert(), "someone/nothing")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(readapt.hub, "snapshot_download", lambda repo_id, **kwargs: str(tmp_path / "empty"))
    with pytest.raises(HubError, match="someone/bert holds no read_config.json: it is not a READ model"):
        ReadModel.from_pretrained(tiny_bert(), "someone/bert")


def test_a_path_that_is_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(readapt.ConfigError, match="neither a local folder nor a Hugging Face Hub id"):
        ReadModel.from_pretrained(tiny_bert(), tmp_path / "no" / "such" / "folder")


def test_push_to_hub_uploads_the_read_files_and_never_the_backbone(saved, monkeypatch):
    model, _ = saved
    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            assert exist_ok
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, allow_patterns, **kwargs):
            files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.name in allow_patterns}
            uploads.append((repo_id, self.token, files, kwargs))
            return "commit-info"

    monkeypatch.setattr(readapt.hub, "HfApi", FakeApi)
    assert model.push_to_hub("someone/rt-read", token="hf_x", metrics={"accuracy": 0.75}) == "commit-info"
    (repo_id, token, files, kwargs), = uploads
    assert (repo_id, token) == ("someone/rt-read", "hf_x")
    assert sorted(files) == sorted([CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
    assert set(load_bytes(files[WEIGHTS_NAME])) == set(model.trainable_state_dict())
    assert b"accuracy" in files[CARD_NAME]


def test_push_to_hub_offline_is_one_line(saved, offline):
    model, _ = saved
    with pytest.raises(HubError) as err:
        model.push_to_hub("someone/rt-read")
    assert "\n" not in str(err.value) and "cannot push to Hub repo someone/rt-read" in str(err.value)


def test_saved_weights_hold_no_backbone_tensor(saved):
    _, folder = saved
    assert not any(name.startswith(("base_model.", "runner.")) for name in load_file(str(folder / WEIGHTS_NAME)))
