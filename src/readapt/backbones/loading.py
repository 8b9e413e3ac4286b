"""Load a pretrained backbone and its tokenizer by path or Hub id, for a task kind.

Hub downloads work for users online; here (offline) a local path is the way. Remote code never
runs unless the user asks for it with ``trust_remote_code=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                          AutoTokenizer)

from readapt.backbones import UnsupportedModelError, family
from readapt.backbones.quantize import QUANTIZATIONS, check_quantize, quantize_int8


# The dtypes a frozen backbone may run in. READ never differentiates the backbone, so half
# precision costs it nothing in training; its side network and head always train in fp32.
BACKBONE_DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelLoadError(ValueError):
    pass


def backbone_dtype(name: str, device: str | torch.device = "cpu") -> Optional[torch.dtype]:
    """The torch dtype to load a backbone in; None means the checkpoint's own (as stored).

    ``auto``: float32 on CPU (half-precision matmuls are slow or missing on many CPUs), the
    checkpoint's own dtype on a GPU (a bf16 checkpoint stays bf16: half the memory)."""
    if name not in BACKBONE_DTYPES:
        raise ValueError(f"backbone dtype {name!r}: choose one of {', '.join(BACKBONE_DTYPES)}")
    if name == "auto":
        return None if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def execution_device(device_map: dict) -> torch.device:
    """Where a dispatched backbone computes: its one GPU, or the CPU when every part sits on the CPU
    or on disk (accelerate streams offloaded weights to that device layer by layer)."""
    gpus = {v for v in device_map.values() if v not in ("cpu", "disk")}
    if len(gpus) > 1:
        raise ValueError(f"--device-map auto spread the backbone over {len(gpus)} GPUs; readapt supports one GPU "
                         f"plus CPU/disk offload so far: limit it with --max-memory (e.g. 0=20GiB cpu=60GiB)")
    if not gpus:
        return torch.device("cpu")
    gpu = gpus.pop()
    return torch.device(f"cuda:{gpu}" if isinstance(gpu, int) else gpu)


def load_pretrained(name_or_path: str, trust_remote_code: bool = False, lm: bool = False, dtype: str = "auto",
                    device: str | torch.device = "cpu", quantize: str = "none", device_map: Optional[str] = None,
                    max_memory: Optional[dict] = None, offload_folder: Optional[str] = None):
    """(model, tokenizer, family). Encoder-decoder models come with their LM head (text-to-text);
    decoder-only ones with theirs when ``lm`` (causal LM), else the bare decoder. ``dtype`` is one of
    BACKBONE_DTYPES (see :func:`backbone_dtype`; ``device`` is where the model will run, which
    ``auto`` reads; the model itself is returned on the CPU). ``quantize="int8"`` stores the frozen
    layers' weights in int8 (backbones/quantize.py; CPU, an fp32 backbone). ``device_map="auto"``
    loads it through accelerate's big-model loading instead: spread over the device and the CPU
    within ``max_memory``, the rest offloaded to ``offload_folder`` on disk (for a frozen backbone
    that does not fit one device; see execution_device)."""
    torch_dtype = backbone_dtype(dtype, device)  # a bad name fails before anything is read
    check_quantize(quantize, device)
    if quantize != "none" and torch_dtype not in (None, torch.float32):
        raise ValueError(f"--quantize {quantize} quantises a float32 backbone; drop --backbone-dtype {dtype}")
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors for bad ids and paths
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = ("a local folder without a usable config.json" if Path(name_or_path).is_dir()
                 else "not a local model folder and not reachable on the Hugging Face Hub")
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {where} ({reason})") from None
    kind = family(config.model_type)  # UnsupportedModelError names the supported types
    auto = {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM if lm else AutoModel,
            "encoder": AutoModel}[kind]
    placement = {}
    if device_map is not None:
        if quantize != "none":
            raise ValueError("--device-map and --quantize do not combine yet: pass one of them")
        placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    model = auto.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                 dtype=torch.float32 if quantize != "none" else
                                 "auto" if torch_dtype is None else torch_dtype, **placement)
    if quantize == "int8":
        model = quantize_int8(model, kind)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) < vocab // 2:
        # transformers falls back to a near-empty tokenizer when a folder has none: every word [UNK].
        raise ModelLoadError(f"model {name_or_path!r} has no usable tokenizer ({len(tokenizer)} tokens for a "
                             f"{vocab}-token model); save the model's tokenizer into that folder "
                             f"(tokenizer.save_pretrained)")
    if tokenizer.pad_token is None:  # GPT-2/Llama ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, kind


__all__ = ["BACKBONE_DTYPES", "QUANTIZATIONS", "ModelLoadError", "UnsupportedModelError", "backbone_dtype",
           "execution_device", "load_pretrained"]
