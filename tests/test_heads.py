"""Task heads: pooling (incl. pair pooling for two-text inputs) and the positions they read."""

import pytest
import torch

from readapt.heads import ClassificationHead, pool, positions_read


def test_pair_pooling_compares_the_two_texts_means():
    hidden = torch.arange(2 * 6 * 3, dtype=torch.float).reshape(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    segments = torch.tensor([[0, 1, 1, 0, 2, 0], [0, 1, 0, 2, 2, 0]])  # 0 = special tokens, padding
    pooled = pool(hidden, mask, "pair", segments)
    u = torch.stack([hidden[0, 1:3].mean(0), hidden[1, 1]])
    v = torch.stack([hidden[0, 4], hidden[1, 3:5].mean(0)])
    torch.testing.assert_close(pooled, torch.cat([u, v, (u - v).abs(), u * v], -1))


def test_pair_pooling_needs_segments_and_reads_every_real_token():
    with pytest.raises(ValueError, match="segment_ids"):
        pool(torch.randn(1, 3, 4), torch.ones(1, 3), "pair")
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(positions_read(mask, "pair"), mask.bool())


def test_pair_head_reads_four_times_the_width():
    head = ClassificationHead(8, 3, pooling="pair")
    assert head.classifier.in_features == 32
    logits = head(torch.randn(2, 4, 8), torch.ones(2, 4), torch.tensor([[0, 1, 2, 0], [0, 1, 2, 2]]))
    assert logits.shape == (2, 3)


def test_mean_max_pooling_reads_the_mean_and_the_strongest_real_token():
    hidden = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]]])  # the last position is padding
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pool(hidden, mask, "mean_max"), torch.tensor([[2.0, -3.0, 3.0, -2.0]]))
    assert torch.equal(positions_read(mask, "mean_max"), mask.bool())  # READ corrects every real token
    head = ClassificationHead(8, 2, pooling="mean_max")
    assert head.classifier.in_features == 16 and head(torch.randn(2, 4, 8), torch.ones(2, 4)).shape == (2, 2)


def test_attention_pooling_starts_as_the_mean_and_learns_which_tokens_count():
    hidden = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [100.0, 100.0]]])  # the last position is padding
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(positions_read(mask, "attention"), mask.bool())  # READ corrects every real token
    head = ClassificationHead(2, 2, pooling="attention")
    torch.testing.assert_close(pool(hidden, mask, "attention", query=head.query), pool(hidden, mask, "mean"))
    with torch.no_grad():
        head.query.copy_(torch.tensor([10.0, 0.0]))  # favours the first feature: the second token (3.0)
    weights = torch.tensor([1.0, 3.0]).mul(10).softmax(0)
    torch.testing.assert_close(pool(hidden, mask, "attention", query=head.query),
                               (weights[:, None] * hidden[0, :2]).sum(0, keepdim=True))
    assert head(torch.randn(2, 4, 2), torch.ones(2, 4)).shape == (2, 2)
    head.query.grad = None
    head(hidden, mask).sum().backward()
    assert head.query.grad is not None and head.query.grad.abs().sum() > 0  # the query trains
    with pytest.raises(ValueError, match="learned query"):
        pool(hidden, mask, "attention")
