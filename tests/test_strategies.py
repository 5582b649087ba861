"""The loss of every continual strategy on tiny inputs, against independent recomputations.

Model: the library's ResNet with one stage of width 8 on 16x16 images (a full ResNet-18 compiles
three times slower on two CPU cores; the strategies' logic does not depend on depth) and the
reference heads at 1/64 width. Batch B = 8, replay R = 4. Strategies and methods are static
arguments of one jitted runner, so each configuration compiles once per module.

References: JAX recomputations from ``method.embed`` / ``ssl_loss`` / ``criterion`` / ``distill``
written without the strategy modules (float32, rtol = atol = 1e-5), or NumPy float64 (Sy-CON,
EWC, DER; same tolerance, which bounds the float32 error of the jitted losses).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcssl.config import base_config
from jaxcssl.methods import build_method, distill_predictor_for
from jaxcssl.models import ResNet
from jaxcssl.strategies import REGISTRY, Batch, Context, ModelState, build_strategy
from jaxcssl.strategies.cassle import CaSSLe, CaSSLePlus
from jaxcssl.strategies.cromo import CroMoMixup
from jaxcssl.strategies.der import DER
from jaxcssl.strategies.er import ExperienceReplay
from jaxcssl.strategies.ewc import EWC
from jaxcssl.strategies.finetune import Finetune
from jaxcssl.strategies.lump import LUMP
from jaxcssl.strategies.offline import Offline
from jaxcssl.strategies.sycon import SyCON

B, R, SIZE = 8, 4, 16
TOL = {"rtol": 1e-5, "atol": 1e-5}
SLOTS = ("ssl", "distill", "mixup")


class Setup(NamedTuple):
    method: Any
    predictor: Any
    params: Any
    state: ModelState
    batch: Batch
    old: Any
    key: jax.Array


def _perturbed(tree, seed: int, scale: float):
    """``tree`` plus Gaussian noise drawn on the host (NumPy: nothing to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: np.asarray(a) + scale * rng.standard_normal(a.shape, np.float32), tree)


def make_setup(name: str, seed: int, **options) -> Setup:
    """Parameters, model state, a batch and an old model (the parameters perturbed)."""
    method = build_method(
        name, dataset="synthetic", backbone=ResNet(stage_sizes=(1,), width=8), head_scale=1 / 64, **options
    )
    predictor = distill_predictor_for(name, "synthetic", 1 / 64)
    key_model, key_distill = jax.random.split(jax.random.key(seed, impl="rbg"))
    variables = jax.jit(method.init_variables, static_argnums=1)(key_model, (SIZE, SIZE, 3))
    dim = method.model.projector.out_dim
    distill = jax.jit(functools.partial(predictor.init, train=True))(key_distill, jnp.zeros((2, dim)))
    params = {"model": variables["params"], "distill": distill["params"]}
    target = None
    if method.uses_target:
        target = {"params": _perturbed(variables["params"], seed + 1, 0.02), "batch_stats": variables["batch_stats"]}
    state = ModelState(
        batch_stats={"model": variables["batch_stats"], "distill": distill["batch_stats"]},
        loss_state={slot: method.init_loss_state() for slot in SLOTS},
        target=target,
    )
    rng = np.random.default_rng(seed + 2)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32))

    batch = Batch(
        view1=normal(B, SIZE, SIZE, 3), view2=normal(B, SIZE, SIZE, 3),
        memory1=normal(R, SIZE, SIZE, 3), memory2=normal(R, SIZE, SIZE, 3), memory_features=normal(R, dim),
    )
    old = {"params": _perturbed(variables["params"], seed + 3, 0.05), "batch_stats": variables["batch_stats"]}
    return Setup(method, predictor, params, state, batch, old, jax.random.key(seed + 100, impl="rbg"))


@pytest.fixture(scope="module")
def barlow() -> Setup:
    return make_setup("barlow_twins", 0)


# --- runners (one compilation per static configuration) ---------------------------------------
@functools.partial(jax.jit, static_argnames=("strategy", "method", "has_old"))
def run(strategy, method, params, state, batch, old, key, strategy_state=None, has_old=True):
    ctx = Context(old=old, strategy_state=strategy_state or {}, key=key)
    loss = strategy.loss if has_old else strategy.first_task_loss
    return loss(method, params, state, batch, ctx)


def run_setup(strategy, s: Setup, batch=None, old=None, **kwargs):
    batch = s.batch if batch is None else batch
    old = s.old if old is None else old
    return run(strategy, s.method, s.params, s.state, batch, old, s.key, **kwargs)


@functools.partial(jax.jit, static_argnames=("strategy", "method"))
def grad_wrt_old(strategy, method, params, state, batch, old, key):
    def loss(o):
        return strategy.loss(method, params, state, batch, Context(o, {}, key))[0]

    return jax.grad(loss)(old)


# --- independent references --------------------------------------------------------------------
def _embed(method, variables, images):
    return method.embed(variables["params"], variables["batch_stats"], images)[0]


def _current(params, state):
    return {"params": params["model"], "batch_stats": state.batch_stats["model"]}


def _predict(predictor, params, state, z):
    variables = {"params": params["distill"], "batch_stats": state.batch_stats["distill"]}
    return predictor.apply(variables, z, train=True, mutable=["batch_stats"])[0]


@functools.partial(jax.jit, static_argnames=("method", "predictor"))
def ssl_and_distill(method, predictor, params, state, old, x1, x2):
    """``L_SSL(z¹, z²)`` and ``Σ_v L(z̄ᵛ, h(zᵛ))`` for a method without target network."""
    e1, e2 = (_embed(method, _current(params, state), x) for x in (x1, x2))
    ssl = method.ssl_loss(e1, e2, e1.projection, e2.projection, method.init_loss_state())[0]
    distill = 0.0
    for e, x in ((e1, x1), (e2, x2)):
        predicted = _predict(predictor, params, state, e.projection)
        distill = distill + method.distill(predicted, _embed(method, old, x).projection, method.init_loss_state())[0]
    return ssl, distill


@functools.partial(jax.jit, static_argnames=("method", "predictor", "partner_model"))
def cromo_eq5(method, predictor, params, state, old, views, partners, lam, zeta, weight, partner_model="old"):
    """CroMo Eq. 3–5 recomputed: for each view, [x; x_mix] through the current model in one batch and
    [x; partner] through the old model in one batch; Eq. 4 weighted by the batch mean of λ."""
    s0, num, num_mixed = method.init_loss_state(), views[0].shape[0], partners[0].shape[0]
    weight_current = jnp.mean(lam)
    lam_images = lam[:, None, None, None]
    current, distill, cromo = [], 0.0, 0.0
    for x, partner in zip(views, partners):
        mixed = lam_images * x[:num_mixed] + (1.0 - lam_images) * partner
        both = _embed(method, _current(params, state), jnp.concatenate([x, mixed]))
        cur = jax.tree_util.tree_map(lambda a: a[:num], both)
        mix = jax.tree_util.tree_map(lambda a: a[num:], both)
        if partner_model == "old":
            old_both = _embed(method, old, jnp.concatenate([x, partner])).projection
            old_current, partner_key = old_both[:num], old_both[num:]
            predicted = _predict(predictor, params, state, cur.projection)
            distill = distill + method.distill(predicted, old_current, s0)[0]
        else:
            partner_key = _embed(method, _current(params, state), partner).projection
        to_current = method.criterion(mix, cur.projection[:num_mixed], s0)[0]
        to_partner = method.criterion(mix, partner_key, s0)[0]
        cromo = cromo + weight_current * to_current + (1.0 - weight_current) * to_partner
        current.append(cur)
    ssl = method.ssl_loss(current[0], current[1], current[0].projection, current[1].projection, s0)[0]
    return {"ssl": ssl, "distill": distill, "cromo": cromo, "total": ssl + zeta * distill + weight * cromo}


def ssl_reference(s: Setup, x1, x2):
    return ssl_and_distill(s.method, s.predictor, s.params, s.state, s.old, x1, x2)[0]


def close(actual, expected, **tol):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), **(tol or TOL))


# --- every strategy ------------------------------------------------------------------------------
def all_strategies(predictor):
    return [
        Finetune(), Offline(), ExperienceReplay(), CaSSLe(distill_weight=0.5, distill_predictor=predictor),
        CaSSLePlus(distill_predictor=predictor), LUMP(), EWC(weight=10.0), DER(weight=0.5),
        CroMoMixup(distill_predictor=predictor), SyCON(ssl_method="barlow_twins", distill_predictor=predictor),
    ]


def test_every_strategy_returns_finite_metrics(barlow):
    for strategy in all_strategies(barlow.predictor):
        strategy_state = strategy.init_state(barlow.params)
        loss, (metrics, state) = run_setup(strategy, barlow, strategy_state=strategy_state)
        assert np.isfinite(float(loss)), type(strategy).__name__
        for name, value in metrics.items():
            assert np.all(np.isfinite(np.asarray(value))), (type(strategy).__name__, name)
        assert isinstance(state, ModelState)


def test_first_task_is_plain_ssl(barlow):
    """Before the first task ends every registered strategy's first-task loss traces to fine-tuning's
    program, whose value is the SSL loss recomputed independently (comparing jaxprs avoids compiling
    ten identical programs)."""
    s = barlow
    first = s.batch._replace(memory1=None, memory2=None, memory_features=None)

    def program(strategy):
        def loss(params, state, batch, old, key, strategy_state):
            return strategy.first_task_loss(s.method, params, state, batch, Context(old, strategy_state, key))

        return str(jax.make_jaxpr(loss)(s.params, s.state, first, s.old, s.key, {}))

    finetune = program(Finetune())
    strategies = all_strategies(s.predictor)
    assert {type(x).name for x in strategies} == set(REGISTRY.names())
    for strategy in strategies[1:]:
        assert program(strategy) == finetune, type(strategy).__name__
    loss, (metrics, _) = run_setup(Finetune(), s, batch=first, has_old=False)
    assert set(metrics) == {"ssl"}
    close(loss, ssl_reference(s, first.view1, first.view2))


# --- CroMo-Mixup ---------------------------------------------------------------------------------
def _cromo(s: Setup, **options):
    return CroMoMixup(distill_predictor=s.predictor, **options)


@jax.jit
def expected_draws(key):
    """The draws the strategies make from ``ctx.key``: CroMo splits it into a λ key and a partner key;
    LUMP draws its one λ ~ Beta(0.4, 0.4) from the key itself."""
    key_lam, key_partner = jax.random.split(key)
    return {
        "cromo_batch": jnp.full((R,), jax.random.beta(key_lam, 1.0, 1.0)),
        "cromo_sample": jax.random.beta(key_lam, 1.0, 1.0, (R,)),
        "within_task_cycle": jax.random.permutation(key_partner, B),
        "lump": jax.random.beta(key, 0.4, 0.4),
    }


@functools.partial(jax.jit, static_argnames=("method",))
def cromo_at_lambda_one(method, params, state, views):
    """λ = 1: x_mix = x_t[:R], whose rows in the batch [x_t; x_t[:R]] equal z_t[:R]; L_CroMo is then
    Σ_v L(z_t[:R], z_t[:R]). Also returns the largest difference between mixed and current rows."""
    total, gap, s0 = 0.0, 0.0, method.init_loss_state()
    for x in views:
        both = _embed(method, _current(params, state), jnp.concatenate([x, x[:R]]))
        head = jax.tree_util.tree_map(lambda a: a[:R], both)
        total = total + method.criterion(head, head.projection, s0)[0]
        gap = jnp.maximum(gap, jnp.max(jnp.abs(both.projection[B:] - head.projection)))
    return total, gap


def test_cromo_without_mixup_and_distillation_is_the_ssl_term(barlow):
    s = barlow
    loss, (metrics, _) = run_setup(_cromo(s, mixup_weight=0.0, distill_weight=0.0), s)
    expected = cromo_eq5(s.method, s.predictor, s.params, s.state, s.old, (s.batch.view1, s.batch.view2),
                         (s.batch.memory1, s.batch.memory2), jnp.full((R,), 0.7), 0.0, 0.0)
    close(loss, expected["ssl"])
    close(metrics["ssl"], expected["ssl"])
    # Current and mixed rows share one forward pass (BatchNorm over B + R rows, as the reference
    # code's model(torch.cat((x1, mix_x1)), ...)), so this is the SSL term on those rows, not
    # fine-tuning's loss on the B current rows alone.


@pytest.mark.parametrize("mode", ["fixed_one", "fixed", "batch", "sample"])
def test_cromo_total_is_eq5(barlow, mode):
    s = barlow
    if mode == "fixed_one":
        strategy, lam = _cromo(s, lam_value=1.0), jnp.ones((R,))
    elif mode == "fixed":
        strategy, lam = _cromo(s), jnp.full((R,), 0.7)
    elif mode == "batch":
        strategy = _cromo(s, lam_mode="batch", alpha=1.0)
        lam = expected_draws(s.key)["cromo_batch"]
    else:
        strategy = _cromo(s, lam_mode="sample", alpha=1.0)
        lam = expected_draws(s.key)["cromo_sample"]
        assert len(np.unique(np.asarray(lam))) == R
    views, memory = (s.batch.view1, s.batch.view2), (s.batch.memory1, s.batch.memory2)
    loss, (metrics, _) = run_setup(strategy, s)
    expected = cromo_eq5(s.method, s.predictor, s.params, s.state, s.old, views, memory, lam, 1.0, 1.0)
    for name in ("ssl", "distill", "cromo"):
        close(metrics[name], expected[name])
    close(loss, expected["total"])
    close(metrics["lambda"], np.mean(np.asarray(lam)))
    if mode == "fixed_one":
        by_hand, gap = cromo_at_lambda_one(s.method, s.params, s.state, views)
        assert float(gap) < 1e-5
        close(metrics["cromo"], by_hand)
    if mode == "sample":
        batch_lam = jnp.full((R,), lam[0])
        other = cromo_eq5(s.method, s.predictor, s.params, s.state, s.old, views, memory, batch_lam, 1.0, 1.0)
        assert abs(float(other["total"]) - float(loss)) > 1e-4  # the loss sees every per-sample λ


def _successors(cycle: np.ndarray) -> np.ndarray:
    """Partner of sample ``i``: the sample after it in the random cycle ``cycle`` (never ``i`` itself)."""
    successor = np.empty_like(cycle)
    successor[cycle] = np.roll(cycle, -1)
    return successor


def test_cromo_within_task_never_reads_memory(barlow):
    s = barlow
    nan_memory = s.batch._replace(memory1=jnp.full_like(s.batch.memory1, jnp.nan),
                                  memory2=jnp.full_like(s.batch.memory2, jnp.nan))
    loss, _ = run_setup(_cromo(s, input_mixup="within_task"), s, batch=nan_memory)
    order = _successors(np.asarray(expected_draws(s.key)["within_task_cycle"]))[:R]
    assert np.all(order != np.arange(R))  # nobody is mixed with itself
    views = (s.batch.view1, s.batch.view2)
    expected = cromo_eq5(s.method, s.predictor, s.params, s.state, s.old, views,
                         tuple(x[order] for x in views), jnp.full((R,), 0.7), 1.0, 1.0)
    close(loss, expected["total"])


def test_cromo_same_model_never_calls_the_old_model(barlow):
    s = barlow
    nan_old = jax.tree_util.tree_map(lambda a: jnp.full_like(a, jnp.nan), s.old)
    strategy = _cromo(s, output_mixup="same_model", distill_weight=0.0)
    loss, _ = run_setup(strategy, s, old=nan_old)
    views, memory = (s.batch.view1, s.batch.view2), (s.batch.memory1, s.batch.memory2)
    expected = cromo_eq5(s.method, s.predictor, s.params, s.state, s.old, views, memory,
                         jnp.full((R,), 0.7), 0.0, 1.0, partner_model="current")
    close(loss, expected["total"])


def test_cromo_old_model_gets_no_gradient_and_nothing_written_back(barlow):
    s = barlow
    strategy = _cromo(s)
    grads = grad_wrt_old(strategy, s.method, s.params, s.state, s.batch, s.old, s.key)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(s.old)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert not np.any(np.asarray(leaf)), "gradient reached the old model"
    other_old = {"params": _perturbed(s.old["params"], 7, 0.05), "batch_stats": s.old["batch_stats"]}
    _, (_, state_a) = run_setup(strategy, s)
    _, (_, state_b) = run_setup(strategy, s, old=other_old)
    for a, b in zip(jax.tree_util.tree_leaves(state_a.batch_stats), jax.tree_util.tree_leaves(state_b.batch_stats)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # old-model statistics never leak


# --- CroMo-Mixup: the official trainers' forms -------------------------------------------------------
@pytest.fixture(scope="module")
def corinfomax() -> Setup:
    return make_setup("corinfomax", 4)


@functools.partial(jax.jit, static_argnames=("method", "predictor", "with_mixed", "normalize_input"))
def cromo_parts(method, predictor, params, state, old, views, partners, lam, with_mixed=False,
                normalize_input=False):
    """Per view, recomputed without the strategy: the current and mixed projections (one forward pass
    of [x; x_mix]), the old model's projections of [x; x_M] and ``h`` of the current projections
    (run on [z; z_mix] when ``with_mixed``, on L2-normalised inputs when ``normalize_input``)."""
    out = []
    for x, partner in zip(views, partners):
        mixed = lam * x[:R] + (1.0 - lam) * partner
        both = _embed(method, _current(params, state), jnp.concatenate([x, mixed])).projection
        old_both = _embed(method, old, jnp.concatenate([x, partner])).projection
        h_input = both if with_mixed else both[:B]
        if normalize_input:
            h_input = h_input / jnp.linalg.norm(h_input, axis=1, keepdims=True)
        predicted = _predict(predictor, params, state, h_input)[:B]
        out.append({"current": both[:B], "mixed": both[B:], "old_current": old_both[:B], "old_partner": old_both[B:],
                    "predicted": predicted})
    return out


def _parts(s: Setup, **kwargs):
    views, memory = (s.batch.view1, s.batch.view2), (s.batch.memory1, s.batch.memory2)
    return cromo_parts(s.method, s.predictor, s.params, s.state, s.old, views, memory, 0.7, **kwargs)


def np_corinfomax_log_det(a, b, la=0.01, eps=1e-8):
    """``-(logdet(R_a) + logdet(R_b)) / D`` from the initial state (R = I, μ = 0), one update."""
    d = a.shape[1]
    total = 0.0
    for z in (_np(a), _np(b)):
        centred = z - (1.0 - la) * z.mean(axis=0)
        r = la * np.eye(d) + (1.0 - la) * centred.T @ centred / len(z)
        total += np.linalg.slogdet(r + eps * np.eye(d))[1]
    return -total / d


def test_cromo_mixup_scored_with_barlow_twins_on_normalised_embeddings(corinfomax):
    """The official CorInfoMax trainer: Eq. 4 with BarlowTwinsLoss(5e-3, scale 0.1) on L2-normalised z."""
    s = corinfomax
    _, (metrics, _) = run_setup(_cromo(s, mixup_loss="barlow_twins"), s)
    expected = 0.0
    for v in _parts(s):
        mix, current, partner = _unit(v["mixed"]), _unit(v["current"][:R]), _unit(v["old_partner"])
        expected += (0.7 * np_barlow_twins(mix, current, 5e-3, 0.1, 0.0, True)
                     + 0.3 * np_barlow_twins(mix, partner, 5e-3, 0.1, 0.0, True))
    close(metrics["cromo"], expected)
    _, (with_ssl, _) = run_setup(_cromo(s), s)
    assert abs(float(with_ssl["cromo"]) - expected) > 1e-2


def test_cromo_corinfomax_distillation_split_across_the_views(corinfomax):
    """The official CorInfoMax trainer: 250·MSE(p², z̄²) + cov(p¹, z̄¹), p = n(h(n(z))), z̄ normalised."""
    s = corinfomax
    _, (metrics, state) = run_setup(_cromo(s, distill_form="split_views"), s)
    v1, v2 = _parts(s, normalize_input=True)
    p1, p2, old1, old2 = (_unit(x) for x in (v1["predicted"], v2["predicted"], v1["old_current"], v2["old_current"]))
    expected = 250.0 * np.mean((p2 - old2) ** 2) + np_corinfomax_log_det(p1, old1)
    close(metrics["distill"], expected)
    mu = 0.99 * np.stack([p1.mean(axis=0), old1.mean(axis=0)])
    close(np.stack([state.loss_state["distill"].mu1, state.loss_state["distill"].mu2]), mu)
    _, (per_view, _) = run_setup(_cromo(s), s)
    assert abs(float(per_view["distill"]) - expected) > 1e-2


def test_cromo_distillation_predictor_sees_the_mixed_rows(byol):
    """The official BYOL trainer runs h on [z; z_mix] and distils the current rows (2 − 2 cos to z̄)."""
    s = byol
    _, (metrics, _) = run_setup(_cromo(s, distill_input="current_and_mixed"), s)
    expected = sum(np.mean(2.0 - 2.0 * _cos(v["predicted"], v["old_current"])) for v in _parts(s, with_mixed=True))
    close(metrics["distill"], expected)
    _, (current_only, _) = run_setup(_cromo(s), s)
    reference = sum(np.mean(2.0 - 2.0 * _cos(v["predicted"], v["old_current"])) for v in _parts(s))
    close(current_only["distill"], reference)
    assert abs(expected - reference) > 1e-4  # h's BatchNorm statistics span the mixed rows


# --- ER, CaSSLe, CaSSLe+ ---------------------------------------------------------------------------
def _with_memory(s: Setup):
    return (jnp.concatenate([s.batch.view1, s.batch.memory1]), jnp.concatenate([s.batch.view2, s.batch.memory2]))


def test_er_concatenates_the_replay_rows(barlow):
    loss, _ = run_setup(ExperienceReplay(), barlow)
    close(loss, ssl_reference(barlow, *_with_memory(barlow)))


def test_cassle_distillation_term_and_weight(barlow):
    s = barlow
    loss, (metrics, _) = run_setup(CaSSLe(distill_weight=0.5, distill_predictor=s.predictor), s)
    ssl, distill = ssl_and_distill(s.method, s.predictor, s.params, s.state, s.old, s.batch.view1, s.batch.view2)
    close(metrics["ssl"], ssl)
    close(metrics["distill"], distill)
    close(loss, ssl + 0.5 * distill)
    assert float(distill) > 1e-3  # the old model differs from the current one


def test_cassle_plus_concatenates_the_replay_rows(barlow):
    s = barlow
    loss, _ = run_setup(CaSSLePlus(distill_predictor=s.predictor), s)
    ssl, distill = ssl_and_distill(s.method, s.predictor, s.params, s.state, s.old, *_with_memory(s))
    close(loss, ssl + distill)


# --- LUMP ----------------------------------------------------------------------------------------
@jax.jit
def _lump_views(x, memory, lam):
    # Mixed under jit like the strategy: Barlow Twins on 8 rows amplifies a 1-ulp rounding
    # difference in the images about a hundredfold.
    return jnp.concatenate([lam * x[:R] + (1.0 - lam) * memory, x[R:]])


def test_lump_mixes_the_first_rows_with_one_beta_draw(barlow):
    s = barlow
    loss, (metrics, _) = run_setup(LUMP(), s)
    lam = expected_draws(s.key)["lump"]
    close(metrics["lambda"], lam)
    views = [_lump_views(x, memory, lam) for x, memory in ((s.batch.view1, s.batch.memory1),
                                                             (s.batch.view2, s.batch.memory2))]
    close(loss, ssl_reference(s, *views))


def test_lump_with_the_current_views_as_memory_is_plain_ssl(barlow):
    s = barlow
    same = s.batch._replace(memory1=s.batch.view1[:R], memory2=s.batch.view2[:R])
    loss, _ = run_setup(LUMP(), s, batch=same)
    close(loss, ssl_reference(s, s.batch.view1, s.batch.view2))


# --- EWC -----------------------------------------------------------------------------------------
def test_ewc_penalty_matches_numpy(barlow):
    s = barlow
    model = s.params["model"]
    fisher = jax.tree_util.tree_map(np.abs, _perturbed(jax.tree_util.tree_map(np.zeros_like, model), 3, 1.0))
    anchor = _perturbed(model, 4, 0.01)
    weight = 10.0
    loss, (metrics, _) = run_setup(EWC(weight=weight), s, strategy_state={"fisher": fisher, "anchor": anchor})
    expected = 0.5 * weight * sum(
        np.sum(np.asarray(f, np.float64) * (np.asarray(p, np.float64) - np.asarray(a, np.float64)) ** 2)
        for f, p, a in zip(*(jax.tree_util.tree_leaves(t) for t in (fisher, model, anchor)))
    )
    assert expected > 1e-3
    close(metrics["ewc"], expected)
    close(loss, ssl_reference(s, s.batch.view1, s.batch.view2) + expected)
    _, (at_anchor, _) = run_setup(EWC(weight=weight), s, strategy_state={"fisher": fisher, "anchor": model})
    assert float(at_anchor["ewc"]) == 0.0


# --- DER -----------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("method",))
def _projection(method, variables, images):
    return _embed(method, variables, images).projection


def test_der_term_is_the_mse_to_stored_features(barlow):
    s = barlow
    loss, (metrics, _) = run_setup(DER(weight=0.5), s)
    z = np.asarray(_projection(s.method, _current(s.params, s.state), s.batch.memory1), np.float64)
    stored = np.asarray(s.batch.memory_features, np.float64)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    expected = np.mean((unit(z) - unit(stored)) ** 2)
    close(metrics["der"], expected)
    close(loss, ssl_reference(s, s.batch.view1, s.batch.view2) + 0.5 * expected)


# --- Sy-CON / PNR --------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("method", "predictor"))
def sycon_inputs(method, predictor, params, state, batch, old):
    """Per view: current projection z, prediction q (BYOL), EMA key t, g(z) and the old projection."""
    out = {}
    for v, x in (("1", batch.view1), ("2", batch.view2)):
        e = _embed(method, _current(params, state), x)
        out["z" + v], out["g" + v] = e.projection, _predict(predictor, params, state, e.projection)
        out["old" + v] = _embed(method, old, x).projection
        if e.prediction is not None:
            out["q" + v] = e.prediction
        if method.uses_target:
            out["t" + v] = _embed(method, state.target, x).projection
    return out


def _np(x):
    return np.asarray(x, np.float64)


def _unit(x):
    x = _np(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cos(a, b):
    return np.sum(_unit(a) * _unit(b), axis=1)


def np_sycon_simclr(z1, z2, o1, o2, g1, g2, tau):
    """(P) and (S) of the SimCLR form, one anchor at a time."""
    z, o, g = _unit(np.concatenate([z1, z2])), _unit(np.concatenate([o1, o2])), _unit(np.concatenate([g1, g2]))
    n2 = len(z)
    plasticity, stability = [], []
    for i in range(n2):
        others = [j for j in range(n2) if j != i]
        denominator = sum(np.exp(z[i] @ z[j] / tau) + np.exp(z[i] @ o[j] / tau) for j in others)
        plasticity.append(np.log(denominator) - z[i] @ z[(i + n2 // 2) % n2] / tau)
        denominator = sum(np.exp(g[i] @ o[j] / tau) for j in range(n2)) + sum(np.exp(g[i] @ z[j] / tau) for j in others)
        stability.append(np.log(denominator) - g[i] @ o[i] / tau)
    return np.mean(plasticity), np.mean(stability)


def np_info_nce(queries, keys, negatives, tau):
    q, k, n = _unit(queries), _unit(keys), _unit(negatives)
    positive = np.sum(q * k, axis=1) / tau
    return np.mean(np.log(np.exp(positive) + np.exp(q @ n.T / tau).sum(axis=1)) - positive)


def np_barlow_twins(a, b, lambda_offdiag, scale, eps, unbiased_std):
    a, b = _np(a), _np(b)
    n = len(a)

    def standardize(x):
        centred = x - x.mean(axis=0)
        return centred / np.sqrt((centred ** 2).sum(axis=0) / (n - 1 if unbiased_std else n) + eps)

    c = standardize(a).T @ standardize(b) / n
    off = c - np.diag(np.diag(c))
    return scale * (np.sum((1.0 - np.diag(c)) ** 2) + lambda_offdiag * np.sum(off ** 2))


@pytest.fixture(scope="module")
def simclr() -> Setup:
    return make_setup("simclr", 1)


@pytest.fixture(scope="module")
def mocov2() -> Setup:
    s = make_setup("mocov2", 2, queue_size=32)
    dim = s.method.model.projector.out_dim
    old_queue = _unit(np.random.default_rng(9).standard_normal((2, 32, dim))).astype(np.float32)
    loss_state = {**s.state.loss_state, "distill": {"queue": old_queue, "ptr": jnp.zeros((), jnp.int32)}}
    return s._replace(state=s.state.replace(loss_state=loss_state))


@pytest.fixture(scope="module")
def byol() -> Setup:
    return make_setup("byol", 3)


def test_sycon_simclr_terms_match_numpy(simclr):
    s, tau = simclr, 0.3
    loss, (metrics, _) = run_setup(SyCON(ssl_method="simclr", temperature=tau, stability_weight=0.5,
                                         distill_predictor=s.predictor), s)
    x = sycon_inputs(s.method, s.predictor, s.params, s.state, s.batch, s.old)
    plasticity, stability = np_sycon_simclr(x["z1"], x["z2"], x["old1"], x["old2"], x["g1"], x["g2"], tau)
    close(metrics["plasticity"], plasticity)
    close(metrics["stability"], stability)
    close(loss, plasticity + 0.5 * stability)


def test_sycon_mocov2_terms_and_queues_match_numpy(mocov2):
    """PNR's MoCo v2+ form: the direction whose query is view v takes both queues of view v' as negatives."""
    s, tau = mocov2, 0.2
    loss, (metrics, state) = run_setup(SyCON(ssl_method="mocov2", temperature=tau, distill_predictor=s.predictor), s)
    x = sycon_inputs(s.method, s.predictor, s.params, s.state, s.batch, s.old)
    queue, old_queue = _np(s.state.loss_state["ssl"]["queue"]), _np(s.state.loss_state["distill"]["queue"])
    negatives = [np.concatenate([queue[v], old_queue[v]]) for v in (0, 1)]
    plasticity = 0.5 * (np_info_nce(x["z1"], x["t2"], negatives[1], tau) + np_info_nce(x["z2"], x["t1"], negatives[0], tau))
    stability = 0.5 * (np_info_nce(x["g1"], x["old1"], negatives[1], tau)
                       + np_info_nce(x["g2"], x["old2"], negatives[0], tau))
    close(metrics["plasticity"], plasticity)
    close(metrics["stability"], stability)
    close(loss, plasticity + stability)
    for slot, keys, before in (("ssl", ("t1", "t2"), queue), ("distill", ("old1", "old2"), old_queue)):
        after = state.loss_state[slot]
        for view, key in enumerate(keys):
            close(after["queue"][view, :B], _unit(x[key]))
            close(after["queue"][view, B:], before[view, B:])
        assert int(after["ptr"]) == B


def test_sycon_byol_pseudo_negative_matches_numpy(byol):
    s = byol
    loss, (metrics, _) = run_setup(SyCON(ssl_method="byol", stability_weight=2.0, distill_predictor=s.predictor), s)
    x = sycon_inputs(s.method, s.predictor, s.params, s.state, s.batch, s.old)

    def byol_np(p, z):
        return np.mean(2.0 - 2.0 * _cos(p, z))

    ssl = 0.5 * (byol_np(x["q1"], x["t2"]) + byol_np(x["q2"], x["t1"]))
    stability = 0.5 * (byol_np(x["g1"], x["old1"]) + byol_np(x["g2"], x["old2"]))
    negative = 0.5 * (byol_np(x["g1"], x["old2"]) + byol_np(x["g2"], x["old1"]))
    close(metrics["ssl"], ssl)
    close(metrics["stability"], stability)
    close(metrics["pseudo_negative"], negative)
    close(loss, ssl + 2.0 * stability - 0.5 * negative)


def test_sycon_barlow_pseudo_negative_matches_numpy(barlow):
    s = barlow
    loss, (metrics, _) = run_setup(SyCON(ssl_method="barlow_twins", distill_predictor=s.predictor), s)
    x = sycon_inputs(s.method, s.predictor, s.params, s.state, s.batch, s.old)
    kw = dict(s.method.loss_kwargs)
    ssl = np_barlow_twins(x["z1"], x["z2"], **kw)
    stability = 0.5 * (np_barlow_twins(x["g1"], x["old1"], **kw) + np_barlow_twins(x["g2"], x["old2"], **kw))
    negative = 0.5 * (np.mean(-_cos(x["g1"], x["old2"])) + np.mean(-_cos(x["g2"], x["old1"])))
    close(metrics["ssl"], ssl)
    close(metrics["stability"], stability)
    close(metrics["pseudo_negative"], negative)
    close(loss, ssl + stability - 1.0 * negative)  # λ = 1: the release's Barlow Twins value


def test_sycon_refuses_objectives_without_a_form():
    with pytest.raises(ValueError, match="corinfomax"):
        SyCON(ssl_method="corinfomax")
    with pytest.raises(ValueError, match="negative_weight"):
        SyCON(ssl_method="simclr", negative_weight=1.0)


def test_build_strategy_makes_sycon_from_the_config():
    config = base_config()
    config.ssl.method, config.strategy.name, config.strategy.old_model_bn = "byol", "sycon", "running"
    config.strategy.sycon.temperature, config.strategy.sycon.stability_weight = 0.1, 0.5
    config.model.head_scale = 1 / 64
    method = build_method("byol", dataset="synthetic", backbone=ResNet(stage_sizes=(1,), width=8), head_scale=1 / 64)
    strategy = build_strategy(config, method)
    predictor = strategy.distill_predictor
    assert (predictor.hidden_dim, predictor.out_dim) == (32, method.model.projector.out_dim)
    assert strategy == SyCON(ssl_method="byol", temperature=0.1, stability_weight=0.5, old_model_bn="running",
                             distill_predictor=predictor)
    config.ssl.method = "swav"
    with pytest.raises(ValueError, match="swav"):
        build_strategy(config, method)
