"""Task heads: what reads the (corrected) final hidden states.

Every method in readapt (READ and its peers) ends in the same head for classification and
regression, so a comparison between methods differs only in the method.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from readapt.config import POOLINGS


def positions_read(attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Boolean (B, T) mask of the positions a head with this pooling looks at.

    READ runs its side network only there (each token is its own RNN sequence), which is why
    a CLS-pooled head costs one RNN sequence per example instead of one per token.
    """
    mask = attention_mask.bool()
    if pooling in ("mean", "mean_max", "pair", "attention"):
        return mask
    read = torch.zeros_like(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    if pooling == "cls":
        read[:, 0] = True
    elif pooling == "last":
        read[rows, last_token_index(attention_mask)] = True
    else:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    return read


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row; works for right and left padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * positions).argmax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
         segment_ids: Optional[torch.Tensor] = None, query: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T, d) states -> (B, d) by the head's pooling ((B, 4d) for pair pooling). Attention
    pooling weighs the real tokens by a softmax of their dot product with the learned ``query``."""
    if pooling == "mean":
        return _masked_mean(hidden, attention_mask)
    if pooling == "attention":
        # A learned query picks the tokens that matter (a sentiment word, a negation) instead of
        # weighing all alike; a zero query weighs them alike, so the head starts as mean pooling.
        if query is None:
            raise ValueError("attention pooling needs the head's learned query")
        scores = (hidden @ query.to(hidden.dtype)).masked_fill(~attention_mask.bool(), float("-inf"))
        return (scores.softmax(-1).unsqueeze(-1) * hidden).sum(1)
    if pooling == "pair":
        # Sentence-pair features as in InferSent / Sentence-BERT: each text pooled on its own,
        # then compared explicitly, so the head need not learn the comparison from one mean.
        if segment_ids is None:
            raise ValueError("pair pooling needs segment_ids (1 = first text, 2 = second text); "
                             "it works on two-text tasks only")
        # Two layouts: both texts in one row (segments 1 and 2 in every row), or each text its
        # own row (rows 0..B-1 the first texts, B..2B-1 the second: encode(separate_pairs=True)).
        u, v = _masked_mean(hidden, segment_ids == 1), _masked_mean(hidden, segment_ids == 2)
        second = (segment_ids == 2).any(1)
        if not second.all():  # one text per row (pairs encoded separately): row i pairs with row B+i
            u, v = u[~second], v[second]
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    if pooling == "mean_max":
        # The mean sees the whole sentence, the per-feature max its strongest token (a sentiment
        # word, a negation), as InferSent's encoders pool: [mean, max], 2d features.
        real = attention_mask.bool().unsqueeze(-1)
        strongest = hidden.masked_fill(~real, torch.finfo(hidden.dtype).min).max(1).values
        return torch.cat([_masked_mean(hidden, attention_mask), strongest], dim=-1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_token_index(attention_mask)]
    raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def pooled_size(hidden_size: int, pooling: str) -> int:
    return {"pair": 4, "mean_max": 2}.get(pooling, 1) * hidden_size


class ClassificationHead(nn.Module):
    """pool -> dropout -> linear. ``num_labels == 1`` is regression (MSE), else cross-entropy.
    Pair pooling reads 4d features, mean_max 2d; attention pooling learns a d-wide query, zero at
    first (see :func:`pool`)."""

    def __init__(self, hidden_size: int, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.pooling = pooling
        self.num_labels = num_labels
        self.query = nn.Parameter(torch.zeros(hidden_size)) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(pooled_size(hidden_size, pooling), num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                segment_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.classify(pool(hidden, attention_mask, self.pooling, segment_ids, self.query))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits of pooled features (what :func:`pool` returns)."""
        return self.classifier(self.dropout(pooled.to(self.classifier.weight.dtype)))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return F.cross_entropy(logits, labels.long())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy; label -100 is ignored (Hugging Face's convention)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
