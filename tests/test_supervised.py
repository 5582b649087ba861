"""ssl.method=supervised: its cross-entropy against NumPy, its classifier, the strategies it refuses,
the DIL-minibatch rows, and an end-to-end CLI run that must beat chance."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import smoke_config

from jaxcssl import engine
from jaxcssl.errors import ConfigError
from jaxcssl.methods import build_method, method_defaults, ssl_views
from jaxcssl.methods.supervised import cross_entropy
from jaxcssl.models import resnet18
from jaxcssl.strategies.base import Batch, Context, ModelState, Strategy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of ``logsumexp(l) - l_y`` over the samples with ``y >= 0``, float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    kept = labels >= 0
    return float(np.mean(log_z[kept] - logits[kept, labels[kept]]))


def test_cross_entropy_matches_numpy_and_skips_withheld_labels():
    logits = np.asarray(jax.random.normal(jax.random.key(0), (12, 7))) * 3.0
    labels = np.array([0, 6, 3, 3, -1, 2, 5, 1, -1, 0, 4, 6])
    np.testing.assert_allclose(float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels))),
                               _np_cross_entropy(logits, labels), rtol=1e-6)
    assert float(cross_entropy(jnp.asarray(logits), jnp.full((12,), -1))) == 0.0  # nothing labelled


def test_the_plain_loss_is_the_cross_entropy_of_view_one_and_the_labels():
    """The learner's path: Strategy.first_task_loss -> ssl_only with the batch's labels; the classifier
    is a Linear to the dataset's classes whatever head_scale."""
    method = build_method("supervised", dataset="cifar10", backbone=resnet18(width=8), head_scale=1 / 64,
                          num_classes=6)
    assert method.model.projector.out_dim == 6 and method.model.projector.hidden_dims == ()
    variables = method.init_variables(jax.random.key(0), (16, 16, 3))
    params, stats = {"model": variables["params"]}, {"model": variables["batch_stats"]}
    view1 = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
    labels = jnp.array([0, 1, 2, 3, 4, 5, 0, -1])
    state = ModelState(batch_stats=stats, loss_state={"ssl": {}, "distill": {}, "mixup": {}}, target=None)
    batch = Batch(view1=view1, view2=view1[::-1] * 0.0, labels=labels)  # view 2 must not matter
    ctx = Context(old=None, strategy_state={}, key=jax.random.key(2))
    loss, (metrics, new_state) = Strategy().first_task_loss(method, params, state, batch, ctx)
    logits, _ = method.embed(variables["params"], variables["batch_stats"], view1)
    np.testing.assert_allclose(float(loss), _np_cross_entropy(np.asarray(logits.projection), np.asarray(labels)),
                               rtol=1e-5)
    assert set(metrics) == {"ce"}
    moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), new_state.batch_stats, stats)
    assert any(jax.tree_util.tree_leaves(moved))  # train mode: the batch statistics move


def test_recipe_and_augmentation():
    d = method_defaults("supervised", "cifar100")
    assert (d["optimizer"], d["base_lr"], d["batch_size"], d["weight_decay"]) == ("sgd", 0.075, 128, 5e-4)  # Table 7
    assert method_defaults("supervised", "cifar10")["num_classes"] == 10
    views = ssl_views("supervised", 32)
    assert views[0].crop_scale == (0.08, 1.0) and views[0].flip_p == 0.5
    assert views[0].jitter_p == views[0].grayscale_p == views[0].blur_p == views[0].solarize_p == 0.0


@pytest.mark.parametrize("strategy", ["cassle", "cromo", "er", "ewc"])
def test_strategies_with_their_own_loss_terms_are_refused(strategy, tmp_path):
    config = smoke_config(f"{strategy},supervised")
    with pytest.raises(ConfigError, match=f"strategy.name='{strategy}' has loss terms of its own"):
        engine.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_dil_minibatch_rows_mix_every_task():
    tasks = [np.arange(0, 30), np.arange(30, 60), np.arange(60, 90)]
    (trained, rows), = Strategy().phases(tasks, "interleaved_data")
    assert trained == (0, 1, 2) and rows.shape == (3, 30)
    assert sorted(rows.ravel().tolist()) == list(range(90))  # disjoint, every sample once
    for row in rows:  # a third of every task in every row
        assert [np.sum((row >= 30 * t) & (row < 30 * (t + 1))) for t in range(3)] == [10, 10, 10]


@pytest.mark.slow
def test_smoke_offline_supervised_runs_end_to_end_and_beats_chance(tmp_path):
    command = [sys.executable, "-m", "jaxcssl.main", "--config=configs/smoke.py:offline,supervised",
               f"--workdir={tmp_path}", "--config.eval.after_task=()",
               "--config.eval.final=('knn','linear_fast','head')"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((tmp_path / "results.json").read_text())["final"]
    # Four balanced synthetic classes: chance is 25%; the trained classifier and the probe beat it clearly.
    assert final["head"]["top1"] > 0.6 and final["linear_fast"]["top1"] > 0.6
    assert "ce" in (tmp_path / "metrics.jsonl").read_text()
