"""Training READ in parts of the batch: the same loss and gradients as the whole batch, one frozen
pass, and at most a part's activations alive at a time."""

import pytest
import torch

from tiny_models import tiny_bert, tiny_gpt2, tiny_t5
from readapt import ReadConfig, get_read_model, microbatch
from readapt.measure import TensorMemoryTracker
from readapt.model import SIDE_PART_TOKENS


def _pairs_batch():
    """Three pairs encoded separately, as model_inputs stacks them: first texts in rows 0-2, second
    texts in rows 3-5, ``segment_ids`` 1 / 2 on real tokens."""
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    segment_ids = mask * torch.tensor([[1]] * 3 + [[2]] * 3)
    return {"input_ids": torch.randint(2, 100, mask.shape), "attention_mask": mask,
            "segment_ids": segment_ids, "labels": torch.tensor([1, 0, 1])}


CASES = {
    # name: (backbone, config, batch); every batch has more side tokens than the part size used (6)
    "single": (tiny_bert, dict(num_labels=2),
               lambda: {"input_ids": torch.randint(2, 100, (4, 6)), "labels": torch.tensor([1, 0, 0, 1]),
                        "attention_mask": torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0], [1] * 2 + [0] * 4])}),
    "regression": (tiny_bert, dict(num_labels=1),
                   lambda: {"input_ids": torch.randint(2, 100, (4, 5)), "attention_mask": torch.ones(4, 5, dtype=torch.long),
                            "labels": torch.tensor([0.5, 2.0, 4.5, 1.0])}),
    "separate-pairs": (tiny_bert, dict(num_labels=2, pooling="pair"), _pairs_batch),
    # example 1 has no target token at all: its part adds nothing and is skipped
    "causal-lm": (tiny_gpt2, dict(task_type="CAUSAL_LM"),
                  lambda: {"input_ids": torch.randint(2, 100, (3, 6)), "attention_mask": torch.ones(3, 6, dtype=torch.long),
                           "labels": torch.tensor([[-100, -100, 5, 6, 7, 8], [-100] * 6, [-100, 9, 9, 9, -100, -100]])}),
    "seq2seq-lm": (tiny_t5, dict(task_type="SEQ_2_SEQ_LM"),
                   lambda: {"input_ids": torch.randint(2, 100, (3, 4)), "attention_mask": torch.ones(3, 4, dtype=torch.long),
                            "labels": torch.tensor([[5, 6, -100], [7, 8, 9], [4, -100, -100]])}),
}


def _model(make, config):
    torch.manual_seed(1)
    model = get_read_model(make(), ReadConfig(rnn_dim=8, **config)).train()
    torch.nn.init.normal_(model.side.out.weight, std=0.1)  # a trained-looking correction: real gradients everywhere
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("name", CASES)
def test_parts_give_the_whole_batch_loss_and_gradients(name):
    make, config, make_batch = CASES[name]
    torch.manual_seed(0)
    batch = make_batch()
    whole = _model(make, config).set_side_chunk_tokens(None)
    torch.manual_seed(2)  # the head's dropout: parts keep the batch's order, so they draw the same masks
    loss = whole(**batch).loss
    loss.backward()

    in_parts = _model(make, config).set_side_chunk_tokens(6)
    parts = list(microbatch.parts(in_parts, batch))
    assert len(parts) >= 2 and sum(weight for _, weight in parts) == pytest.approx(1.0)
    torch.manual_seed(2)
    parts_loss = microbatch.backward(in_parts, batch)

    torch.testing.assert_close(parts_loss, loss.detach())
    expected = _grads(whole)
    got = _grads(in_parts)
    assert got.keys() == expected.keys()
    for key, grad in expected.items():
        torch.testing.assert_close(got[key], grad, rtol=1e-4, atol=1e-6, msg=key)


def test_parts_hold_whole_examples_within_the_budget_and_the_frozen_pass_runs_once():
    model = _model(tiny_bert, dict(num_labels=2))
    model.set_side_chunk_tokens(6)
    calls = []
    run = model.runner.run
    model.runner.run = lambda **kw: calls.append(1) or run(**kw)
    # 6 tokens | 3 + 2 | 7 (above the budget: a part of its own)
    mask = torch.tensor([[1] * 6 + [0], [1] * 3 + [0] * 4, [1] * 2 + [0] * 5, [1] * 7])
    batch = {"input_ids": torch.randint(2, 100, mask.shape), "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}
    parts = list(microbatch.parts(model, batch))
    assert calls == [1]
    assert [part["labels"].tolist() for part, _ in parts] == [[0], [1, 1], [0]]
    assert [weight for _, weight in parts] == [0.25, 0.5, 0.25]
    assert all("input_ids" not in part for part, _ in parts)  # the parts read the states, not the tokens


def test_a_batch_within_the_budget_and_other_methods_are_one_part():
    model = _model(tiny_bert, dict(num_labels=2))
    batch = CASES["single"][2]()
    assert model.side_chunk_tokens == SIDE_PART_TOKENS == 256
    (part, weight), = microbatch.parts(model, batch)    # 16 tokens, within the default budget
    assert weight == 1.0 and part["states"].attention_mask.shape == (4, 6)
    model.set_side_chunk_tokens(None)
    assert list(microbatch.parts(model, batch)) == [(batch, 1.0)]
    backbone = tiny_bert()
    assert list(microbatch.parts(backbone, batch)) == [(batch, 1.0)]


def test_parts_keep_only_one_parts_side_activations():
    """The side network's activations of a 16-example batch are live one part at a time: the step's
    tensor peak is far under the whole batch's."""
    model = _model(tiny_bert, dict(num_labels=2))
    batch = {"input_ids": torch.randint(2, 100, (16, 32)), "attention_mask": torch.ones(16, 32, dtype=torch.long),
             "labels": torch.randint(0, 2, (16,))}
    states = model.backbone_states(**batch)
    given = {"states": states, "labels": batch["labels"]}
    peaks = {}
    for chunk in (None, 64):
        model.set_side_chunk_tokens(chunk)
        with TensorMemoryTracker() as tracker:
            microbatch.backward(model, given)
        peaks[chunk] = tracker.peak_bytes
        model.zero_grad(set_to_none=True)
    assert peaks[64] < 0.5 * peaks[None]


def test_on_a_gpu_the_batch_stays_whole_unless_asked():
    """split="auto" splits CPU batches only (a GPU's launch-bound side network pays more for parts
    than for the checkpoint's recompute); a device other than the CPU is stood in for by 'meta'."""
    model = _model(tiny_bert, dict(num_labels=2)).set_side_chunk_tokens(6)
    batch = {"input_ids": torch.zeros(4, 6, dtype=torch.long, device="meta"),
             "attention_mask": torch.ones(4, 6, dtype=torch.long, device="meta"),
             "labels": torch.zeros(4, dtype=torch.long, device="meta")}
    assert list(microbatch.parts(model, batch)) == [(batch, 1.0)]
    with pytest.raises(ValueError, match="split='sometimes': choose one of auto, always"):
        list(microbatch.parts(model, CASES["single"][2](), split="sometimes"))


def test_parts_drop_the_layers_nothing_reads():
    model = get_read_model(tiny_bert(layers=4), ReadConfig(rnn_dim=8, num_labels=2, layer_stride=2))
    batch = CASES["single"][2]()
    (part, _), = microbatch.parts(model, batch)
    assert [h is not None for h in part["states"].hidden_states] == [False, False, True, False, True]
    t5 = get_read_model(tiny_t5(), ReadConfig(task_type="SEQ_2_SEQ_LM", rnn_dim=8, layer_stride=2))
    states = t5.states_read(t5.backbone_states(**CASES["seq2seq-lm"][2]()))
    assert (t5.encoder_layers, t5.layers) == ([2], [1, 3])
    assert [h is not None for h in states.hidden_states] == [True, True, False, True]       # phi_0 shapes layer 0's term
    assert [h is not None for h in states.encoder_hidden_states] == [False, False, True]
    assert [a is not None for a in states.cross_attentions] == [True, False, True]          # of decoder layers 1 and 3
