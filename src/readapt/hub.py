"""Saved READ models on the Hugging Face Hub: a local folder or a Hub id in, a folder out.

    folder = resolve("user/rt-read")            # snapshot_download of the READ files only
    push(folder, "user/rt-read")                # HfApi.create_repo + upload_folder

Only readapt's own files travel (read_config.json, read_model.safetensors, README.md): never a
backbone. Every failure is one line (HubError, a ValueError) naming the repo and the fix; the
huggingface_hub exception stays chained for --debug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import validate_repo_id

from readapt.config import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, ConfigError

READ_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]
_LOGIN = "log in with `hf auth login` or pass token="


class HubError(ConfigError):
    """A Hub download or upload failed; the message says why and what to do."""


def is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve(name_or_path: str | Path, *, revision: Optional[str] = None, token: Optional[str] = None,
            cache_dir: Optional[str | Path] = None) -> Path:
    """The local folder holding a saved READ model: ``name_or_path`` itself when it is a folder,
    else a Hub repo's READ files, downloaded (or found in the local Hugging Face cache)."""
    path = Path(name_or_path)
    if path.is_dir() or path.exists() or not is_repo_id(str(name_or_path)):
        if not path.is_dir():
            raise ConfigError(f"{name_or_path} is neither a local folder nor a Hugging Face Hub id (user/name); "
                              f"give the folder save_pretrained wrote, or a Hub repo id")
        return path
    repo = str(name_or_path)
    at = f" at revision {revision!r}" if revision else ""
    try:
        folder = Path(snapshot_download(repo, revision=revision, token=token, cache_dir=cache_dir,
                                        allow_patterns=READ_FILES, library_name="readapt"))
    except GatedRepoError as exc:
        raise HubError(f"Hub repo {repo} is gated: accept its terms on huggingface.co, then {_LOGIN}") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"{repo} is not a local folder, and the Hub has no model repo {repo} (or it is private: "
                       f"{_LOGIN})") from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"Hub repo {repo} has no revision {revision!r}; give a branch, tag or commit it has") from exc
    except LocalEntryNotFoundError as exc:
        raise HubError(f"{repo} is not a local folder, and the Hugging Face Hub cannot be reached (offline, or "
                       f"HF_HUB_OFFLINE=1) with no copy{at} in the local cache; go online once or pass a "
                       f"local folder") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"cannot download {repo}{at} from the Hugging Face Hub ({_first_line(exc)})") from exc
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(f"Hub repo {repo}{at} holds no {CONFIG_NAME}: it is not a READ model (one saved with "
                       f"ReadModel.save_pretrained or push_to_hub)")
    return folder


def push(folder: Path, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
         commit_message: str = "Upload READ model", revision: Optional[str] = None, create_pr: bool = False):
    """Create ``repo_id`` if needed and upload the READ files of ``folder``; returns the CommitInfo."""
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hugging Face Hub repo id; use user/name")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo.repo_id, folder_path=folder, allow_patterns=READ_FILES,
                                 commit_message=commit_message, revision=revision, create_pr=create_pr)
    except Exception as exc:  # only Hub calls above: network, HTTP, auth and offline errors of any client
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hub refused the upload to {repo_id} ({status}): {_LOGIN} with write access") from exc
        raise HubError(f"cannot push to Hub repo {repo_id} ({_first_line(exc)}); check the connection "
                       f"(HF_HUB_OFFLINE unset) and {_LOGIN}") from exc


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 160 else text[:160] + "..."
