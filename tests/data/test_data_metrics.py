"""Metrics match scikit-learn / SciPy, are plain float fractions, and never crash on degenerate input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from readapt.data import DataError, TaskSpec, compute_metrics, task_score

COLA = TaskSpec("glue/cola", ("unacceptable", "acceptable"), ("matthews_correlation",), ("sentence",))
MRPC = TaskSpec("glue/mrpc", ("not_equivalent", "equivalent"), ("f1", "accuracy"), ("sentence1", "sentence2"))
MNLI = TaskSpec("glue/mnli", ("entailment", "neutral", "contradiction"), ("accuracy",), ("premise", "hypothesis"))
STSB = TaskSpec("glue/stsb", None, ("pearson", "spearmanr"), ("sentence1", "sentence2"))


def test_hand_checkable_cases():
    # 4 examples, 3 right; class 1: TP=2, FP=1, FN=0 -> P=2/3, R=1, F1=0.8
    assert compute_metrics(MRPC, [1, 1, 1, 0], [1, 0, 1, 0]) == {"f1": pytest.approx(0.8), "accuracy": 0.75}
    assert compute_metrics(COLA, [0, 1, 1, 0], [0, 1, 1, 0]) == {"matthews_correlation": 1.0}
    assert compute_metrics(COLA, [1, 0, 0, 1], [0, 1, 1, 0]) == {"matthews_correlation": -1.0}
    assert compute_metrics(MNLI, np.array([0, 1, 2]), np.array([0, 2, 2])) == {"accuracy": pytest.approx(2 / 3)}
    result = compute_metrics(STSB, [1.0, 2.0, 4.0], [0.5, 1.0, 2.0])  # exactly linear, monotone
    assert result == {"pearson": pytest.approx(1.0), "spearmanr": pytest.approx(1.0)}


def test_matches_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert compute_metrics(MRPC, pred, gold) == {"f1": pytest.approx(f1_score(gold, pred)),
                                                 "accuracy": pytest.approx(accuracy_score(gold, pred))}
    assert compute_metrics(COLA, pred.tolist(), gold.tolist())["matthews_correlation"] == \
        pytest.approx(matthews_corrcoef(gold, pred))
    y, x = rng.normal(size=100), rng.normal(size=100)
    x = x + y
    result = compute_metrics(STSB, x, y)
    assert result["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert result["spearmanr"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert all(type(v) is float for v in result.values())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=30))
def test_accuracy_is_a_fraction_equal_to_sklearn(pairs):
    pred, gold = zip(*pairs)
    value = compute_metrics(MNLI, list(pred), list(gold))["accuracy"]
    assert type(value) is float and 0.0 <= value <= 1.0 and value == pytest.approx(accuracy_score(gold, pred))


def test_degenerate_inputs_score_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_metrics(STSB, [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == {"pearson": 0.0, "spearmanr": 0.0}
        assert compute_metrics(STSB, [1.0, 2.0], [3.0, 3.0]) == {"pearson": 0.0, "spearmanr": 0.0}
        assert compute_metrics(STSB, [1.0], [3.0]) == {"pearson": 0.0, "spearmanr": 0.0}
        assert compute_metrics(STSB, [1.0, np.nan, 2.0], [1.0, 2.0, 3.0])["pearson"] == 0.0
        assert compute_metrics(COLA, [1, 1, 1], [0, 1, 1]) == {"matthews_correlation": 0.0}
        assert compute_metrics(MRPC, [0, 0], [0, 0]) == {"f1": 0.0, "accuracy": 1.0}
        # -1 = generated text that names no class: wrong, not a crash
        assert compute_metrics(MRPC, [-1, 1, 0], [1, 1, 0]) == {"f1": pytest.approx(2 / 3),
                                                                "accuracy": pytest.approx(2 / 3)}


def test_shape_errors():
    with pytest.raises(DataError, match="one prediction per example"):
        compute_metrics(MRPC, [1, 0], [1, 0, 1])
    with pytest.raises(DataError, match="one prediction per example"):
        compute_metrics(MRPC, [[1, 0]], [[1, 0]])
    with pytest.raises(DataError, match="zero examples"):
        compute_metrics(MRPC, [], [])


def test_task_score_is_glue_mean():
    assert task_score(MRPC, {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert task_score(STSB, {"pearson": 0.5, "spearmanr": 0.7, "extra": 99.0}) == pytest.approx(0.6)
    assert task_score(COLA, compute_metrics(COLA, [0, 1], [0, 1])) == 1.0
    with pytest.raises(DataError, match="lack f1"):
        task_score(MRPC, {"accuracy": 0.8})


def test_majority_baseline_answers_the_most_frequent_training_label():
    from readapt.data import majority_baseline

    rte = TaskSpec("glue/rte", ("entailment", "not_entailment"), ("accuracy",), ("sentence1", "sentence2"))
    assert majority_baseline(rte, [1, 1, 0], [1, 0, 0, 1]) == {"accuracy": 0.5}
    assert majority_baseline(rte, [0, 0, 1], [0, 0, 0, 1]) == {"accuracy": 0.75}
    stsb = TaskSpec("glue/stsb", None, ("pearson", "spearmanr"), ("sentence1", "sentence2"))
    assert majority_baseline(stsb, [1.0, 3.0], [0.5, 4.0, 2.0]) == {"pearson": 0.0, "spearmanr": 0.0}
