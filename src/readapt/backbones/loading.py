"""Load a pretrained backbone and its tokenizer by path or Hub id, for a task kind.

Hub downloads work for users online; here (offline) a local path is the way. Remote code never
runs unless the user asks for it with ``trust_remote_code=True``.
"""

from __future__ import annotations

from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                          AutoTokenizer)

from readapt.backbones import UnsupportedModelError, family


class ModelLoadError(ValueError):
    pass


def load_pretrained(name_or_path: str, trust_remote_code: bool = False, lm: bool = False):
    """(model, tokenizer, family). Encoder-decoder models come with their LM head (text-to-text);
    decoder-only ones with theirs when ``lm`` (causal LM), else the bare decoder."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError/ValueError/HF errors for bad ids and paths
        raise ModelLoadError(f"cannot load model {name_or_path!r}: not a local model folder and not "
                             f"reachable on the Hugging Face Hub ({str(exc).splitlines()[0]})") from None
    kind = family(config.model_type)  # UnsupportedModelError names the supported types
    auto = {"seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM if lm else AutoModel,
            "encoder": AutoModel}[kind]
    model = auto.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # GPT-2/Llama ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, kind


__all__ = ["ModelLoadError", "UnsupportedModelError", "load_pretrained"]
