"""The model card (README.md) that ReadModel.save_pretrained writes beside the READ weights.

Hub metadata through huggingface_hub's ModelCardData (library_name: readapt, base_model when it is
a Hub id), then what a reader needs: the frozen base model, the task, the READ config, the metrics
and the training command when the caller knows them, and how to load it. A README.md that readapt
did not write is never replaced.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from huggingface_hub import ModelCard, ModelCardData

from readapt.checkpoint import atomic_write_text
from readapt.config import CARD_NAME, ReadConfig
from readapt.hub import is_repo_id
from readapt.inputs import InputFileError, read_user_bytes

_OURS = "library_name: readapt"
_PIPELINES = {"SEQ_CLS": "text-classification", "CAUSAL_LM": "text-generation",
              "SEQ_2_SEQ_LM": "text2text-generation"}
_AUTO_CLASS = {"SEQ_CLS": "AutoModel", "CAUSAL_LM": "AutoModelForCausalLM",
               "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM"}


def render(config: ReadConfig, *, trainable: int, total: int, dataset: Optional[str] = None,
           metrics: Optional[Mapping[str, Any]] = None, command: Optional[str] = None) -> str:
    base = config.base_model_name_or_path
    # The Hub validates base_model: a local path must stay out of the metadata (the text names it).
    data = ModelCardData(library_name="readapt", base_model=base if base and _is_hub_name(base) else None,
                         pipeline_tag=_PIPELINES[config.task_type], tags=["read", "peft", "side-tuning"])
    auto = _AUTO_CLASS[config.task_type]
    lines = [
        f"# READ side network for {base or 'a frozen backbone'}", "",
        "A [READ](https://arxiv.org/abs/2305.15348) (REcurrent ADaptation) side network and task head, "
        "trained with readapt on a frozen backbone. This folder holds only what "
        f"READ trains ({trainable:,d} parameters, {100 * trainable / max(total, 1):.2f}% of {total:,d}); "
        "the backbone's weights are not in it.", "",
        f"- Base model (frozen): `{base or 'unknown'}`",
        f"- Task: `{config.task_type}`" + (f", {config.num_labels} label(s)" if config.num_labels else ""),
    ]
    if dataset:
        lines.append(f"- Trained on: `{dataset}`")
    lines += ["", "## Use", "", "```python", f"from transformers import {auto}", "from readapt import ReadModel", "",
              f'backbone = {auto}.from_pretrained("{base or "BASE_MODEL"}")',
              'model = ReadModel.from_pretrained(backbone, "THIS_FOLDER_OR_HUB_ID")', "```", "",
              "## READ config", "", "| field | value |", "|---|---|"]
    lines += [f"| {name} | `{value}` |" for name, value in config.to_dict().items()
              if not name.startswith("backbone_") and name != "base_model_name_or_path"]
    rows = list(_flatten(metrics or {}))
    if rows:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in rows]
    if command:
        lines += ["", "## Training command", "", "```bash", command, "```"]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def write(directory: Path, text: str) -> bool:
    """Write README.md unless a README.md that readapt did not write is there (it is kept, with a
    warning). True when written."""
    path = Path(directory) / CARD_NAME
    if path.exists() or path.is_symlink():
        try:
            ours = _OURS in read_user_bytes(path, 1024**2).decode("utf-8", "replace")
        except InputFileError:
            ours = False
        if not ours:
            warnings.warn(f"{path} was not written by readapt: kept as it is, no model card written", stacklevel=3)
            return False
    atomic_write_text(path, text)
    return True


def _is_hub_name(name: str) -> bool:
    return not Path(name).exists() and is_repo_id(name)


def _flatten(metrics: Mapping[str, Any], prefix: str = ""):
    """{"test": {"accuracy": 0.8}} -> ("test accuracy", 0.8); non-numbers are left out."""
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + " ")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)
