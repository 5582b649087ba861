"""Optimisers and schedules (jaxcssl.optim) against independent NumPy float64 implementations.

* LARS: the solo-learn ``LARS`` step that the CroMo-Mixup reference uses (``utils/lars.py``):
  trust ratio ``eta·‖p‖ / (‖g‖ + wd·‖p‖ + eps)`` and coupled weight decay only for weights
  (``exclude_bias_n_norm``), ``clip_lr`` (``min(ratio / lr, 1)``), a parameter or gradient of norm
  zero passing its raw gradient through, then ``torch`` SGD momentum ``buf = m·buf + d``,
  ``p ← p − lr·buf``.
* SGD: ``torch.optim.SGD`` with weight decay and momentum (dampening 0, no Nesterov).
* Adam: ``torch.optim.Adam`` with (coupled, L2) weight decay.
* ``TaskCosine``: linear warm-up then cosine, in closed form.
* :func:`optim.make`: injected learning rate and momentum, parameter groups by path (learning-rate and
  weight-decay multipliers, frozen leaves), each group against its own NumPy optimiser.

Several steps with a varying learning rate; tolerance rtol 1e-5 (float32 against float64).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcssl import optim
from jaxcssl.engine.schedules import TaskCosine

RTOL, ATOL = 1e-5, 1e-7
LRS = (0.3, 0.05, 1.2, 0.7, 0.01)  # one learning rate per step (five steps): warm-up, decay and a jump


# ---------------------------------------------------------------- NumPy float64 references


class NumpyLars:
    """solo-learn LARS with ``exclude_bias_n_norm=True`` (1-D parameters skip trust ratio and decay)."""

    def __init__(self, weight_decay, momentum=0.9, eta=0.02, clip_lr=True, eps=1e-8):
        self.wd, self.m, self.eta, self.clip_lr, self.eps = weight_decay, momentum, eta, clip_lr, eps
        self.buf = {}

    def step(self, params, grads, lr):
        out = {}
        for name, p in params.items():
            d = grads[name]
            p_norm, g_norm = np.linalg.norm(p), np.linalg.norm(d)
            if p.ndim != 1 and p_norm != 0 and g_norm != 0:
                ratio = self.eta * p_norm / (g_norm + p_norm * self.wd + self.eps)
                if self.clip_lr:
                    ratio = min(ratio / lr, 1.0)
                d = (d + self.wd * p) * ratio
            self.buf[name] = d.copy() if name not in self.buf else self.m * self.buf[name] + d
            out[name] = p - lr * self.buf[name]
        return out


class NumpySGD:
    """``torch.optim.SGD(lr, momentum, weight_decay)``: ``d = g + wd·p``; ``buf = m·buf + d``."""

    def __init__(self, weight_decay, momentum=0.9):
        self.wd, self.m, self.buf = weight_decay, momentum, {}

    def step(self, params, grads, lr, momentum=None):
        m = self.m if momentum is None else momentum
        out = {}
        for name, p in params.items():
            d = grads[name] + self.wd * p
            self.buf[name] = d.copy() if name not in self.buf else m * self.buf[name] + d
            out[name] = p - lr * self.buf[name]
        return out


class NumpyAdam:
    """``torch.optim.Adam(lr, betas=(b1, 0.999), eps=1e-8, weight_decay)``: ``g ← g + wd·p`` first.

    """

    def __init__(self, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
        self.wd, self.b1, self.b2, self.eps, self.t, self.m, self.v = weight_decay, b1, b2, eps, 0, {}, {}

    def step(self, params, grads, lr):
        self.t += 1
        out = {}
        for name, p in params.items():
            g = grads[name] + self.wd * p
            self.m[name] = self.b1 * self.m.get(name, 0.0) + (1 - self.b1) * g
            self.v[name] = self.b2 * self.v.get(name, 0.0) + (1 - self.b2) * g * g
            m_hat, v_hat = self.m[name] / (1 - self.b1 ** self.t), self.v[name] / (1 - self.b2 ** self.t)
            out[name] = p - lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return out


def np_task_lr(step, total, warmup, peak, final):
    if step < warmup:
        return peak * (step + 1) / max(warmup, 1)
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- helpers


def _problem(seed=0, num_steps=5):
    """A 2-D weight and a 1-D bias, and a gradient sequence of different scales per step."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=(3,))}
    grads = [
        {"w": rng.normal(size=(5, 3)) * 10.0 ** rng.uniform(-3, 1), "b": rng.normal(size=(3,))}
        for _ in range(num_steps)
    ]
    return params, grads


def _to_jax(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _run_optax(tx, params, grads, lrs=None, momenta=None):
    """Apply ``tx`` step by step; with ``lrs`` (``momenta``) the injected learning rate (momentum) is
    set as the engine's step does."""
    p = _to_jax(params)
    state = tx.init(p)
    update = jax.jit(tx.update)
    for i, g in enumerate(grads):
        if lrs is not None:
            state = state._replace(hyperparams={**state.hyperparams, "learning_rate": jnp.float32(lrs[i])})
        if momenta is not None:
            state = state._replace(hyperparams={**state.hyperparams, "momentum": jnp.float32(momenta[i])})
        updates, state = update(_to_jax(g), state, p)
        p = optax.apply_updates(p, updates)
    return jax.tree_util.tree_map(np.asarray, p)


def _run_numpy(opt, params, grads, lrs):
    p = params
    for g, lr in zip(grads, lrs, strict=True):
        p = opt.step(p, g, lr)
    return p


def _assert_tree_close(actual, expected):
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


def _schedule(lrs):
    table = jnp.asarray(lrs, jnp.float32)
    return lambda count: table[jnp.minimum(count, len(lrs) - 1)]


# ---------------------------------------------------------------- LARS


@pytest.mark.parametrize("clip_lr", [True, False])
@pytest.mark.parametrize("weight_decay", [1e-4, 5e-2])
def test_lars_matches_solo_learn_reference(clip_lr, weight_decay):
    params, grads = _problem()
    actual = _run_optax(optim.lars(_schedule(LRS), weight_decay=weight_decay, clip_lr=clip_lr), params, grads)
    expected = _run_numpy(NumpyLars(weight_decay, clip_lr=clip_lr), params, grads, LRS)
    _assert_tree_close(actual, expected)


def test_lars_trust_ratio_and_clipping_are_active():
    """The reference differs from plain momentum SGD here: the test above could not pass by accident."""
    params, grads = _problem()
    lars = _run_numpy(NumpyLars(1e-4), params, grads, LRS)
    plain = _run_numpy(NumpySGD(0.0), params, grads, LRS)
    assert not np.allclose(lars["w"], plain["w"], rtol=1e-3)
    np.testing.assert_allclose(lars["b"], plain["b"], rtol=1e-12)  # biases: plain SGD, no decay


def test_lars_bias_gets_raw_gradient_and_weight_gets_clipped_ratio():
    """One step by hand: bias ``−lr·g``; weight ``−lr·min(eta‖p‖/(‖g‖+wd‖p‖+eps)/lr, 1)·(g + wd·p)``."""
    lr, wd, eta = 0.5, 1e-3, 0.02
    p = {"w": np.full((2, 2), 3.0), "b": np.array([1.0, -2.0])}
    g = {"w": np.array([[0.1, 0.0], [0.0, 0.0]]), "b": np.array([0.5, 0.25])}
    actual = _run_optax(optim.lars(lr, weight_decay=wd, eta=eta), p, [g])
    ratio = min(eta * 6.0 / (0.1 + wd * 6.0 + 1e-8) / lr, 1.0)
    np.testing.assert_allclose(actual["w"], p["w"] - lr * ratio * (g["w"] + wd * p["w"]), rtol=RTOL)
    np.testing.assert_allclose(actual["b"], p["b"] - lr * g["b"], rtol=RTOL)


def test_lars_zero_norm_parameters_and_gradients_pass_through():
    """‖p‖ = 0 or ‖g‖ = 0: no trust ratio and no weight decay, the raw gradient (reference behaviour)."""
    lr, wd = 0.4, 0.1
    p = {"zero_w": np.zeros((3, 2)), "w": np.ones((3, 2))}
    g = {"zero_w": np.full((3, 2), 2.0), "w": np.zeros((3, 2))}
    one = _run_optax(optim.lars(lr, weight_decay=wd), p, [g])
    np.testing.assert_allclose(one["zero_w"], -lr * g["zero_w"], rtol=RTOL)
    np.testing.assert_array_equal(one["w"], p["w"])  # no weight decay without a gradient
    # A second step: the weight is no longer zero, so the trust ratio applies, as in the reference.
    two = _run_optax(optim.lars(lr, weight_decay=wd), p, [g, g])
    assert np.all(np.isfinite(two["zero_w"]))
    _assert_tree_close(two, _run_numpy(NumpyLars(wd), p, [g, g], [lr, lr]))


def test_lars_without_exclusion_scales_biases_too():
    params, grads = _problem(seed=1, num_steps=1)
    kept = _run_optax(optim.lars(0.3, weight_decay=1e-2), params, grads)
    scaled = _run_optax(optim.lars(0.3, weight_decay=1e-2, exclude_bias_and_norm_params=False), params, grads)
    np.testing.assert_allclose(kept["w"], scaled["w"], rtol=RTOL)
    assert not np.allclose(kept["b"], scaled["b"], rtol=1e-3)


def test_exclude_bias_and_norm_mask():
    tree = {"conv": jnp.zeros((3, 3, 2, 4)), "dense": jnp.zeros((4, 2)), "bias": jnp.zeros(2), "scale": jnp.zeros(4)}
    assert optim.exclude_bias_and_norm(tree) == {"conv": True, "dense": True, "bias": False, "scale": False}


# ---------------------------------------------------------------- SGD


@pytest.mark.parametrize("weight_decay,momentum", [(1e-4, 0.9), (5e-2, 0.5)])
def test_sgd_matches_torch_semantics(weight_decay, momentum):
    params, grads = _problem(seed=2)
    actual = _run_optax(optim.sgd(_schedule(LRS), weight_decay=weight_decay, momentum=momentum), params, grads)
    expected = _run_numpy(NumpySGD(weight_decay, momentum), params, grads, LRS)
    _assert_tree_close(actual, expected)


def test_make_optimizer_by_name():
    params, grads = _problem(seed=3, num_steps=2)
    lars = _run_optax(optim.make_optimizer("lars", 0.2, weight_decay=1e-3), params, grads)
    _assert_tree_close(lars, _run_numpy(NumpyLars(1e-3), params, grads, [0.2, 0.2]))
    sgd = _run_optax(optim.make_optimizer("sgd", 0.2, weight_decay=1e-3), params, grads)
    _assert_tree_close(sgd, _run_numpy(NumpySGD(1e-3), params, grads, [0.2, 0.2]))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        optim.make_optimizer("rmsprop", 0.1, weight_decay=0.0)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_matches_torch_semantics(weight_decay):
    params, grads = _problem(seed=5)
    actual = _run_optax(optim.adam(_schedule(LRS), weight_decay=weight_decay), params, grads)
    expected = _run_numpy(NumpyAdam(weight_decay), params, grads, LRS)
    # optax computes the bias correction 1 − β₂ᵗ in float32 (1e-5 off at t = 1) while torch uses
    # Python floats: each step is scaled by 1 − 6.5e-6, so five steps of lr ~1 differ by ~1e-5.
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-4, atol=5e-5, err_msg=name)


# ---------------------------------------------------------------- schedules


SCHEDULES = [  # total, warmup, peak, final
    (100, 10, 1.2, 0.0),
    (100, 0, 0.3, 0.0),
    (37, 5, 0.6, 0.002),
    (8, 8, 0.1, 0.0),
]


@pytest.mark.parametrize("total,warmup,peak,final", SCHEDULES)
def test_task_cosine_closed_form(total, warmup, peak, final):
    steps = sorted({0, 1, max(warmup - 1, 0), warmup, warmup + 1, (total + warmup) // 2, total - 1, total, total + 5})
    schedule = TaskCosine.create(total, warmup, peak, final)
    # The schedule is a traced argument of the compiled step (one program for every task).
    traced = jax.jit(lambda sched, step: sched(step)["learning_rate"])
    for step in steps:
        expected = np_task_lr(step, total, warmup, peak, final)
        np.testing.assert_allclose(float(schedule(step)["learning_rate"]), expected, rtol=1e-5, atol=1e-7,
                                   err_msg=f"step {step}")
        np.testing.assert_allclose(float(traced(schedule, jnp.int32(step))), expected, rtol=1e-5, atol=1e-7,
                                   err_msg=f"jit step {step}")


def test_task_cosine_shape():
    """Warm-up rises linearly to the peak, then the cosine falls monotonically to the final value."""
    total, warmup, peak, final = 50, 10, 1.0, 0.01
    schedule = TaskCosine.create(total, warmup, peak, final)
    lrs = np.asarray(jax.vmap(schedule.learning_rate)(jnp.arange(total + 1)))
    np.testing.assert_allclose(lrs[:warmup], peak * np.arange(1, warmup + 1) / warmup, rtol=1e-6)
    assert lrs[warmup] == pytest.approx(peak)
    assert np.all(np.diff(lrs[warmup:]) <= 1e-7)
    assert lrs[total] == pytest.approx(final)
    assert lrs[total // 2 + warmup // 2] == pytest.approx((peak + final) / 2, rel=1e-5)


def test_peak_learning_rate():
    assert optim.peak_learning_rate(0.3, 256, 0) == pytest.approx(0.3)
    assert optim.peak_learning_rate(0.6, 512, 0) == pytest.approx(1.2)
    assert optim.peak_learning_rate(1.0, 64, 3) == pytest.approx(0.25)
    assert optim.peak_learning_rate(0.1, 512, 0, base_batch=512) == pytest.approx(0.1)
    assert optim.peak_learning_rate(0.3, 256, 0, later_task_factor=0.1) == pytest.approx(0.3)
    assert optim.peak_learning_rate(0.3, 256, 1, later_task_factor=0.1) == pytest.approx(0.03)


# ---------------------------------------------------------------- the engine's optimiser


@pytest.mark.parametrize("name", ["lars", "sgd"])
def test_engine_optimizer_with_injected_learning_rate(name):
    """``optim.make`` without rules updates like the reference at the lr the step injects."""
    params, grads = _problem(seed=4)
    tx = optim.make(name, _to_jax(params), weight_decay=1e-3, momentum=0.9, eta=0.02, clip_lr=True)
    actual = _run_optax(tx, params, grads, lrs=LRS)
    reference = NumpyLars(1e-3) if name == "lars" else NumpySGD(1e-3)
    _assert_tree_close(actual, _run_numpy(reference, params, grads, LRS))


def test_injected_momentum_changes_the_heavy_ball_per_step():
    """A one-cycle schedule sets the momentum each step: ``buf = m_t·buf + d`` with the step's ``m_t``."""
    params, grads = _problem(seed=6)
    momenta = (0.95, 0.9, 0.85, 0.9, 0.95)
    actual = _run_optax(optim.make("sgd", _to_jax(params), weight_decay=1e-3), params, grads, LRS, momenta)
    reference, p = NumpySGD(1e-3), params
    for g, lr, m in zip(grads, LRS, momenta):
        p = reference.step(p, g, lr, momentum=m)
    _assert_tree_close(actual, p)


@pytest.mark.parametrize("name", ["lars", "sgd"])
def test_parameter_groups_by_path(name):
    """``head/*`` at a tenth of the rate without weight decay, ``frozen/*`` untouched, the rest plain:
    each group equals its own NumPy optimiser run on its parameters alone."""
    rng = np.random.default_rng(7)
    params = {"body": {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=(3,))},
              "head": {"w": rng.normal(size=(3, 2))}, "frozen": {"w": rng.normal(size=(4, 4))}}
    grads = [jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape), params) for _ in range(len(LRS))]
    rules = optim.ParamRules(lr_mults=(("head/.*", 0.1),), wd_mults=(("head/.*", 0.0),), frozen=("frozen/.*",))
    tx = optim.make(name, _to_jax(params), rules, weight_decay=1e-2)
    actual = _run_optax(tx, params, grads, lrs=LRS)

    def reference(wd):
        return NumpyLars(wd) if name == "lars" else NumpySGD(wd)

    body = _run_numpy(reference(1e-2), params["body"], [g["body"] for g in grads], LRS)
    head = _run_numpy(reference(0.0), params["head"], [g["head"] for g in grads], [0.1 * lr for lr in LRS])
    _assert_tree_close(actual["body"], body)
    _assert_tree_close(actual["head"], head)
    np.testing.assert_array_equal(actual["frozen"]["w"], params["frozen"]["w"].astype(np.float32))


def test_parameter_rules_first_match_wins_and_bad_rules_are_refused():
    params = {"a": {"x": jnp.zeros((2, 2))}, "b": {"x": jnp.zeros((2,))}}
    settings = optim.leaf_settings(params, optim.ParamRules(lr_mults=(("a/.*", 0.5), (".*", 2.0)),
                                                            frozen=("b/x",)))
    assert settings == {"a": {"x": (0.5, 1.0, False)}, "b": {"x": (2.0, 1.0, True)}}
    with pytest.raises(ValueError, match="lr_mults"):
        optim.ParamRules(lr_mults=(("a/.*", -1.0),)).check()
