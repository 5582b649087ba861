"""The evaluation protocol registry: protocols handed predictors, scored per task; the ``head`` protocol."""
from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcssl import engine
from jaxcssl.data import datasets, splits
from jaxcssl.errors import ConfigError
from jaxcssl.evaluation import protocols

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _scope(on: str = "test") -> protocols.Scope:
    dataset = datasets.load_dataset("synthetic", "synthetic", synthetic=dict(
        num_classes=4, train_per_class=8, test_per_class=6, image_size=4, channels=3, noise=0.1, seed=1))
    split = splits.make_split(dataset, "class_incremental", classes_per_task=(2, 2))
    return protocols.make_scope(dataset, split, (0, 1), on, 4, ((0.5,) * 3, (0.25,) * 3))


@jax.jit
def _mean_colour_logits(images: jax.Array) -> jax.Array:
    """A fixed 'classifier': per-image mean of each channel and of their sum."""
    x = images.astype(jnp.float32).mean(axis=(1, 2))
    return jnp.concatenate([x, x.sum(-1, keepdims=True)], axis=-1)


def test_head_scores_the_logits_as_they_are():
    scope = _scope()
    settings = ml_collections.ConfigDict({"batch_size": 5})  # not a divisor of the 24 queries: padding is dropped
    result = protocols.evaluate(("head",), {"logits": _mean_colour_logits}, scope, settings, jax.random.PRNGKey(0))
    logits = scope.query_images.astype(np.float64).mean(axis=(1, 2))
    predictions = np.argmax(np.concatenate([logits, logits.sum(-1, keepdims=True)], -1), -1)
    labels, class_to_task = scope.query_labels, scope.class_to_task
    report = result["head"]["report"]
    assert report["top1"] == pytest.approx(np.mean(predictions == labels))
    same_task = class_to_task[predictions] == class_to_task[labels]
    assert report["tp"] == pytest.approx(np.mean(same_task))
    assert report["la"] == pytest.approx(report["wp"] * report["tp"])
    for task, positions in zip(scope.tasks, scope.positions):
        assert result["head"]["per_task"][task] == pytest.approx(np.mean(predictions[positions] == labels[positions]))


def test_scope_scores_test_or_train_samples_of_the_tasks():
    test, train = _scope("test"), _scope("train")
    assert len(test.query_labels) == 24 and len(train.query_labels) == 32 == len(train.bank_labels)
    np.testing.assert_array_equal(train.query_images, train.bank_images)
    assert [len(p) for p in test.positions] == [12, 12]


def test_a_protocol_whose_predictor_the_learner_lacks_is_refused_before_training():
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("finetune")
    config.eval.final = ("knn", "head")
    with pytest.raises(ConfigError, match="eval.final protocol 'head' needs a 'logits' predictor"):
        engine.prepare(config)
