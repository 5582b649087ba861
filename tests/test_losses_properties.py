"""Closed forms, invariants, stop-gradients, state updates and input errors of jaxcssl.losses."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jitted_losses import jl

from jaxcssl import losses

N, D = 16, 8


def rand(seed, shape=(N, D), scale=1.0, shift=0.0):
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape) + shift, jnp.float32)


def orthogonal_centred(n, d, norm):
    """``[n, d]`` with centred, mutually orthogonal columns of Euclidean norm ``norm``."""
    a = np.random.default_rng(0).normal(size=(n, d))
    q, _ = np.linalg.qr(a - a.mean(0))  # columns span centred vectors, so they are centred
    return jnp.asarray(norm * q, jnp.float32)


def one_hot_rows(n, d):
    return jnp.eye(n, d, dtype=jnp.float32)


# ---------------------------------------------------------------- closed forms


def test_barlow_twins_is_zero_at_identity_correlation():
    z = orthogonal_centred(N, D, norm=3.0)
    np.testing.assert_allclose(np.asarray(jl.cross_correlation(z, z, eps=0.0)), np.eye(D), atol=1e-5)
    assert float(jl.barlow_twins(z, z, eps=0.0)) < 1e-8
    assert float(jl.barlow_twins(z, rand(1))) > 1.0


def test_barlow_twins_symmetric_and_affine_invariant():
    z1, z2 = rand(1), rand(2)
    np.testing.assert_allclose(jl.barlow_twins(z1, z2), jl.barlow_twins(z2, z1), rtol=1e-6)
    scale = jnp.asarray(np.random.default_rng(3).uniform(0.5, 2.0, size=D), jnp.float32)
    moved = jl.barlow_twins(z1 * scale + 4.0, z2, eps=0.0)
    np.testing.assert_allclose(moved, jl.barlow_twins(z1, z2, eps=0.0), rtol=1e-4)


def test_barlow_twins_grouped_equals_per_group_calls():
    z1, z2 = rand(1, (24, D)), rand(2, (24, D))
    grouped = jl.barlow_twins_grouped(z1, z2, 6, 1e-2, 0.5)
    calls = [jl.barlow_twins(z1[g : g + 6], z2[g : g + 6], 1e-2, 0.5) for g in range(0, 24, 6)]
    np.testing.assert_allclose(grouped, jnp.stack(calls), rtol=1e-5)


def test_simclr_per_sample_mean_is_twice_the_loss():
    z1, z2 = rand(1), rand(2)
    per_sample = jl.simclr_per_sample(z1, z2, 0.3)
    np.testing.assert_allclose(jnp.mean(per_sample), 2 * jl.simclr(z1, z2, 0.3), rtol=1e-6)


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_simclr_and_info_nce_aligned_orthogonal_closed_form(t):
    """Views equal one-hot rows: positive cosine 1, every negative cosine 0."""
    z = one_hot_rows(N, N)
    tol = {"rtol": 1e-4, "atol": 1e-6}  # at t=0.1 the loss is ~1e-3, a difference of two ~10s
    simclr_want = math.log(1 + (2 * N - 2) * math.exp(-1 / t))
    np.testing.assert_allclose(jl.simclr(z, z, t), simclr_want, **tol)
    np.testing.assert_allclose(jl.simclr_per_sample(z, z, t), np.full(N, 2 * simclr_want), **tol)
    info_want = math.log(1 + (N - 1) * math.exp(-1 / t))
    np.testing.assert_allclose(jl.info_nce(z, z, t), info_want, **tol)
    # Extra negatives -z: for q_i one antipodal (cosine -1) and N - 1 orthogonal ones (cosine 0).
    extra_want = math.log(1 + (2 * N - 2) * math.exp(-1 / t) + math.exp(-2 / t))
    np.testing.assert_allclose(jl.info_nce(z, z, t, extra_negatives=-z), extra_want, **tol)


def test_byol_simsiam_closed_forms():
    z = rand(1)
    np.testing.assert_allclose(jl.byol(3.0 * z, z), 0.0, atol=1e-6)
    np.testing.assert_allclose(jl.byol(-z, z), 4.0, rtol=1e-6)
    np.testing.assert_allclose(jl.simsiam(z, 2.0 * z), -1.0, rtol=1e-6)


def test_vicreg_is_zero_for_whitened_identical_views():
    z = orthogonal_centred(N, D, norm=math.sqrt(N - 1))  # unit unbiased variance, no covariance
    assert abs(float(jl.vicreg(z, z))) < 1e-6
    assert float(jl.vicreg(0.1 * z, 0.1 * z)) > 20.0  # std 0.1: variance hinge 25 * 2 * 0.9


def test_corinfomax_memoryless_state_is_batch_statistics():
    z1, z2 = rand(1, shift=0.3), rand(2)
    state = losses.corinfomax_init_state(D)
    loss, state = jl.corinfomax(z1, z2, state, la_R=0.0, la_mu=0.0, normalize=False)
    for z, r, mu in ((z1, state.R1, state.mu1), (z2, state.R2, state.mu2)):
        np.testing.assert_allclose(mu, np.mean(np.asarray(z), 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r, np.cov(np.asarray(z), rowvar=False, bias=True), rtol=1e-4, atol=1e-6)
    logdets = sum(np.linalg.slogdet(np.cov(np.asarray(z), rowvar=False, bias=True))[1] for z in (z1, z2))
    want = 250.0 * np.mean((np.asarray(z1) - np.asarray(z2)) ** 2) - logdets / D
    np.testing.assert_allclose(loss, want, rtol=1e-4)


def test_corinfomax_init_state():
    state = losses.corinfomax_init_state(4, r_init=2.0)
    assert isinstance(state, losses.CorInfoMaxState)
    np.testing.assert_array_equal(state.R1, 2.0 * np.eye(4))
    np.testing.assert_array_equal(state.mu2, np.zeros(4))
    assert len(jax.tree_util.tree_leaves(state)) == 4


def test_sinkhorn_knopp_marginals():
    scores = rand(1, (N, 5), scale=0.5)
    codes = jl.sinkhorn_knopp(scores)
    np.testing.assert_allclose(jnp.sum(codes, 1), np.ones(N), rtol=1e-5)  # each sample is an assignment
    converged = jl.sinkhorn_knopp(scores, iterations=100)
    np.testing.assert_allclose(jnp.sum(converged, 0), np.full(5, N / 5), rtol=1e-3)  # equipartition


def test_whiten_gives_identity_covariance_and_wmse_zero_for_equal_views():
    x = rand(1, (32, D), shift=2.0) @ (rand(2, (D, D), scale=0.3) + jnp.eye(D))
    w = jl.whiten(x)
    np.testing.assert_allclose(np.cov(np.asarray(w), rowvar=False), np.eye(D), atol=1e-4)
    np.testing.assert_allclose(jl.wmse(x, x, whitening_size=16), 0.0, atol=1e-5)


def test_wmse_rng_permutes_both_views_alike():
    z1, z2 = rand(1, (64, 4)), rand(2, (64, 4))
    key = jax.random.key(0)
    perm = jax.random.permutation(key, 64)
    shuffled = jl.wmse(z1, z2, whitening_size=16, rng=key)
    np.testing.assert_allclose(shuffled, jl.wmse(z1[perm], z2[perm], whitening_size=16), rtol=1e-6)
    assert float(shuffled) != float(jl.wmse(z1, z2, whitening_size=16))


def test_mocov2_enqueue_is_a_fifo_ring_buffer_per_view():
    queue, ptr = losses.mocov2_init_queue(jax.random.key(0), 10, D)
    assert queue.shape == (2, 10, D)
    np.testing.assert_allclose(jnp.linalg.norm(queue, axis=-1), np.ones((2, 10)), rtol=1e-5)
    enqueue = jax.jit(losses.mocov2_enqueue)
    written = []
    for step in range(4):
        keys = rand(step, (2, 4, D))
        queue, ptr = enqueue(queue, ptr, keys)
        written.append(np.asarray(keys) / np.linalg.norm(np.asarray(keys), axis=-1, keepdims=True))
    assert int(ptr) == 16 % 10
    for view in range(2):
        latest = np.concatenate([w[view] for w in written])[-10:]  # 10 newest keys of the view, oldest first
        expected = np.roll(latest, int(ptr), axis=0)  # row r holds the key written at position r (mod 10)
        np.testing.assert_allclose(queue[view], expected, rtol=1e-6)
    assert queue.dtype == jnp.float32 and ptr.dtype == jnp.int32


# ---------------------------------------------------------------- stop-gradients


def test_byol_and_simsiam_stop_gradient_on_target():
    p, z = rand(1), rand(2)
    for loss in (losses.byol, losses.simsiam):
        gp, gz = jax.grad(loss, argnums=(0, 1))(p, z)
        assert float(jnp.max(jnp.abs(gz))) == 0.0
        assert float(jnp.max(jnp.abs(gp))) > 0.0


def test_mocov2_no_gradient_to_keys_or_queue():
    q, k, queue = rand(1), rand(2), rand(3, (20, D))
    gq, gk, gqueue = jax.grad(losses.mocov2, argnums=(0, 1, 2))(q, k, queue)
    assert float(jnp.max(jnp.abs(gk))) == 0.0 and float(jnp.max(jnp.abs(gqueue))) == 0.0
    assert float(jnp.max(jnp.abs(gq))) > 0.0
    g_keys = jax.grad(lambda k: jnp.sum(jl.mocov2_enqueue(queue, jnp.int32(3), k)[0]))(k)
    assert float(jnp.max(jnp.abs(g_keys))) == 0.0


def test_info_nce_passes_gradients_to_keys_and_negatives():
    q, k, neg = rand(1), rand(2), rand(3, (5, D))
    def loss(q, k, neg):
        return jl.info_nce(q, k, 0.2, extra_negatives=neg)

    _, gk, gn = jax.grad(loss, argnums=(0, 1, 2))(q, k, neg)
    assert float(jnp.max(jnp.abs(gk))) > 0.0 and float(jnp.max(jnp.abs(gn))) > 0.0


def test_swav_codes_carry_no_gradient():
    z1, z2, protos = rand(1), rand(2), rand(3, (6, D))
    g_scores = jax.grad(lambda s: jnp.sum(jl.sinkhorn_knopp(s) ** 2))(rand(4, (N, 6)))
    assert float(jnp.max(jnp.abs(g_scores))) == 0.0

    def scores(a, b, c):
        an, bn, cn = (x / jnp.linalg.norm(x, axis=1, keepdims=True) for x in (a, b, c))
        return jnp.matmul(an, cn.T, precision="highest"), jnp.matmul(bn, cn.T, precision="highest")

    q1, q2 = (jl.sinkhorn_knopp(s) for s in scores(z1, z2, protos))  # constants at the base point

    def cross_entropy(q, s):
        return -jnp.mean(jnp.sum(q * jax.nn.log_softmax(s / 0.1), 1))

    def fixed_codes_loss(a, b, c):
        s1, s2 = scores(a, b, c)
        return 0.5 * (cross_entropy(q2, s1) + cross_entropy(q1, s2))

    got = jax.jit(jax.grad(losses.swav, argnums=(0, 1, 2)))(z1, z2, protos)
    want = jax.jit(jax.grad(fixed_codes_loss, argnums=(0, 1, 2)))(z1, z2, protos)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_corinfomax_state_is_stop_gradient():
    z1, z2 = rand(1), rand(2)
    state = losses.corinfomax_init_state(D)
    g_state = jax.grad(lambda s: jl.corinfomax(z1, z2, s)[0])(state)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree_util.tree_leaves(g_state))
    g_z = jax.grad(lambda a: jnp.sum(jl.corinfomax(a, z2, state)[1].R1))(z1)
    assert float(jnp.max(jnp.abs(g_z))) == 0.0


# ---------------------------------------------------------------- dtypes and errors


def test_bfloat16_inputs_give_float32_losses():
    z1, z2 = rand(1).astype(jnp.bfloat16), rand(2).astype(jnp.bfloat16)
    for loss in (losses.barlow_twins, losses.simclr, losses.byol, losses.vicreg):
        value = loss(z1, z2)
        assert value.dtype == jnp.float32 and np.isfinite(float(value))


def test_bad_inputs_raise_clear_errors():
    z = rand(1)
    with pytest.raises(ValueError, match="group_size=5 must be >= 2 and divide the batch size 16"):
        jl.barlow_twins_grouped(z, z, 5)
    with pytest.raises(ValueError, match="same shape"):
        jl.simclr(z, z[:8])
    with pytest.raises(ValueError, match="has no negatives"):
        jl.info_nce(z, z, 0.1, key_negatives=False)
    with pytest.raises(ValueError, match="whitening_size=8 must exceed the embedding dim 8"):
        jl.wmse(z, z, whitening_size=8)
    with pytest.raises(ValueError, match="does not divide the batch size 16"):
        jl.wmse(z, z, whitening_size=12)
    with pytest.raises(ValueError, match="state is for dim 4"):
        jl.corinfomax(z, z, losses.corinfomax_init_state(4))
    with pytest.raises(ValueError, match="exceeds the queue size 8"):
        jl.mocov2_enqueue(jnp.zeros((8, D)), jnp.int32(0), rand(2, (12, D)))
    with pytest.raises(ValueError, match=r"keys must be \[2, 'N', 8\] for a queue \(2, 8, 8\)"):
        jl.mocov2_enqueue(jnp.zeros((2, 8, D)), jnp.int32(0), rand(2, (4, D)))
    with pytest.raises(ValueError, match=r"queues must be \[2, K, D\]"):
        jl.mocov2_symmetric(z, z, z, z, jnp.zeros((8, D)))
