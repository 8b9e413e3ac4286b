"""Evaluation: encode a split, predict in batches, score with the task's official metrics.

Classifiers and regressors read their logits; text-to-text models (T5) rank the task's target
strings by log-likelihood (rank classification), so every prediction is a valid label.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from readapt.data import TaskSpec, collate, compute_metrics, encode, encode_text_to_text


def encode_split(examples, spec: TaskSpec, tokenizer, max_length: int, text_to_text: bool) -> list[dict]:
    if text_to_text:
        return encode_text_to_text(examples, spec, tokenizer, max_length)
    return encode(examples, tokenizer, max_length)


def without_states(items: list[dict]) -> list[dict]:
    """The items' token fields only, without cached backbone states (see attach_states)."""
    return [{k: v for k, v in item.items() if k != "states"} for item in items]


def model_inputs(items: list[dict], pad_token_id: int, device: torch.device) -> dict:
    """A padded batch for ``model(**batch)``. Items carrying cached backbone states (see
    attach_states) become ``{"states": BackboneStates, "labels": ...}`` instead of token ids."""
    batch = collate(without_states(items), pad_token_id)
    inputs = {k: v.to(device) for k, v in batch.items() if k in
              ("input_ids", "attention_mask", "token_type_ids", "segment_ids", "labels")}
    if "states" in items[0]:
        from readapt.backbones import BackboneStates

        mask = inputs.pop("attention_mask")
        layers, _, dim = items[0]["states"].shape
        padded = torch.zeros(layers, len(items), mask.shape[1], dim)
        for j, item in enumerate(items):
            padded[:, j, :item["states"].shape[1]] = item["states"]
        inputs = {"states": BackboneStates(tuple(padded.to(device).unbind(0)), mask),
                  **{k: inputs[k] for k in ("labels", "segment_ids") if k in inputs}}
    return inputs


@torch.no_grad()
def attach_states(model, encoded: list[dict], pad_token_id: int, device, batch_size: int = 64) -> None:
    """Run the frozen backbone once over ``encoded`` and keep each example's per-layer states on
    its item (``item["states"]``: layers x real tokens x d, on the CPU). The backbone is frozen
    and in eval mode, so these are exactly the states every later epoch would recompute."""
    # Longest first, so each batch holds examples of similar length: little padding to run
    # through the backbone (a real saving on sentence pairs, whose lengths vary a lot).
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    for start in tqdm(range(0, len(encoded), batch_size), desc="caching states", leave=False, mininterval=2):
        items = [encoded[i] for i in order[start:start + batch_size]]
        batch = model_inputs(items, pad_token_id, device)
        batch.pop("labels", None)
        stacked = torch.stack(model.backbone_states(**batch).hidden_states).cpu()  # (L+1, B, T, d)
        for j, item in enumerate(items):  # right padding: the real tokens come first
            item["states"] = stacked[:, j, :int(batch["attention_mask"][j].sum())].clone()


@torch.no_grad()
def predict(model, encoded: list[dict], spec: TaskSpec, tokenizer, batch_size: int, device,
            text_to_text: bool, desc: str = "predict") -> np.ndarray:
    """Class indices (or regression values) for every encoded example, in order.

    Text-to-text models rank the task's target strings by their log-likelihood (rank
    classification): exact for classification, and STS-B's 0.2-step bins for regression.
    """
    model.eval()
    targets = spec.target_texts() if text_to_text else None
    target_ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in targets] if targets else None
    out = []
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False, mininterval=2):
        batch = model_inputs(encoded[start:start + batch_size], tokenizer.pad_token_id, device)
        batch.pop("labels", None)
        if not text_to_text:
            logits = model(**batch).logits.float()
            out.append(logits.squeeze(-1) if spec.is_regression else logits.argmax(-1))
            continue
        scores = torch.stack([_sequence_logprob(model, batch, ids) for ids in target_ids], dim=1)
        best = scores.argmax(1)
        if spec.is_regression:
            best = torch.tensor([float(targets[i]) for i in best.tolist()])
        out.append(best)
    return torch.cat(out).cpu().numpy() if out else np.array([])


def _sequence_logprob(model, batch, target: list[int]) -> torch.Tensor:
    labels = torch.tensor(target, device=batch["input_ids"].device).repeat(batch["input_ids"].shape[0], 1)
    logits = model(**batch, labels=labels).logits.float()
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)


def evaluate(model, encoded, examples, spec, tokenizer, batch_size, device, text_to_text, desc="eval") -> dict:
    predictions = predict(model, encoded, spec, tokenizer, batch_size, device, text_to_text, desc)
    return compute_metrics(spec, predictions, np.array([e.label for e in examples]))
