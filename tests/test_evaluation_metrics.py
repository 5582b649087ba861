"""Task-aware metrics (LA / WP / TP), top-k, per-task accuracy and the continual metrics, on hand-computed cases."""
import math

import numpy as np
import pytest

from jaxcssl.evaluation import continual
from jaxcssl.evaluation.metrics import (
    accuracy,
    class_to_task_map,
    per_task_accuracy,
    task_aware_accuracy,
    topk_accuracy,
)
from jaxcssl.evaluation.splits import evaluation_arrays

# Six classes in three tasks, deliberately not contiguous: task 0 = {1, 3}, task 1 = {0, 4}, task 2 = {2, 5}.
CLASS_TO_TASK = np.array([1, 0, 2, 0, 1, 2])
LABELS = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
PREDICTIONS = np.array([0, 3, 2, 1, 1, 0, 4, 5, 2, 3])
# class correct: samples 0, 2, 8, 9 -> LA = 4/10.
# task correct: 0 (1=1), 1 (0=0), 2, 3 (0=0), 6 (pred 4 -> task 1 = label 0 -> task 1), 8, 9 -> TP = 7/10.
# WP = 4/7. A contiguous split (class // 2) would give TP = 4/10 instead.


def test_task_aware_hand_built_case():
    result = task_aware_accuracy(PREDICTIONS, LABELS, CLASS_TO_TASK)
    assert result == pytest.approx({"la": 0.4, "wp": 4 / 7, "tp": 0.7}, abs=1e-12)
    assert result["la"] == pytest.approx(result["wp"] * result["tp"], abs=1e-12)
    contiguous = task_aware_accuracy(PREDICTIONS, LABELS, np.arange(6) // 2)
    assert contiguous["tp"] == pytest.approx(0.4)


def test_task_aware_la_equals_wp_times_tp_random():
    rng = np.random.default_rng(0)
    class_to_task = rng.permutation(np.repeat(np.arange(5), 4))  # 20 classes, 5 tasks, shuffled
    labels = rng.integers(0, 20, 1000)
    predictions = np.where(rng.random(1000) < 0.5, labels, rng.integers(0, 20, 1000))
    result = task_aware_accuracy(predictions, labels, class_to_task)
    assert result["la"] == pytest.approx(result["wp"] * result["tp"], rel=1e-12)
    assert result["la"] == pytest.approx(accuracy(predictions, labels))
    assert result["tp"] == pytest.approx(np.mean(class_to_task[predictions] == class_to_task[labels]))


def test_task_aware_edge_cases():
    # No sample has its task right: WP is defined as 0 so that LA = WP x TP still holds.
    assert task_aware_accuracy(np.array([1, 0]), np.array([0, 1]), np.array([0, 1])) == {"la": 0.0, "wp": 0.0, "tp": 0.0}
    with pytest.raises(ValueError, match="label 2 belongs to no task"):
        task_aware_accuracy(np.array([0, 2]), np.array([0, 2]), np.array([0, 0, -1]))
    with pytest.raises(ValueError, match="predictions must lie in"):
        task_aware_accuracy(np.array([0, 7]), np.array([0, 1]), np.array([0, 1]))


def test_task_aware_on_a_data_incremental_split_is_la_only():
    """Every task holds every class: no task of a class, so no WP or TP (and no error)."""
    predictions, labels = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    assert task_aware_accuracy(predictions, labels, np.full(3, -1)) == {"la": 0.75, "wp": None, "tp": None}
    with pytest.raises(ValueError, match="label 1 belongs to no task"):  # a class split missing a class
        task_aware_accuracy(predictions, labels, np.array([0, -1, 1]))


def test_class_to_task_map():
    mapping = class_to_task_map([[3, 1], [0, 4]], num_classes=6)
    np.testing.assert_array_equal(mapping, [1, 0, -1, 0, 1, -1])
    with pytest.raises(ValueError, match="class 1 is in both task 0 and task 1"):
        class_to_task_map([[1], [1]], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        class_to_task_map([[5]], num_classes=3)


def test_topk_accuracy_against_argsort():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 10))
    labels = rng.integers(0, 10, 200)
    for k in (1, 3, 5):
        expected = np.mean([labels[n] in np.argsort(-logits[n])[:k] for n in range(200)])
        assert topk_accuracy(logits, labels, k) == pytest.approx(expected)
    assert topk_accuracy(logits[:, :4], labels % 4, 5) == 1.0  # k clamped to the number of classes


def test_per_task_accuracy():
    result = per_task_accuracy(PREDICTIONS, LABELS, CLASS_TO_TASK[LABELS], num_tasks=4)
    # task 0 samples: 1, 3, 7, 9 -> correct 9 -> 1/4; task 1: 0, 4, 6 -> correct 0 -> 1/3; task 2: 2, 5, 8 -> 2/3.
    np.testing.assert_allclose(result[:3], [1 / 4, 1 / 3, 2 / 3])
    assert math.isnan(result[3])  # a task with no sample


def test_evaluation_arrays():
    train, test = (np.zeros(3), np.ones(3)), (np.zeros(2), np.ones(2))
    assert evaluation_arrays(train, test) is test
    assert evaluation_arrays(train, test, on="train") is train
    with pytest.raises(ValueError, match="'val'"):
        evaluation_arrays(train, test, on="val")


NAN = float("nan")
# After task t (row), accuracy on task i (column); the maximum on task 0 is reached after task 1, not on the diagonal.
A = np.array([[0.80, NAN, NAN],
              [0.85, 0.90, NAN],
              [0.50, 0.70, 0.95]])


def test_continual_metrics_hand_computed():
    assert continual.average_accuracy(A) == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert continual.final_accuracy(A) == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    assert continual.final_accuracy(A, weights=[1, 1, 2]) == pytest.approx((0.50 + 0.70 + 2 * 0.95) / 4)
    # forgetting: task 0: max(0.80, 0.85) - 0.50 = 0.35; task 1: 0.90 - 0.70 = 0.20.
    assert continual.average_forgetting(A) == pytest.approx(0.275)
    # BWT: ((0.50 - 0.80) + (0.70 - 0.90)) / 2.
    assert continual.backward_transfer(A) == pytest.approx(-0.25)
    # continual accuracy: steps 0.80, (0.85 + 0.90) / 2, (0.50 + 0.70 + 0.95) / 3.
    assert continual.continual_accuracy(A) == pytest.approx((0.80 + 0.875 + 2.15 / 3) / 3)
    assert continual.continual_accuracy(A, weights=[1, 3, 1]) == pytest.approx(
        (0.80 + (0.85 + 3 * 0.90) / 4 + (0.50 + 3 * 0.70 + 0.95) / 5) / 3)
    # forward transfer against models trained on each task alone, tasks 1..T-1.
    assert continual.forward_transfer(A, [0.80, 0.85, 0.90]) == pytest.approx(((0.90 - 0.85) + (0.95 - 0.90)) / 2)
    summary = continual.continual_summary(A)
    assert set(summary) == {"average_accuracy", "final_accuracy", "forgetting", "backward_transfer",
                            "continual_accuracy"}


def test_continual_metrics_single_task_and_errors():
    one = np.array([[0.7]])
    assert continual.average_accuracy(one) == pytest.approx(0.7)
    assert continual.continual_accuracy(one) == pytest.approx(0.7)
    assert math.isnan(continual.average_forgetting(one)) and math.isnan(continual.backward_transfer(one))
    with pytest.raises(ValueError, match=r"A\[2\]\[1\]"):
        continual.average_accuracy([[0.8, None, None], [0.6, 0.9, None], [0.5, None, 0.9]])
    with pytest.raises(ValueError, match="square"):
        continual.average_accuracy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        continual.forward_transfer(A, [0.8, 0.9])
    with pytest.raises(ValueError, match="one per task"):
        continual.final_accuracy(A, weights=[1, 1])
