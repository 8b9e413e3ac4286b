"""Evaluation: encode a split, predict in batches, score with the task's official metrics.

Classifiers and regressors read their logits; text-to-text models (T5) rank the task's target
strings by log-likelihood (rank classification), so every prediction is a valid label.
Language-model tasks (causal_lm, seq2seq_lm) report the token loss and perplexity on the response
tokens, and a teacher-forced exact match where responses are short (:func:`evaluate_lm`).
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from readapt.data import TaskSpec, collate, compute_metrics, encode, encode_text_to_text
from readapt.data.batching import SECOND
from readapt.data.lm import EXACT_MATCH, IGNORE, LM_TASK_TYPES, encode_lm, short_responses


def encode_split(examples, spec: TaskSpec, tokenizer, max_length: int, text_to_text: bool,
                 separate_pairs: bool = False, task_type: str = "classification", split: str = "train") -> list[dict]:
    if task_type in LM_TASK_TYPES:
        return encode_lm(examples, tokenizer, max_length, task_type, split)
    if text_to_text:
        return encode_text_to_text(examples, spec, tokenizer, max_length)
    return encode(examples, tokenizer, max_length, separate_pairs)


# Keys of the backbone states an item may carry (attach_states, or the on-disk cache in
# state_cache.py): the states of its sequence(s), which layers they hold, and for encoder-decoder
# models (T5) the encoder's states and the decoder's cross-attention probabilities, and theirs.
STATE_KEYS = ("states", "states" + SECOND, "state_layers", "encoder_states", "encoder_state_layers",
              "cross_attentions", "cross_layers")


def without_states(items: list[dict]) -> list[dict]:
    """The items' token fields only, without cached backbone states (see attach_states)."""
    return [{k: v for k, v in item.items() if k not in STATE_KEYS} for item in items]


def _stack_pairs(batch: dict, pad_token_id: int) -> dict:
    """Pairs encoded as two sequences (``encode(separate_pairs=True)``) -> one (2B, T) batch: the
    first texts in rows 0..B-1, the second texts in rows B..2B-1, and ``segment_ids`` saying so
    (1 / 2 on real tokens), which is how pair pooling finds u and v."""
    length = max(batch["input_ids"].shape[1], batch["input_ids" + SECOND].shape[1])
    stacked = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in batch:
            pad = pad_token_id if key == "input_ids" else 0
            a, b = (F.pad(t, (0, length - t.shape[1]), value=pad) for t in (batch[key], batch[key + SECOND]))
            stacked[key] = torch.cat([a, b])
    mask = stacked["attention_mask"]
    rows = mask.shape[0] // 2
    stacked["segment_ids"] = mask * torch.cat([mask.new_ones(rows, 1), mask.new_full((rows, 1), 2)])
    return {**stacked, **({"labels": batch["labels"]} if "labels" in batch else {})}


def model_inputs(items: list[dict], pad_token_id: int, device: torch.device) -> dict:
    """A padded batch for ``model(**batch)``. Items carrying cached backbone states (see
    attach_states) become ``{"states": BackboneStates, "labels": ...}`` instead of token ids.

    Cached states hold every layer (attach_states), or only the layers READ reads (the disk cache):
    then ``item["state_layers"]`` maps each layer 0..N to its row in ``item["states"]`` (None: not
    stored, and None in ``hidden_states``, which nothing reads). Encoder-decoder items hold the
    decoder's states over their target tokens (``labels``), plus ``encoder_states`` and
    ``cross_attentions`` mapped the same way (``encoder_state_layers``, ``cross_layers``)."""
    batch = collate(without_states(items), pad_token_id)
    if "input_ids" + SECOND in batch:
        batch = _stack_pairs(batch, pad_token_id)
    inputs = {k: v.to(device) for k, v in batch.items() if k in
              ("input_ids", "attention_mask", "token_type_ids", "segment_ids", "labels")}
    if "states" not in items[0]:
        return inputs
    from readapt.backbones import BackboneStates

    mask = inputs.pop("attention_mask")
    rows = [item["states"] for item in items]
    if "states" + SECOND in items[0]:  # the same row order as _stack_pairs
        rows += [item["states" + SECOND] for item in items]
    rest = {k: inputs[k] for k in ("labels", "segment_ids") if k in inputs}
    if "encoder_states" not in items[0]:
        hidden = _by_layer(_padded(rows, (mask.shape[1], rows[0].shape[-1]), device), items[0].get("state_layers"))
        return {"states": BackboneStates(hidden, mask), **rest}
    # Encoder-decoder: the decoder ran over the target tokens (right-padded labels: the real ones first).
    targets = inputs["labels"] != IGNORE
    steps, length, dim = targets.shape[1], mask.shape[1], rows[0].shape[-1]
    encoder = [item["encoder_states"] for item in items]
    cross = [item["cross_attentions"] for item in items]
    return {"states": BackboneStates(
        hidden_states=_by_layer(_padded(rows, (steps, dim), device), items[0].get("state_layers")),
        attention_mask=targets.long(),
        encoder_hidden_states=_by_layer(_padded(encoder, (length, dim), device), items[0].get("encoder_state_layers")),
        encoder_attention_mask=mask,
        cross_attentions=_by_layer(_padded(cross, (cross[0].shape[1], steps, length), device),
                                   items[0].get("cross_layers"))), **rest}


def _padded(blocks: list[torch.Tensor], shape: tuple, device) -> torch.Tensor:
    """(layers, B, *shape), fp32 whatever the cache stores: each item's (layers, ...) block in the
    leading corner of its row, zeros elsewhere (right padding)."""
    out = torch.zeros(blocks[0].shape[0], len(blocks), *shape)
    for j, block in enumerate(blocks):
        out[(slice(None), j, *map(slice, block.shape[1:]))] = block
    return out.to(device)


def _by_layer(stored: torch.Tensor, where: Optional[tuple]) -> tuple:
    """The stored rows as one tensor per layer: ``where[i]`` is layer i's row (None: not stored)."""
    rows = stored.unbind(0)
    return tuple(rows) if where is None else tuple(None if row is None else rows[row] for row in where)


def item_sequences(item: dict, targets: bool = False) -> list[tuple[str, dict]]:
    """(states key, token fields) of each sequence an item holds: one, or two for separate pairs.
    ``targets``: an encoder-decoder model's states depend on its target tokens too (``labels``, what
    the decoder reads), so they are part of the sequence's fields."""
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", *(("labels",) if targets else ())) if k in item]
    found = [("states", {k: item[k] for k in keys})]
    if "input_ids" + SECOND in item:
        found.append(("states" + SECOND, {k: item[k + SECOND] for k in keys}))
    return found


@torch.no_grad()
def frozen_pass(model, sequences: list[dict], pad_token_id: int, device, batch_size: int = 64,
                layers: Optional[list[int]] = None, encoder_layers: Optional[list[int]] = None,
                cross_layers: Optional[list[int]] = None,
                desc: str = "caching states") -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
    """Run the frozen backbone once over ``sequences`` (token fields, see item_sequences) and yield
    ``(i, blocks of sequences[i])`` on the CPU: its states, layers x real tokens x d, all layers
    0..N or only ``layers``. An encoder-decoder model (T5) yields three blocks: the decoder's
    states over the target tokens, the encoder's (``encoder_layers``) over the input's, and the
    decoder's cross-attention probabilities (``cross_layers``: 0-based decoder layers), layers x
    heads x target tokens x input tokens. The backbone is frozen and in eval mode, so these are
    exactly the states every epoch would recompute. Each yielded tensor is a view of its batch:
    clone it to keep it."""
    def pick(tensors: tuple, wanted: Optional[list[int]]) -> torch.Tensor:
        return torch.stack([tensors[i] for i in wanted] if wanted is not None else tensors).cpu()

    # Longest first, so each batch holds sequences of similar length: little padding to run
    # through the backbone (a real saving on sentence pairs, whose lengths vary a lot).
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]["input_ids"]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, mininterval=2):
        chunk = order[start:start + batch_size]
        batch = model_inputs([sequences[i] for i in chunk], pad_token_id, device)
        states = model.backbone_states(**batch)
        hidden = pick(states.hidden_states, layers)                                       # (L, B, T, d)
        if states.encoder_hidden_states is None:
            for j, i in enumerate(chunk):  # right padding: the real tokens come first
                yield i, (hidden[:, j, :int(batch["attention_mask"][j].sum())],)
            continue
        encoder = pick(states.encoder_hidden_states, encoder_layers)                      # (L_enc, B, T_enc, d)
        cross = pick(states.cross_attentions, cross_layers)                               # (L_x, B, H, T_dec, T_enc)
        for j, i in enumerate(chunk):
            tokens, steps = int(batch["attention_mask"][j].sum()), len(sequences[i]["labels"])
            yield i, (hidden[:, j, :steps], encoder[:, j, :tokens], cross[:, j, :, :steps, :tokens])


def set_states(item: dict, key: str, blocks: tuple[torch.Tensor, ...], rows: Optional[dict] = None) -> None:
    """Give ``item`` one sequence's states (frozen_pass's blocks) under ``key`` (model_inputs reads
    them); ``rows`` (state_cache) maps each layer to its stored row: "layers", and for an
    encoder-decoder model "encoder_layers" and "cross_layers"."""
    item[key] = blocks[0]
    if rows is not None:
        item["state_layers"] = rows["layers"]
    if len(blocks) > 1:
        item["encoder_states"], item["cross_attentions"] = blocks[1], blocks[2]
        if rows is not None:
            item["encoder_state_layers"], item["cross_layers"] = rows["encoder_layers"], rows["cross_layers"]


def attach_states(model, encoded: list[dict], pad_token_id: int, device, batch_size: int = 64) -> None:
    """Run the frozen backbone once over ``encoded`` and keep each example's per-layer states on
    its item, in RAM (``item["states"]``: all layers x real tokens x d, on the CPU; ``states_b``
    for the second text of a separately encoded pair; an encoder-decoder model's encoder states and
    cross-attention probabilities too). state_cache.py keeps them on disk instead."""
    targets = model.runner.family == "seq2seq"
    sequences = [(item, key, fields) for item in encoded for key, fields in item_sequences(item, targets)]
    for i, blocks in frozen_pass(model, [fields for _, _, fields in sequences], pad_token_id, device, batch_size):
        item, key, _ = sequences[i]
        set_states(item, key, tuple(block.clone() for block in blocks))


@torch.no_grad()
def _raw_scores(model, encoded: list[dict], spec: TaskSpec, tokenizer, batch_size: int, device,
                text_to_text: bool, desc: str):
    """Per batch: the head's logits (classification), its values (regression), or for text-to-text
    models each target string's log-likelihood (B, targets)."""
    model.eval()
    targets = spec.target_texts() if text_to_text else None
    target_ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in targets] if targets else None
    if text_to_text:  # each target string runs through the decoder: cached states (of the gold one) do not serve
        encoded = without_states(encoded)
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False, mininterval=2):
        batch = model_inputs(encoded[start:start + batch_size], tokenizer.pad_token_id, device)
        batch.pop("labels", None)
        if not text_to_text:
            logits = model(**batch).logits.float()
            yield logits.squeeze(-1) if spec.is_regression else logits
        else:
            yield torch.stack([_sequence_logprob(model, batch, ids) for ids in target_ids], dim=1)


def predict(model, encoded: list[dict], spec: TaskSpec, tokenizer, batch_size: int, device,
            text_to_text: bool, desc: str = "predict") -> np.ndarray:
    """Class indices (or regression values) for every encoded example, in order.

    Text-to-text models rank the task's target strings by their log-likelihood (rank
    classification): exact for classification, and STS-B's 0.2-step bins for regression.
    """
    targets = spec.target_texts() if text_to_text else None
    out = []
    for scores in _raw_scores(model, encoded, spec, tokenizer, batch_size, device, text_to_text, desc):
        if spec.is_regression and not text_to_text:
            out.append(scores)
            continue
        best = scores.argmax(1)
        if spec.is_regression:
            best = torch.tensor([float(targets[i]) for i in best.tolist()])
        out.append(best)
    return torch.cat(out).cpu().numpy() if out else np.array([])


def predict_proba(model, encoded: list[dict], spec: TaskSpec, tokenizer, batch_size: int, device,
                  text_to_text: bool, desc: str = "predict") -> np.ndarray:
    """Class probabilities (examples x classes, in spec.label_names order): the softmax of the
    head's logits, or for text-to-text models of the label strings' log-likelihoods (the
    probability of each label among the task's labels)."""
    if spec.is_regression:
        raise ValueError("a regression task has no class probabilities; its prediction is the value")
    out = [scores.softmax(-1) for scores in
           _raw_scores(model, encoded, spec, tokenizer, batch_size, device, text_to_text, desc)]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, spec.num_labels))


def _sequence_logprob(model, batch, target: list[int]) -> torch.Tensor:
    labels = torch.tensor(target, device=batch["input_ids"].device).repeat(batch["input_ids"].shape[0], 1)
    logits = model(**batch, labels=labels).logits.float()
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)


def evaluate(model, encoded, examples, spec, tokenizer, batch_size, device, text_to_text, desc="eval",
             task_type: str = "classification") -> dict:
    if task_type in LM_TASK_TYPES:
        return evaluate_lm(model, encoded, tokenizer.pad_token_id, batch_size, device, causal=task_type == "causal_lm",
                           exact_match=EXACT_MATCH in spec.metrics and short_responses(encoded), desc=desc)
    predictions = predict(model, encoded, spec, tokenizer, batch_size, device, text_to_text, desc)
    return compute_metrics(spec, predictions, np.array([e.label for e in examples]))


MAX_LOG_PERPLEXITY = 100.0  # a loss above this is a broken model; exp() of it would overflow JSON


@torch.no_grad()
def evaluate_lm(model, encoded: list[dict], pad_token_id: int, batch_size: int, device, causal: bool,
                exact_match: bool = False, desc: str = "eval") -> dict:
    """Token-weighted cross-entropy ("loss") over the label tokens, its perplexity, and, if asked,
    exact match: the share of examples whose every label token is the argmax of the model's
    teacher-forced logits. That is exactly "greedy decoding writes the response (and its EOS)":
    greedy decoding follows the gold prefix for as long as every gold token is the argmax, so one
    forward pass per batch scores what a decoding loop would, without the loop."""
    model.eval()
    total, tokens, right = 0.0, 0, 0
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False, mininterval=2):
        batch = model_inputs(encoded[start:start + batch_size], pad_token_id, device)
        labels = batch["labels"]
        logits = model(**batch).logits[:, -labels.shape[1]:]  # prompt tuning prepends virtual tokens
        if causal:  # position t predicts token t+1
            logits, labels = logits[:, :-1], labels[:, 1:]
        scored = labels != IGNORE
        # fp32 only for the scored positions: B x T x vocab logits of a half-precision LM are large
        total += F.cross_entropy(logits[scored].float(), labels[scored], reduction="sum").item()
        tokens += int(scored.sum())
        right += int(((logits.argmax(-1) == labels) | ~scored).all(1).sum())
    loss = total / max(tokens, 1)
    scores = {"loss": loss, "perplexity": math.exp(min(loss, MAX_LOG_PERPLEXITY))}
    if exact_match:
        scores[EXACT_MATCH] = right / max(len(encoded), 1)
    return scores
