"""Text generation with the READ correction, on the backbone's own ``generate``.

    model = ReadModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), run_dir)
    out = model.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=50)

Why this works with the KV cache: READ on a language model corrects each token from that token's own states
across depth (plus, for T5, that position's cross-attention term of the encoder correction, which
is computed once per input), and the correction lands on the final state only, after the stack
has run (token mixing, which would relate tokens, is refused for LM tasks by ReadConfig).
Nothing the backbone caches (keys and values of earlier positions) depends on it. So each
decoding step runs the frozen backbone on the new position alone, the side network reads that
position's states at every layer, and the frozen LM head reads the corrected final state.

How: transformers' ``generate`` does everything else (greedy, sampling, beam search, logits
processors, stopping criteria, streamers, the cache, left padding). While it runs, two forward
hooks sit on the backbone's decoder stack (GPT2Model, LlamaModel, T5's decoder, ...): the first
asks it for its per-layer states, the second adds the correction to the last position of its
output. The model's own LM head and logit post-processing (Gemma2's soft-capping, T5's
rescaling) then run as always, on the corrected state. Only the last position is corrected: it is
the only one whose logits ``generate`` reads. For T5, a hook on the encoder computes the encoder
correction d_enc once per call. The hooks are removed when ``generate`` returns or fails.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import nn

from readapt.backbones import BackboneStates

if TYPE_CHECKING:
    from readapt.model import ReadModel

LM_TASK_TYPES = ("CAUSAL_LM", "SEQ_2_SEQ_LM")


def generate(model: "ReadModel", *args, **kwargs):
    """``model.base_model.generate(*args, **kwargs)`` with the correction applied at every new
    position; takes and returns what transformers' ``generate`` does."""
    check_can_generate(model)
    backbone = model.base_model
    if model.runner.family == "seq2seq" and kwargs.get("encoder_outputs") is not None:
        raise ValueError("READ computes the encoder correction from the encoder's own pass: pass "
                         "input_ids, not encoder_outputs")
    if (model.runner.family == "seq2seq" and model.runner.num_layers != model.runner.num_encoder_layers
            and all(kwargs.get(key) is None for key in ("cache", "past_key_values", "cache_implementation"))
            and kwargs.get("use_cache", True)):
        # transformers sizes T5's default decoder cache from num_layers, the *encoder's* depth;
        # empty caches grow to the decoder's depth instead.
        from transformers import DynamicCache, EncoderDecoderCache

        kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with correcting(model):
        return backbone.generate(*args, **kwargs)


def check_can_generate(model: "ReadModel") -> None:
    task_type = model.config.task_type
    if task_type not in LM_TASK_TYPES:
        raise ValueError(f"generate needs a language-model READ model (task_type {' or '.join(LM_TASK_TYPES)}); "
                         f"this one is {task_type}: label texts with model(...) or `readapt predict`")
    if model.runner.family == "causal" and model.base_model.get_output_embeddings() is None:
        raise ValueError("generate needs the backbone's LM head: load it with AutoModelForCausalLM")


@contextlib.contextmanager
def correcting(model: "ReadModel"):
    """Inside this block the backbone's decoder stack returns the corrected final state at its last
    position (see the module docstring); ``model.disable_adapter()`` still turns it off."""
    runner = model.runner
    seq2seq = runner.family == "seq2seq"
    decoder = runner.model.decoder if seq2seq else runner.body
    asked: dict[nn.Module, dict[str, bool]] = {}   # what the caller asked each stack to return
    encoder_run: dict[str, torch.Tensor] = {}     # T5: d_enc of the current call

    def wants_states(module, args, kwargs):
        asked[module] = {"output_hidden_states": bool(kwargs.get("output_hidden_states")),
                         "output_attentions": bool(kwargs.get("output_attentions"))}
        kwargs["output_hidden_states"] = True      # every layer's state: the side network's input
        if module is decoder and seq2seq:
            kwargs["output_attentions"] = True     # the cross-attention probabilities: the Joiner's
        return args, kwargs

    def forget_unasked(module, out):
        """Drop what only READ asked for, so the outputs are those the caller would get."""
        if not asked[module]["output_hidden_states"]:
            out.hidden_states = None
        if module is decoder and seq2seq and not asked[module]["output_attentions"]:
            out.attentions = out.cross_attentions = None
        return out

    def encoder_done(module, args, kwargs, out):
        if model.correction_enabled:
            mask = kwargs.get("attention_mask")
            if mask is None:
                mask = torch.ones(out.last_hidden_state.shape[:2], dtype=torch.long,
                                  device=out.last_hidden_state.device)
            encoder_run["d_enc"] = model.encoder_correction(out.hidden_states, mask)
        return forget_unasked(module, out)

    def decoder_done(module, args, kwargs, out):
        if model.correction_enabled:
            out.last_hidden_state = corrected_last(model, out, encoder_run.get("d_enc"))
            if asked[module]["output_hidden_states"]:  # phi_N as the caller sees it: corrected too
                out.hidden_states = (*out.hidden_states[:-1], out.last_hidden_state)
        return forget_unasked(module, out)

    handles = [decoder.register_forward_pre_hook(wants_states, with_kwargs=True),
               decoder.register_forward_hook(decoder_done, with_kwargs=True)]
    if seq2seq:
        handles += [runner.model.encoder.register_forward_pre_hook(wants_states, with_kwargs=True),
                    runner.model.encoder.register_forward_hook(encoder_done, with_kwargs=True)]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def corrected_last(model: "ReadModel", out, d_enc) -> torch.Tensor:
    """The decoder stack's final state with the correction added at its last position."""
    final = out.last_hidden_state
    last = tuple(h[:, -1:] for h in out.hidden_states)                      # phi_0..phi_N, (B, 1, d)
    cross = None
    if model.runner.family == "seq2seq":
        if d_enc is None:
            raise RuntimeError("the T5 decoder ran before its encoder inside READ's generate")
        # beam search and num_return_sequences repeat each input's rows (repeat_interleave): so here
        d_enc = d_enc.repeat_interleave(final.shape[0] // d_enc.shape[0], dim=0)
        probs = tuple(p[:, :, -1:] for p in out.cross_attentions)          # (B, H, 1, T_enc)
        cross = model.cross_terms(d_enc, probs, last[0])                    # (L, B, 1, d)
    read = torch.ones(final.shape[0], 1, dtype=torch.bool, device=final.device)
    states = BackboneStates(hidden_states=last, attention_mask=read)
    corrected = model.corrected_final_state(states, read, cross).to(final.dtype)
    return torch.cat([final[:, :-1], corrected], dim=1)


def context_length(model: "ReadModel") -> Optional[int]:
    """Tokens a decoder-only backbone can attend over (None: no fixed limit, as T5's relative
    positions)."""
    if model.runner.family != "causal":
        return None
    return getattr(model.base_model.config, "max_position_embeddings", None)


def generate_text(model: "ReadModel", tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 50,
                  batch_size: int = 8, streamer=None, **options) -> list[str]:
    """The completion of each prompt (the new text only), generated ``batch_size`` prompts at a time
    with left padding; ``options`` go to ``generate`` (do_sample, temperature, top_p, num_beams, ...)
    and ``streamer`` (e.g. transformers.TextStreamer) sees the tokens as they come."""
    causal = model.runner.family == "causal"
    limit = context_length(model)
    encoded = [tokenizer(prompt, return_token_type_ids=False)["input_ids"] for prompt in prompts]
    if tokenizer.pad_token is None:
        raise ValueError("the tokenizer has no pad token; set one first (tokenizer.pad_token = tokenizer.eos_token)")
    for number, ids in enumerate(encoded, start=1):
        if not ids:
            raise ValueError(f"prompt {number} is empty; give every prompt some words")
        if limit is not None and len(ids) + max_new_tokens > limit:
            raise ValueError(f"prompt {number} is {len(ids):,d} tokens; with max_new_tokens {max_new_tokens:,d} that "
                             f"passes the model's context of {limit:,d} tokens: shorten it or ask for fewer tokens")
    device = next(model.parameters()).device
    # decoder-only models continue the last token: the padding goes before the prompt
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left" if causal else "right"
    texts: list[str] = []
    try:
        for start in range(0, len(encoded), batch_size):
            batch = tokenizer.pad({"input_ids": encoded[start:start + batch_size]}, return_tensors="pt").to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 streamer=streamer, **options)
            new = out[:, batch["input_ids"].shape[1]:] if causal else out  # T5 returns the decoder's text alone
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
    return texts
