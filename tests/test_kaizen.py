"""Kaizen: its loss terms against NumPy, its gradients, memory and labels, metrics, and the core hooks it uses.

Loss terms are pure functions checked on fixed embeddings against float64 NumPy recomputations of
the reference's formulas. The strategy's loss runs on the library's ResNet with one stage of width 8
(as tests/test_strategies.py) for every objective, one compilation each; gradients show that neither
classifier term reaches the feature extractor. The continual metrics are checked on a hand-made
accuracy matrix (the poster's claims from its published numbers: tests/test_experiments_kaizen.py).
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import run_cli

from jaxcssl import builders, engine, replay
from jaxcssl.config import base_config, validate
from jaxcssl.engine.schedules import TaskCosine
from jaxcssl.errors import ConfigError
from jaxcssl.evaluation import continual, results
from jaxcssl.learners.continual import target_momentum
from jaxcssl.losses import kaizen as losses
from jaxcssl.methods import build_method
from jaxcssl.models import ResNet
from jaxcssl.strategies import Batch, Context, ModelState
from jaxcssl.strategies.base import DataInfo
from jaxcssl.strategies.kaizen import Kaizen

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_config(objective: str = "mocov2"):
    return _load(ROOT / "configs" / "smoke.py").get_config(f"kaizen,{objective}")


# --- the loss terms against NumPy ------------------------------------------------------------------
def _normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_contrastive_distill(p1, p2, z1, z2, t):
    """The reference's ``simclr_distill_loss_func`` both ways: rows of [p1; p2] against all rows of
    [z1; z2], the positive on the diagonal, averaged; then with the sides swapped."""
    def one(a, b):
        logits = _normalise(a) @ _normalise(b).T / t
        return -np.mean(np.diag(_log_softmax(logits)))

    p, z = np.concatenate([p1, p2]), np.concatenate([z1, z2])
    return 0.5 * (one(p, z) + one(z, p))


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((6, 5)) for _ in range(4)]  # p1, p2, z1, z2


def test_feature_distillation_terms_match_numpy(embeddings):
    p1, p2, z1, z2 = embeddings
    as32 = [jnp.asarray(a, jnp.float32) for a in embeddings]
    cosine = np.mean([np.mean(2 - 2 * np.sum(_normalise(p) * _normalise(z), -1)) for p, z in ((p1, z1), (p2, z2))])
    mse = np.mean([np.mean((p - z) ** 2) for p, z in ((p1, z1), (p2, z2))])
    np.testing.assert_allclose(losses.feature_distillation("cosine", *as32), cosine, **TOL)
    np.testing.assert_allclose(losses.feature_distillation("mse", *as32), mse, **TOL)
    for t in (0.2, 0.5):
        np.testing.assert_allclose(losses.feature_distillation("contrastive", *as32, temperature=t),
                                   np_contrastive_distill(p1, p2, z1, z2, t), **TOL)
    with pytest.raises(ValueError, match="not one of cosine, mse, contrastive"):
        losses.feature_distillation("l1", *as32)


def test_classifier_terms_match_numpy():
    rng = np.random.default_rng(1)
    logits, teacher = rng.standard_normal((7, 4)) * 3, rng.standard_normal((7, 4)) * 3
    labels = np.array([2, -1, 0, 3, -1, 1, 2])
    seen = labels >= 0
    ce = -np.mean(_log_softmax(logits)[seen, labels[seen]])
    np.testing.assert_allclose(losses.masked_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)),
                               ce, **TOL)
    # No labelled sample: 0, not NaN.
    assert float(losses.masked_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.full((7,), -1))) == 0.0
    for t in (1.0, 2.0):
        target = np.exp(_log_softmax(teacher / t))
        expected = -np.mean(np.sum(target * _log_softmax(logits / t), -1))
        np.testing.assert_allclose(losses.soft_label_distillation(jnp.asarray(logits, jnp.float32),
                                                                  jnp.asarray(teacher, jnp.float32), t), expected, **TOL)


def test_the_frozen_side_gets_no_gradient(embeddings):
    p1, p2, z1, z2 = (jnp.asarray(a, jnp.float32) for a in embeddings)

    def gradients(distance):  # with respect to the frozen z1, z2 and to p1
        loss = functools.partial(losses.feature_distillation, distance)
        return jax.grad(lambda a, b: loss(p1, p2, a, b), argnums=(0, 1))(z1, z2), jax.grad(lambda a: loss(a, p2, z1, z2))(p1)

    for distance in losses.FEATURE_DISTANCES:
        grad_z, grad_p = gradients(distance)
        assert all(float(jnp.abs(g).max()) == 0.0 for g in grad_z), distance
        assert float(jnp.abs(grad_p).max()) > 0, distance
    grad_teacher = jax.grad(lambda t: losses.soft_label_distillation(p1, t))(z1)
    assert float(jnp.abs(grad_teacher).max()) == 0.0


# --- the strategy's loss on a tiny model -----------------------------------------------------------
B, R, SIZE, CLASSES = 8, 4, 16, 5


def make_strategy(objective: str, **kaizen) -> tuple[Kaizen, object]:
    config = base_config()
    config.strategy.name = "kaizen"
    config.ssl.method = objective
    config.model.head_scale = 1 / 64
    config.strategy.distill_hidden_dim = 64
    config.strategy.kaizen.update(kaizen)
    method = build_method(objective, dataset="synthetic", backbone=ResNet(stage_sizes=(1,), width=8),
                          head_scale=1 / 64, **({"queue_size": 16} if objective == "mocov2" else {}))
    info = DataInfo(CLASSES, np.zeros(1, np.int32), (), (), jax.random.key(0))
    return Kaizen.from_config(validate(config), method).with_data(info), method


def make_inputs(strategy: Kaizen, method, seed: int = 0):
    key_model, key_modules = jax.random.split(jax.random.key(seed))
    variables = method.init_variables(key_model, (SIZE, SIZE, 3))
    modules = strategy.init_modules(key_modules, method)
    params = {"model": variables["params"], **{k: v["params"] for k, v in modules.items()}}
    batch_stats = {"model": variables["batch_stats"], **{k: v["batch_stats"] for k, v in modules.items()}}
    rng = np.random.default_rng(seed)
    target = None
    if method.uses_target:
        target = jax.tree_util.tree_map(lambda a: a + 0.02 * rng.standard_normal(a.shape, np.float32),
                                        {"params": variables["params"], "batch_stats": variables["batch_stats"]})
    state = ModelState(batch_stats=batch_stats, target=target,
                       loss_state={slot: method.init_loss_state() for slot in ("ssl", "distill", "mixup")})
    old = jax.tree_util.tree_map(lambda a: a + 0.05 * rng.standard_normal(a.shape, np.float32),
                                 {"params": variables["params"], "batch_stats": variables["batch_stats"]})
    old_classifier = jax.tree_util.tree_map(lambda a: a + 0.3 * rng.standard_normal(a.shape, np.float32),
                                            params["classifier"])

    def images(n):
        return jnp.asarray(rng.standard_normal((n, SIZE, SIZE, 3), np.float32))

    batch = Batch(view1=images(B), view2=images(B), memory1=images(R), memory2=images(R),
                  labels=jnp.asarray([0, 1, -1, 2, 3, -1, 4, 0]), memory_labels=jnp.asarray([1, -1, 2, 3]))
    ctx = Context(old=old, strategy_state={"old_classifier": old_classifier}, key=jax.random.key(seed + 1))
    return params, state, batch, ctx


@functools.partial(jax.jit, static_argnames=("strategy", "method", "later"))
def loss_and_gradients(strategy, method, params, state, batch, ctx, later=True):
    """The loss, its metrics, its gradient, the gradient of the two classifier terms, and the
    classifier's logits of both views and the old model's features, recomputed from the model."""
    loss_fn = strategy.loss if later else strategy.first_task_loss

    def total(p):
        value, (metrics, _) = loss_fn(method, p, state, batch, ctx)
        return value, metrics

    def classifier_terms(p):
        metrics = loss_fn(method, p, state, batch, ctx)[1][0]
        return metrics["ce"] + metrics.get("classifier_distill", 0.0)

    (value, metrics), grads = jax.value_and_grad(total, has_aux=True)(params)
    x = [jnp.concatenate([batch.view1, batch.memory1]), jnp.concatenate([batch.view2, batch.memory2])]
    if not later:
        x = [batch.view1, batch.view2]
    current = [method.embed(params["model"], state.batch_stats["model"], v)[0].features for v in x]
    old = [method.embed(ctx.old["params"], ctx.old["batch_stats"], v)[0].features for v in x]
    logits = [strategy.classify(params["classifier"], f) for f in current]
    teacher = [strategy.classify(ctx.strategy_state["old_classifier"], f) for f in old]
    return value, metrics, grads, jax.grad(classifier_terms)(params), logits, teacher


def _max_abs(tree) -> float:
    return max(float(jnp.abs(leaf).max()) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("objective,distance,weight", [
    ("mocov2", "contrastive", 1.0), ("simclr", "contrastive", 1.0), ("byol", "cosine", 1.0), ("vicreg", "mse", 25.0)])
def test_the_loss_is_its_four_terms_and_the_classifier_terms_spare_the_encoder(objective, distance, weight):
    strategy, method = make_strategy(objective)
    assert (strategy.distance, strategy.feature_distill_weight) == (distance, weight)
    params, state, batch, ctx = make_inputs(strategy, method)
    value, metrics, grads, classifier_grads, logits, teacher = jax.device_get(
        loss_and_gradients(strategy, method, params, state, batch, ctx))
    labels = np.concatenate([batch.labels, batch.memory_labels])
    seen = labels >= 0
    ce = sum(-np.mean(_log_softmax(np.float64(y))[seen, labels[seen]]) for y in logits)
    kd = np.mean([-np.mean(np.sum(np.exp(_log_softmax(np.float64(t))) * _log_softmax(np.float64(y)), -1))
                  for y, t in zip(logits, teacher)])
    np.testing.assert_allclose(metrics["ce"], ce, **TOL)
    np.testing.assert_allclose(metrics["classifier_distill"], kd, **TOL)
    np.testing.assert_allclose(value, metrics["ssl"] + weight * metrics["distill"] + ce + 2.0 * kd, rtol=1e-5)
    # Neither classifier term reaches the feature extractor (backbone, projector) nor h; they train g.
    assert _max_abs(classifier_grads["model"]) == 0.0 and _max_abs(classifier_grads["distill"]) == 0.0
    assert _max_abs(classifier_grads["classifier"]) > 0
    assert _max_abs(grads["model"]["backbone"]) > 0 and _max_abs(grads["distill"]) > 0
    # The first task: SSL + CE on the current batch only, no distillation.
    value, metrics, *_, logits, _ = jax.device_get(loss_and_gradients(strategy, method, params, state, batch, ctx,
                                                                      later=False))
    assert set(metrics) == {"ssl", "ce"}
    seen = np.asarray(batch.labels) >= 0
    ce = sum(-np.mean(_log_softmax(np.float64(y))[seen, np.asarray(batch.labels)[seen]]) for y in logits)
    np.testing.assert_allclose(value, metrics["ssl"] + ce, rtol=1e-5)


def test_mocov2s_ssl_term_is_the_methods_own_with_its_per_view_queues_and_the_replay_keys():
    """``L_SSL`` of MoCo v2+ on ``[x_t; x_M]`` is ``½(L(q¹, k²; Q²) + L(q², k¹; Q¹))`` against the queues
    before the step, and each view's B + R keys enter its own queue, in order, at the pointer."""
    strategy, method = make_strategy("mocov2")
    params, state, batch, ctx = make_inputs(strategy, method)
    metrics, new_state = jax.jit(lambda *a: strategy.loss(method, *a)[1])(params, state, batch, ctx)
    x = [jnp.concatenate([batch.view1, batch.memory1]), jnp.concatenate([batch.view2, batch.memory2])]
    q = [_normalise(np.float64(method.embed(params["model"], state.batch_stats["model"], v)[0].projection))
         for v in x]
    k = [_normalise(np.float64(method.embed(state.target["params"], state.target["batch_stats"], v)[0].projection))
         for v in x]
    queues, t = np.float64(state.loss_state["ssl"]["queue"]), method.loss_kwargs["temperature"]
    assert queues.shape == (2, 16, q[0].shape[1])

    def moco(query, key, queue):  # -log softmax of the positive among [positive, queue] (cosines / t)
        logits = np.concatenate([np.sum(query * key, -1, keepdims=True), query @ _normalise(queue).T], 1) / t
        return -np.mean(_log_softmax(logits)[:, 0])

    np.testing.assert_allclose(metrics["ssl"], 0.5 * (moco(q[0], k[1], queues[1]) + moco(q[1], k[0], queues[0])),
                               rtol=1e-5)
    after = new_state.loss_state["ssl"]
    n = B + R
    assert int(after["ptr"]) == n
    for view in (0, 1):
        np.testing.assert_allclose(after["queue"][view][:n], k[view], atol=1e-5)
        np.testing.assert_array_equal(after["queue"][view][n:], state.loss_state["ssl"]["queue"][view][n:])


def test_the_baselines_switch_terms_off_and_name_themselves():
    def label(**kaizen):
        return make_strategy("simclr", **kaizen)[0].report_label()

    assert label() == "Kaizen"
    assert label(classifier_distill_weight=0.0, replay_fraction=0.0) == "CaSSLe + classifier"
    assert label(feature_distill_weight=0.0, classifier_distill_weight=0.0) == "No distillation"
    assert label(feature_distill_weight=0.0, classifier_distill_weight=0.0, replay_fraction=0.0) == \
        "Fine-tune + classifier"
    assert label(replay_fraction=0.05) == "Kaizen, replay 5%"
    assert make_strategy("simclr", replay_fraction=0.0)[0].memory() is None
    assert "distill" not in make_strategy("simclr", feature_distill_weight=0.0)[0].init_modules(
        jax.random.key(0), make_strategy("simclr")[1])


# --- memory and labels ---------------------------------------------------------------------------------
def _info(labels, phases):
    return DataInfo(int(labels.max()) + 1, labels, tuple(phases), tuple(jax.random.key(i) for i in range(len(phases))),
                    jax.random.key(7))


def test_the_memory_holds_the_first_fraction_of_each_class_in_dataset_order():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400).astype(np.int32)
    phases = [np.flatnonzero(labels < 2), np.flatnonzero(labels >= 2)]
    strategy = make_strategy("simclr", replay_fraction=0.05)[0]
    saved = strategy.memory_selection(_info(labels, phases))
    for indices, classes in zip(saved, ((0, 1), (2, 3))):
        expected = np.sort(np.concatenate([np.flatnonzero(labels == c)[:int(0.05 * np.sum(labels == c))]
                                           for c in classes]))
        np.testing.assert_array_equal(indices, expected)
    random = make_strategy("simclr", replay_fraction=0.05, replay_selection="random")[0].memory_selection(
        _info(labels, phases))
    for indices, first in zip(random, saved):
        assert len(indices) == len(first) and not np.array_equal(indices, first)
        np.testing.assert_array_equal(np.bincount(labels[indices], minlength=4), np.bincount(labels[first], minlength=4))
    with pytest.raises(ConfigError, match=r"replay_fraction=0.001 keeps no sample of the first task \(its smallest "
                                          r"class has \d+ training samples\)"):
        make_strategy("simclr", replay_fraction=0.001)[0].memory_selection(_info(labels, phases))


def test_a_labelled_fraction_withholds_the_other_labels_per_class():
    labels = np.repeat(np.arange(4, dtype=np.int32), 50)
    info = _info(labels, [np.arange(100), np.arange(100, 200)])
    full = make_strategy("simclr")[0]
    assert full.train_labels(info) is labels  # every label: the learner keeps its device copy
    strategy = make_strategy("simclr", labelled_fraction=0.3)[0]
    seen = strategy.train_labels(info)
    assert np.all((seen == labels) | (seen == -1))
    np.testing.assert_array_equal(np.bincount(seen[seen >= 0], minlength=4), [15] * 4)
    np.testing.assert_array_equal(seen, strategy.train_labels(info))  # seeded
    other = strategy.train_labels(info._replace(data_key=jax.random.key(8)))
    assert not np.array_equal(seen, other)


def test_the_learner_saves_the_selection_and_sizes_memory_and_replay_batch_from_it():
    config = smoke_config()  # 10% of 64 samples per class: 6 per class, 12 after the first task
    config.strategy.kaizen.labelled_fraction = 0.5
    learner = engine.prepare(config)
    assert learner.memory_spec.replay_batch == 8
    state = learner.init_state()
    assert state.replay.capacity == 12
    plan = learner.memory_plan[0]
    state = state.replace(params={**state.params, "classifier": jax.tree_util.tree_map(
        lambda a: a + 1.0, state.params["classifier"])})
    state = learner.end_phase(state, learner.plan()[0])
    buffer = jax.device_get(state.replay)
    labels = np.asarray(learner.train_labels)
    assert int(buffer.count) == 12
    np.testing.assert_array_equal(buffer.images, learner.data.dataset.x_train[plan])
    np.testing.assert_array_equal(buffer.labels, labels[plan])
    assert np.sum(labels >= 0) == len(labels) // 2
    np.testing.assert_array_equal(learner.inputs(learner.plan()[1]).labels, labels)  # what the step reads
    assert leaves_equal(state.strategy_state["old_classifier"], state.params["classifier"])
    config.strategy.kaizen.replay_batch = 16  # more than the 12 samples held
    assert engine.prepare(config).memory_spec.replay_batch == 12


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# --- configuration -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ({}, "strategy.name='kaizen' supports ssl.method byol, mocov2, simclr, vicreg"),
    ({"strategy.kaizen.replay_fraction": 1.5}, "strategy.kaizen.replay_fraction=1.5 must lie in [0, 1]"),
    ({"strategy.kaizen.replay_selection": "last"}, "replay_selection='last' is not one of: first, random"),
    ({"strategy.kaizen.classifier_lr": 0.0}, "strategy.kaizen.classifier_lr=0.0 must be > 0"),
    ({"strategy.kaizen.classifier_hidden": (0,)}, "classifier_hidden=(0,) must be positive integers"),
    ({"strategy.kaizen.feature_distill_weight": -1.0}, "feature_distill_weight=-1.0 must be >= 0"),
    ({"ssl.ema_final": 0.9}, "ssl.ema_base=0.99 and ssl.ema_final=0.9 must satisfy"),
    ({"ssl.projector_dims": (64, -1)}, "ssl.projector_dims=(64, -1) must be positive integers"),
])
def test_bad_settings_are_one_config_error(override, message):
    config = smoke_config("barlow_twins" if not override else "mocov2")  # an objective Kaizen's reference lacks
    config.update_from_flattened_dict(override)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(config)


def test_the_classifier_learning_rate_is_absolute_and_the_reference_recipe_is_kept():
    config = smoke_config("vicreg")
    config.strategy.kaizen.classifier_lr = 0.05
    config.strategy.kaizen.classifier_weight_decay = 0.0
    learner = engine.prepare(config)
    peak = config.optim.base_lr * config.train.batch_size / config.optim.base_batch
    rules = learner.strategy.param_rules()
    assert rules.lr_mults == (("classifier/.*", pytest.approx(0.05 / peak)),)
    assert rules.wd_mults == (("classifier/.*", 0.0),)


# --- the core hooks Kaizen uses -----------------------------------------------------------------------
def test_the_warm_up_start_keeps_todays_schedule_bit_identical_and_starts_where_asked():
    total, warmup, peak, final = 40, 10, 0.8, 0.0
    steps = jnp.arange(total)

    def today(schedule, step):  # the warm-up before warmup_start_lr existed
        step = jnp.asarray(step, jnp.float32)
        return schedule.peak_lr * (step + 1.0) / jnp.maximum(jnp.asarray(schedule.warmup_steps, jnp.float32), 1.0)

    def rates(fn, schedule):  # the schedule is a traced argument, as in the engine's step
        return np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(schedule, steps))

    schedule = TaskCosine.create(total, warmup, peak, final)
    lrs = rates(TaskCosine.learning_rate, schedule)
    np.testing.assert_array_equal(lrs[:warmup], rates(today, schedule)[:warmup])
    start = 0.003
    lrs = rates(TaskCosine.learning_rate, TaskCosine.create(total, warmup, peak, final, start))
    np.testing.assert_allclose(lrs[:warmup], start + (peak - start) * np.arange(1, warmup + 1) / warmup, rtol=1e-6)
    assert lrs[warmup - 1] == pytest.approx(peak) and lrs[warmup] == pytest.approx(peak)


def test_the_target_momentum_restarts_every_task_when_asked():
    def cosine(progress, base, final):
        return final - (final - base) * (np.cos(np.pi * progress) + 1) / 2

    run = [float(target_momentum(s, s % 10, 30, 10, 0.99, 0.999, False)) for s in range(30)]
    per_task = [float(target_momentum(s, s % 10, 30, jnp.int32(10), 0.99, 0.999, True)) for s in range(30)]
    np.testing.assert_allclose(run, cosine(np.arange(30) / 30, 0.99, 0.999), rtol=1e-6)
    np.testing.assert_allclose(per_task, np.tile(cosine(np.arange(10) / 10, 0.99, 0.999), 3), rtol=1e-6)


def test_projector_dims_replace_the_widths_and_keep_the_layout():
    def method(name, dims=()):
        config = smoke_config(name)
        config.model.head_scale = 1.0
        config.ssl.projector_dims = dims
        return builders.build_ssl_method(config)

    reference, kaizen = method("simclr").model.projector, method("simclr", (4096, 256)).model.projector
    assert (reference.hidden_dims, reference.out_dim) == ((2048,), 128)
    assert (kaizen.hidden_dims, kaizen.out_dim) == ((4096,), 256)
    assert (kaizen.use_bn, kaizen.out_bias) == (reference.use_bn, reference.out_bias)
    assert method("mocov2", (512, 64)).projection_dim == 64
    byol = method("byol", (512, 64)).model  # the predictor maps back to the new projection width
    assert (byol.projector.out_dim, byol.predictor.out_dim) == (64, 64)


def test_reinit_each_task_trains_every_task_as_a_first_task():
    config = smoke_config()
    config.train.reinit_each_task = True
    assert {phase.program for phase in engine.prepare(config).plan()} == {"first"}


def test_insert_indices_saves_the_given_samples_in_order():
    images = jnp.arange(10 * 2 * 2 * 1, dtype=jnp.uint8).reshape(10, 2, 2, 1)
    labels = jnp.arange(10, dtype=jnp.int32) * 10
    buffer = replay.create(5, (2, 2, 1))
    buffer = replay.insert_indices(buffer, images, labels, jnp.asarray([7, 2]), task_id=0)
    buffer = replay.insert_indices(buffer, images, labels, jnp.asarray([4, 9, 0]), task_id=1)
    np.testing.assert_array_equal(buffer.labels, [70, 20, 40, 90, 0])
    np.testing.assert_array_equal(buffer.task_ids, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(buffer.images[1], images[2])
    with pytest.raises(ValueError, match="1 samples do not fit, the buffer holds 5 of its capacity 5"):
        replay.insert_indices(buffer, images, labels, jnp.asarray([1]), task_id=2)


# --- metrics ----------------------------------------------------------------------------------------------
def test_the_continual_metrics_on_a_hand_made_matrix():
    A = [[0.8, None, None], [0.5, 0.7, None], [0.4, 0.6, 0.9]]
    specialised = [0.8, 0.75, 0.8]
    block = results.continual_block({"head": A}, {"head": specialised})["head"]
    assert block["continual_accuracy"] == pytest.approx((0.8 + (0.5 + 0.7) / 2 + (0.4 + 0.6 + 0.9) / 3) / 3)
    assert block["final_accuracy"] == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert block["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.7 - 0.6)) / 2)
    assert block["forward_transfer"] == pytest.approx(((0.7 - 0.75) + (0.9 - 0.8)) / 2)
    # Forgetting measures from the best earlier accuracy, not the first one.
    assert continual.average_forgetting([[0.5, None, None], [0.6, 0.7, None], [0.2, 0.7, 0.9]]) == \
        pytest.approx(((0.6 - 0.2) + 0.0) / 2)


@pytest.mark.parametrize("config,overrides,line", [
    ("configs/smoke.py:kaizen,barlow_twins", [],
     "strategy.name='kaizen' supports ssl.method byol, mocov2, simclr, vicreg (the objectives of its reference), "
     "not 'barlow_twins'"),
    ("configs/smoke.py:kaizen,simclr", ["--config.strategy.kaizen.replay_fraction=0.01"],
     "strategy.kaizen.replay_fraction=0.01 keeps no sample of the first task (its smallest class has 64 training "
     "samples); raise it, or 0 for no replay"),
])
def test_the_command_line_refuses_bad_settings_in_one_line_without_a_workdir(config, overrides, line, tmp_path):
    result = run_cli(config, tmp_path / "w", *overrides)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"jaxcssl: error: {line}"
    assert not (tmp_path / "w").exists()
