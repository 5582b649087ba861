"""Classification metrics, including the task-aware decomposition LA = WP x TP of CroMo-Mixup.

All accuracies are fractions in [0, 1]. Class ids of a task need not be contiguous: the mapping
from class to task is an explicit int array `class_to_task[num_classes]` (-1: class in no task).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_to_task_map(task_classes: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """int32 [num_classes] array mapping each class id to the index of the task that holds it.

    Classes that belong to no task map to -1. Raises if a class id is out of range or repeated.
    """
    mapping = np.full((num_classes,), -1, np.int32)
    for task, classes in enumerate(task_classes):
        for c in classes:
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"class_to_task_map: class {c} of task {task} is outside [0, {num_classes})")
            if mapping[c] != -1:
                raise ValueError(f"class_to_task_map: class {c} is in both task {mapping[c]} and task {task}")
            mapping[c] = task
    return mapping


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """P(prediction = label)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"accuracy: predictions {predictions.shape} and labels {labels.shape} differ in shape")
    return float(np.mean(predictions == labels)) if labels.size else float("nan")


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """P(label is among the k highest logits); k is clamped to the number of classes."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"topk_accuracy: logits {logits.shape} do not match labels {labels.shape}")
    k = min(int(k), logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def task_aware_accuracy(predictions: np.ndarray, labels: np.ndarray,
                        class_to_task: np.ndarray) -> dict[str, float | None]:
    """Linear accuracy (LA), within-task prediction (WP) and task-id prediction (TP).

    CroMo-Mixup Sec. 2.2 (after Kim et al. 2022), for a sample x of class y in task t(y) and a
    classifier over all classes predicting p:
      LA = P(p = y),   TP = P(t(p) = t(y)),   WP = P(p = y | t(p) = t(y)) = LA / TP,
    so LA = WP x TP. When no sample has its task predicted correctly (TP = 0), WP is defined as 0.
    A data-incremental split (every task holds every class: ``class_to_task`` all -1) has no task of
    a class, so WP and TP are ``None`` there.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    class_to_task = np.asarray(class_to_task)
    if predictions.shape != labels.shape:
        raise ValueError(f"task_aware_accuracy: predictions {predictions.shape} and labels {labels.shape} "
                         "differ in shape")
    if labels.size == 0:
        raise ValueError("task_aware_accuracy: no samples")
    num_classes = class_to_task.shape[0]
    for name, ids in (("labels", labels), ("predictions", predictions)):
        if ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(f"task_aware_accuracy: {name} must lie in [0, {num_classes}) (size of "
                             f"class_to_task), got [{ids.min()}, {ids.max()}]")
    class_correct = predictions == labels
    if np.all(class_to_task < 0):
        return {"la": float(np.mean(class_correct)), "wp": None, "tp": None}
    true_task = class_to_task[labels]
    if np.any(true_task < 0):
        raise ValueError(f"task_aware_accuracy: label {labels[true_task < 0][0]} belongs to no task in class_to_task")
    task_correct = class_to_task[predictions] == true_task
    la, tp = float(np.mean(class_correct)), float(np.mean(task_correct))
    wp = float(np.sum(class_correct) / np.sum(task_correct)) if np.any(task_correct) else 0.0
    return {"la": la, "wp": wp, "tp": tp}


def per_task_accuracy(predictions: np.ndarray, labels: np.ndarray, task_of_sample: np.ndarray,
                      num_tasks: int) -> np.ndarray:
    """float64 [num_tasks]: accuracy on the samples of each task (NaN for a task with no sample).

    `task_of_sample` is usually `class_to_task[labels]`: with one classifier (or kNN bank) over all
    classes this is the class-incremental accuracy restricted to task i's test samples.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    task_of_sample = np.asarray(task_of_sample)
    if not predictions.shape == labels.shape == task_of_sample.shape:
        raise ValueError(f"per_task_accuracy: predictions {predictions.shape}, labels {labels.shape} and "
                         f"task_of_sample {task_of_sample.shape} must have one shape")
    if task_of_sample.size and (task_of_sample.min() < 0 or task_of_sample.max() >= num_tasks):
        raise ValueError(f"per_task_accuracy: task_of_sample must lie in [0, {num_tasks}), got "
                         f"[{task_of_sample.min()}, {task_of_sample.max()}]")
    correct = np.bincount(task_of_sample, weights=predictions == labels, minlength=num_tasks)
    counts = np.bincount(task_of_sample, minlength=num_tasks)
    return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
