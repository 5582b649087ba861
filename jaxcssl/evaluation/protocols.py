"""Evaluation protocols found by name, handed predict functions and data, never the model.

A protocol (``knn``, ``linear_fast``, ``linear``) scores a :class:`Scope` — the training samples of
the tasks seen so far (the kNN bank / probe training set) and the samples that are scored (their
test data, or their training data for the task-confusion study) — with the functions a learner
supplies (:meth:`jaxcssl.learners.base.Learner.predictors`): ``"features"`` (uint8 images -> frozen
features), ``"backbone"`` (normalised float images -> features, for the augmented probe) and, for a
model with a classifier, ``"logits"`` (uint8 images -> class logits, scored as they are by ``head``).
:func:`evaluate` runs several and returns, per protocol, its report (top-1, LA/WP/TP, ...) and the
accuracy on each task. Adding a protocol is a :class:`Protocol` subclass plus one registry line.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np
from absl import logging

from jaxcssl.data.augment import augment, linear_probe_view, preprocess
from jaxcssl.evaluation.features import extract_features
from jaxcssl.evaluation.knn import knn_predict
from jaxcssl.evaluation.linear_probe import fast_linear_probe, linear_probe, probe_report
from jaxcssl.evaluation.metrics import accuracy, task_aware_accuracy
from jaxcssl.registry import Registry


@dataclasses.dataclass
class Scope:
    """What one evaluation scores. ``positions[j]`` index the query rows of ``tasks[j]``."""

    bank_images: np.ndarray  # uint8 [M, H, W, C]: training samples of the scored tasks
    bank_labels: np.ndarray
    query_images: np.ndarray  # uint8 [Q, H, W, C]: the scored samples
    query_labels: np.ndarray
    positions: list[np.ndarray]
    tasks: tuple[int, ...]
    class_to_task: np.ndarray  # int [num_classes]
    num_classes: int
    image_size: int  # the model's input size
    stats: tuple[tuple[float, ...], tuple[float, ...]]  # normalisation mean, std
    _features: dict = dataclasses.field(default_factory=dict, repr=False)

    def features(self, embed: Callable, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Bank and query features, computed once per scope and shared by the protocols."""
        if "bank" not in self._features:
            self._features["bank"] = extract_features(embed, self.bank_images, batch_size)
            self._features["query"] = extract_features(embed, self.query_images, batch_size)
        return self._features["bank"], self._features["query"]


def make_scope(dataset, split, tasks: Sequence[int], on: str, image_size: int, stats) -> Scope:
    """The scope of ``tasks``: their training samples as the bank, their ``on`` split ("test" or
    "train") as the queries."""
    tasks = tuple(tasks)
    bank_index = np.concatenate([np.asarray(split.train_indices[i]) for i in tasks])
    if on == "train":
        images, labels, task_index = dataset.x_train, dataset.y_train, split.train_indices
    else:
        images, labels, task_index = dataset.x_test, dataset.y_test, split.test_indices
    scored = [np.asarray(task_index[i]) for i in tasks]
    positions, start = [], 0
    for index in scored:
        positions.append(np.arange(start, start + len(index)))
        start += len(index)
    query_index = np.concatenate(scored)
    return Scope(
        bank_images=dataset.x_train[bank_index], bank_labels=dataset.y_train[bank_index],
        query_images=images[query_index], query_labels=labels[query_index], positions=positions, tasks=tasks,
        class_to_task=np.asarray(split.class_to_task), num_classes=dataset.num_classes, image_size=image_size,
        stats=stats,
    )


class Protocol(abc.ABC):
    """One way of scoring frozen predictors on a scope.

    Attributes:
      name: registry name (``config.eval.after_task`` / ``config.eval.final`` entries).
      SETTINGS: the ``config.eval`` keys it reads (recorded beside its numbers by re-evaluation).
      KEY: folded into the evaluation key, so protocols draw independent randomness.
      NEEDS: the predictor it uses (``features``, ``backbone`` or ``logits``), checked before training.
    """

    name: ClassVar[str] = ""
    SETTINGS: ClassVar[tuple[str, ...]] = ()
    KEY: ClassVar[int] = 0
    NEEDS: ClassVar[str] = "features"  # the predictor it is handed

    @abc.abstractmethod
    def run(self, predictors: Mapping[str, Callable], scope: Scope, settings: Any,
            key: jax.Array) -> tuple[dict[str, float], np.ndarray]:
        """``(report, predicted class per query)``; the report has ``top1`` and LA/WP/TP."""


class KNN(Protocol):
    """k = 200, vote weights exp(sim/0.5), cosine on L2-normalised bank and query features."""

    name = "knn"
    SETTINGS = ("knn_k", "knn_temperature")

    def run(self, predictors, scope, settings, key):
        bank, queries = scope.features(predictors["features"], settings.batch_size)
        predictions = knn_predict(bank, scope.bank_labels, queries, scope.num_classes, k=settings.knn_k,
                                  temperature=settings.knn_temperature)
        report = {"top1": accuracy(predictions, scope.query_labels),
                  **task_aware_accuracy(predictions, scope.query_labels, scope.class_to_task)}
        return report, predictions


class FastLinear(Protocol):
    """A linear probe on features computed once (no augmentation), one jitted scan (seconds)."""

    name = "linear_fast"
    SETTINGS = ("fast_linear_epochs", "fast_linear_lr")
    KEY = 1

    def run(self, predictors, scope, settings, key):
        bank, queries = scope.features(predictors["features"], settings.batch_size)
        logits = fast_linear_probe(bank, scope.bank_labels, queries, scope.num_classes,
                                   epochs=settings.fast_linear_epochs, lr=settings.fast_linear_lr, key=key)
        return probe_report(logits, scope.query_labels, scope.class_to_task), np.argmax(logits, -1)


class Linear(Protocol):
    """The paper's probe: 200 epochs of SGD on augmented images through the frozen backbone."""

    name = "linear"
    SETTINGS = ("linear_epochs", "linear_lr", "linear_final_lr", "linear_batch_size")
    KEY = 2
    NEEDS = "backbone"

    def run(self, predictors, scope, settings, key):
        mean, std = scope.stats
        view = linear_probe_view(scope.image_size, mean, std)
        epochs = settings.linear_epochs

        def log_epoch(epoch: int, metrics: dict) -> None:
            if epoch % max(1, epochs // 10) == 0 or epoch == epochs:
                logging.info("linear probe epoch %d/%d: loss %.4f train top-1 %.2f%% lr %.4g", epoch, epochs,
                             metrics["loss"], 100 * metrics["train_top1"], metrics["lr"])

        probe = linear_probe(
            predictors["backbone"], lambda k, x: augment(k, x, view),
            functools.partial(preprocess, out_size=scope.image_size, mean=mean, std=std),
            scope.bank_images, scope.bank_labels, scope.query_images, scope.query_labels, scope.num_classes,
            epochs=epochs, batch_size=settings.linear_batch_size, lr=settings.linear_lr,
            final_lr=settings.linear_final_lr, key=key, log_fn=log_epoch, eval_batch_size=settings.batch_size,
        )
        report = probe_report(probe["logits"], scope.query_labels, scope.class_to_task)
        return report, np.asarray(probe["predictions"])


class Head(Protocol):
    """The model's own classifier as it is (no probe): argmax over all classes of its logits."""

    name = "head"
    NEEDS = "logits"

    def run(self, predictors, scope, settings, key):
        logits = extract_features(predictors["logits"], scope.query_images, settings.batch_size)
        return probe_report(logits, scope.query_labels, scope.class_to_task), np.argmax(logits, -1)


REGISTRY: Registry[type[Protocol]] = Registry("eval protocol")
for _protocol in (KNN, FastLinear, Linear, Head):
    REGISTRY.register(_protocol.name, _protocol)


def evaluate(protocols: Sequence[str], predictors: Mapping[str, Callable], scope: Scope, settings: Any,
             key: jax.Array) -> dict[str, dict[str, Any]]:
    """Run ``protocols`` on ``scope``: per protocol ``{"report": ..., "per_task": {task: accuracy}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name in protocols:
        protocol = REGISTRY.get(name)()
        protocol_key = jax.random.fold_in(key, protocol.KEY) if protocol.KEY else key
        report, predictions = protocol.run(predictors, scope, settings, protocol_key)
        labels = scope.query_labels
        per_task = {t: float(np.mean(predictions[p] == labels[p])) for t, p in zip(scope.tasks, scope.positions)}
        out[name] = {"report": report, "per_task": per_task}
    return out


def settings_of(name: str, settings: Any) -> dict[str, Any]:
    """The ``config.eval`` values protocol ``name`` depends on."""
    return {k: settings[k] for k in REGISTRY.get(name).SETTINGS}


__all__ = ["REGISTRY", "FastLinear", "Head", "KNN", "Linear", "Protocol", "Scope", "evaluate", "make_scope",
           "settings_of"]
