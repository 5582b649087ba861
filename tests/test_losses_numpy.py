"""Every loss against an independent NumPy float64 implementation: values and gradients.

Values: the jitted float32 loss matches the float64 NumPy reference to rtol 1e-4 (atol 1e-6).
Gradients: the directional derivative <jax.grad(loss)(x), v> (float32) matches a central finite
difference of the NumPy float64 reference along v (h = 1e-5) to rtol 2e-3. For losses with a
stop-gradient the finite difference holds the stopped quantity fixed, as the method intends.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jitted_losses import jl

from jaxcssl import losses

RTOL, ATOL = 1e-4, 1e-6
GRAD_RTOL, GRAD_ATOL = 2e-3, 1e-5
N, D = 32, 16


# ---------------------------------------------------------------- NumPy float64 references


def np_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_barlow(z1, z2, lam=5e-3, scale=1.0, eps=1e-5, ddof=0):
    n = len(z1)
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    a = a / np.sqrt((a**2).sum(0) / (n - ddof) + eps)
    b = b / np.sqrt((b**2).sum(0) / (n - ddof) + eps)
    c = a.T @ b / n
    on = ((1 - np.diag(c)) ** 2).sum()
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    return scale * (on + lam * off)


def np_barlow_eq8(z1, z2, lam=5e-3):
    """CroMo-Mixup Eq. 7-8 literally, with explicit sums over b, i, j."""
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    d = z1.shape[1]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = np.sum(a[:, i] * b[:, j]) / (np.sqrt(np.sum(a[:, i] ** 2)) * np.sqrt(np.sum(b[:, j] ** 2)))
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


def np_simclr_per_sample(z1, z2, t):
    n = len(z1)
    z = np_normalize(np.concatenate([z1, z2]))
    s = z @ z.T / t
    losses = np.empty(2 * n)
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        losses[i] = -s[i, pos] + np.log(np.sum(np.exp(s[i, others])))
    return losses[:n] + losses[n:]


def np_info_nce_per_sample(q, k, t, extra=None, key_negatives=True):
    q, k = np_normalize(q), np_normalize(k)
    out = np.empty(len(q))
    for i in range(len(q)):
        cands = [k[i]] + ([k[j] for j in range(len(k)) if j != i] if key_negatives else [])
        if extra is not None:
            cands += list(np_normalize(extra))
        logits = np.array([q[i] @ c for c in cands]) / t
        out[i] = -logits[0] + np.log(np.sum(np.exp(logits)))
    return out


def np_cos(a, b):
    return np.sum(np_normalize(a) * np_normalize(b), -1)


def np_vicreg(z1, z2, sw=25.0, vw=25.0, cw=1.0):
    d = z1.shape[1]

    def var(z):
        return np.mean(np.maximum(0.0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))

    def cov(z):
        c = np.cov(z, rowvar=False)  # unbiased
        return (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / d

    return sw * np.mean((z1 - z2) ** 2) + vw * (var(z1) + var(z2)) + cw * (cov(z1) + cov(z2))


def np_corinfomax(z1, z2, state, eps=1e-8, la_r=0.01, la_mu=0.01, sw=250.0, cw=1.0, normalize=True):
    r1, r2, m1, m2 = (np.asarray(s, np.float64) for s in state)
    if normalize:
        z1, z2 = np_normalize(z1), np_normalize(z2)
    n, d = z1.shape
    new = []
    for z, r, m in ((z1, r1, m1), (z2, r2, m2)):
        mu = la_mu * m + (1 - la_mu) * z.mean(0)
        zc = z - mu
        new.append((la_r * r + (1 - la_r) * zc.T @ zc / n, mu))
    (r1n, m1n), (r2n, m2n) = new
    cov = -(np.linalg.slogdet(r1n + eps * np.eye(d))[1] + np.linalg.slogdet(r2n + eps * np.eye(d))[1]) / d
    loss = sw * np.mean((z1 - z2) ** 2) + cw * cov
    return loss, (r1n, r2n, m1n, m2n)


def np_mocov2(q, k, queue, t):
    return np.mean(np_info_nce_per_sample(q, k, t, extra=queue, key_negatives=False))


def np_mocov2_symmetric(q1, q2, k1, k2, queues, t):
    """solo-learn's MoCo v2+: each direction against the queue of its key's view."""
    return 0.5 * (np_mocov2(q1, k2, queues[1], t) + np_mocov2(q2, k1, queues[0], t))


def np_sinkhorn(scores, eps=0.05, iters=3):
    q = np.exp(scores / eps).T  # [K, B] as in the SwAV code
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= b
    return (q * b).T


def np_swav(z1, z2, protos, t=0.1, codes=None):
    z1, z2, c = np_normalize(z1), np_normalize(z2), np_normalize(protos)
    s1, s2 = z1 @ c.T, z2 @ c.T
    q1, q2 = codes if codes is not None else (np_sinkhorn(s1), np_sinkhorn(s2))

    def ce(q, s):
        x = s / t
        logp = x - np.log(np.sum(np.exp(x), 1, keepdims=True))
        return -np.mean(np.sum(q * logp, 1))

    return 0.5 * (ce(q2, s1) + ce(q1, s2))


def np_whiten(x, eps=0.0):
    xc = x - x.mean(0)
    cov = np.cov(x, rowvar=False)
    cov = (1 - eps) * cov + eps * np.eye(x.shape[1])
    return xc @ np.linalg.inv(np.linalg.cholesky(cov)).T


def np_wmse(z1, z2, ws, eps=0.0):
    w1 = np.concatenate([np_whiten(z1[i : i + ws], eps) for i in range(0, len(z1), ws)])
    w2 = np.concatenate([np_whiten(z2[i : i + ws], eps) for i in range(0, len(z2), ws)])
    return 2 - 2 * np.mean(np_cos(w1, w2))


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(N, D))
    z2 = 0.7 * z1 + 0.5 * rng.normal(size=(N, D)) + 0.3
    return {
        "z1": z1,
        "z2": z2,
        "extra": rng.normal(size=(12, D)),
        "queue": np_normalize(rng.normal(size=(40, D))),
        "queues": np_normalize(rng.normal(size=(2, 40, D))),
        "protos": rng.normal(size=(10, D)),
        "v": rng.normal(size=(N, D)),
        "state": (
            np.eye(D) + 0.1 * np.cov(rng.normal(size=(64, D)), rowvar=False),
            np.eye(D),
            0.01 * rng.normal(size=D),
            np.zeros(D),
        ),
    }


def f32(x):
    return jnp.asarray(x, jnp.float32)


def assert_close(actual, desired, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=rtol, atol=atol)


def check_directional_derivative(jax_fn, np_fn, x, v, h=1e-5):
    """<grad jax_fn(x), v> (float32 autodiff) vs central difference of np_fn along v (float64)."""
    g = jax.jit(jax.grad(jax_fn))(f32(x))
    analytic = float(np.sum(np.asarray(g, np.float64) * v))
    numeric = (np_fn(x + h * v) - np_fn(x - h * v)) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# ---------------------------------------------------------------- Barlow Twins


def test_barlow_twins_value(data):
    z1, z2 = data["z1"], data["z2"]
    assert_close(jl.barlow_twins(f32(z1), f32(z2)), np_barlow(z1, z2))


def test_barlow_twins_is_eq8_when_eps_is_zero(data):
    z1, z2 = data["z1"][:, :8], data["z2"][:, :8]
    assert_close(jl.barlow_twins(f32(z1), f32(z2), eps=0.0), np_barlow_eq8(z1, z2))


def test_barlow_twins_reproduces_reference_scale_and_std(data):
    """CroMo-Mixup BarlowTwinsLoss: torch.std (N-1) standardisation, c / N, times scale_loss=0.025."""
    z1, z2 = data["z1"], data["z2"]
    got = jl.barlow_twins(f32(z1), f32(z2), 5e-3, 0.025, eps=0.0, unbiased_std=True)
    assert_close(got, np_barlow(z1, z2, 5e-3, 0.025, eps=0.0, ddof=1))


def test_barlow_twins_grouped_value(data):
    z1, z2 = data["z1"], data["z2"]
    got = jl.barlow_twins_grouped(f32(z1), f32(z2), 8)
    want = [np_barlow(z1[g : g + 8], z2[g : g + 8]) for g in range(0, N, 8)]
    assert got.shape == (N // 8,)
    assert_close(got, np.array(want))


def test_barlow_twins_gradient(data):
    z1, z2, v = data["z1"], data["z2"], data["v"]
    check_directional_derivative(
        lambda a: jl.barlow_twins(a, f32(z2)), lambda a: np_barlow(a, z2), z1, v
    )


# ---------------------------------------------------------------- SimCLR / InfoNCE / MoCo


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_simclr_value(data, temperature):
    z1, z2 = data["z1"], data["z2"]
    per = np_simclr_per_sample(z1, z2, temperature)
    assert_close(jl.simclr_per_sample(f32(z1), f32(z2), temperature), per)
    assert_close(jl.simclr(f32(z1), f32(z2), temperature), per.sum() / (2 * N))


def test_simclr_gradient(data):
    z1, z2, v = data["z1"], data["z2"], data["v"]
    check_directional_derivative(
        lambda a: jl.simclr(a, f32(z2), 0.5),
        lambda a: np_simclr_per_sample(a, z2, 0.5).sum() / (2 * N),
        z1,
        v,
    )


@pytest.mark.parametrize("key_negatives, use_extra", [(True, False), (True, True), (False, True)])
def test_info_nce_value(data, key_negatives, use_extra):
    z1, z2, extra = data["z1"], data["z2"], data["extra"]
    got = jl.info_nce_per_sample(
        f32(z1), f32(z2), 0.2, extra_negatives=f32(extra) if use_extra else None, key_negatives=key_negatives
    )
    want = np_info_nce_per_sample(z1, z2, 0.2, extra if use_extra else None, key_negatives)
    assert_close(got, want)
    assert_close(
        jl.info_nce(f32(z1), f32(z2), 0.2, extra_negatives=f32(extra) if use_extra else None,
                   key_negatives=key_negatives),
        want.mean(),
    )


def test_info_nce_gradient(data):
    z1, z2, extra, v = data["z1"], data["z2"], data["extra"], data["v"]
    check_directional_derivative(
        lambda q: jl.info_nce(q, f32(z2), 0.2, extra_negatives=f32(extra)),
        lambda q: np_info_nce_per_sample(q, z2, 0.2, extra).mean(),
        z1,
        v,
    )


def test_mocov2_value_and_gradient(data):
    z1, z2, queue, v = data["z1"], data["z2"], data["queue"], data["v"]
    assert_close(jl.mocov2(f32(z1), f32(z2), f32(queue)), np_mocov2(z1, z2, queue, 0.2))
    check_directional_derivative(
        lambda q: jl.mocov2(q, f32(z2), f32(queue)), lambda q: np_mocov2(q, z2, queue, 0.2), z1, v
    )


def test_mocov2_symmetric_value_and_gradient(data):
    z1, z2, queues, v = data["z1"], data["z2"], data["queues"], data["v"]
    k1, k2 = z2[::-1], z1[::-1]  # keys other than the queries' partners
    got = jl.mocov2_symmetric(f32(z1), f32(z2), f32(k1), f32(k2), f32(queues))
    assert_close(got, np_mocov2_symmetric(z1, z2, k1, k2, queues, 0.2))
    one_queue = 0.5 * (np_mocov2(z1, k2, queues.reshape(-1, D), 0.2) + np_mocov2(z2, k1, queues.reshape(-1, D), 0.2))
    assert abs(float(got) - one_queue) > 1e-2  # a shared queue of both views' keys is another loss
    check_directional_derivative(
        lambda q: jl.mocov2_symmetric(q, f32(z2), f32(k1), f32(k2), f32(queues)),
        lambda q: np_mocov2_symmetric(q, z2, k1, k2, queues, 0.2), z1, v,
    )


# ---------------------------------------------------------------- BYOL / SimSiam / VICReg


def test_byol_and_simsiam_values_and_gradients(data):
    p, z, v = data["z1"], data["z2"], data["v"]
    assert_close(jl.byol_per_sample(f32(p), f32(z)), 2 - 2 * np_cos(p, z))
    assert_close(jl.byol(f32(p), f32(z)), np.mean(2 - 2 * np_cos(p, z)))
    assert_close(jl.simsiam_per_sample(f32(p), f32(z)), -np_cos(p, z))
    assert_close(jl.simsiam(f32(p), f32(z)), -np.mean(np_cos(p, z)))
    check_directional_derivative(lambda a: jl.byol(a, f32(z)), lambda a: np.mean(2 - 2 * np_cos(a, z)), p, v)
    check_directional_derivative(lambda a: jl.simsiam(a, f32(z)), lambda a: -np.mean(np_cos(a, z)), p, v)


def test_vicreg_value_and_gradient(data):
    # Small embeddings so that some standard deviations fall below 1 and the hinge is active.
    z1, z2, v = 0.8 * data["z1"], 0.8 * data["z2"], data["v"]
    assert_close(jl.vicreg(f32(z1), f32(z2)), np_vicreg(z1, z2))
    assert_close(jl.vicreg_invariance_per_sample(f32(z1), f32(z2)), np.mean((z1 - z2) ** 2, 1))
    check_directional_derivative(lambda a: jl.vicreg(a, f32(z2)), lambda a: np_vicreg(a, z2), z1, v)


# ---------------------------------------------------------------- CorInfoMax


def test_corinfomax_three_steps_thread_state(data):
    """Loss and running R / mu follow the reference over consecutive batches."""
    rng = np.random.default_rng(1)
    step = jax.jit(functools.partial(losses.corinfomax, la_R=0.1, la_mu=0.2))
    state = losses.corinfomax_init_state(D)
    np_state = (np.eye(D), np.eye(D), np.zeros(D), np.zeros(D))
    for _ in range(3):
        z1 = rng.normal(size=(N, D)) + 0.5
        z2 = z1 + 0.3 * rng.normal(size=(N, D))
        loss, state = step(f32(z1), f32(z2), state)
        want, np_state = np_corinfomax(z1, z2, np_state, la_r=0.1, la_mu=0.2)
        assert_close(loss, want)
        for got_s, want_s in zip(state, np_state, strict=True):
            assert_close(got_s, want_s, atol=1e-6)


def test_corinfomax_defaults_and_gradient(data):
    z1, z2, v, st = data["z1"], data["z2"], data["v"], data["state"]
    state = losses.CorInfoMaxState(*(f32(s) for s in st))
    loss, _ = jl.corinfomax(f32(z1), f32(z2), state)
    assert_close(loss, np_corinfomax(z1, z2, st)[0])
    unnormalised, _ = jl.corinfomax(f32(z1), f32(z2), state, normalize=False)
    assert_close(unnormalised, np_corinfomax(z1, z2, st, normalize=False)[0])
    check_directional_derivative(
        lambda a: jl.corinfomax(a, f32(z2), state)[0], lambda a: np_corinfomax(a, z2, st)[0], z1, v
    )


# ---------------------------------------------------------------- SwAV / W-MSE


def test_sinkhorn_knopp_value(data):
    scores = np_normalize(data["z1"]) @ np_normalize(data["protos"]).T
    assert_close(jl.sinkhorn_knopp(f32(scores)), np_sinkhorn(scores), atol=1e-6)


def test_swav_value_and_gradient(data):
    z1, z2, protos, v = data["z1"], data["z2"], data["protos"], data["v"]
    assert_close(jl.swav(f32(z1), f32(z2), f32(protos)), np_swav(z1, z2, protos))
    c = np_normalize(protos)
    codes = (np_sinkhorn(np_normalize(z1) @ c.T), np_sinkhorn(np_normalize(z2) @ c.T))  # held fixed
    check_directional_derivative(
        lambda a: jl.swav(a, f32(z2), f32(protos)), lambda a: np_swav(a, z2, protos, codes=codes), z1, v
    )
    vp = np.random.default_rng(2).normal(size=protos.shape)
    check_directional_derivative(
        lambda p: jl.swav(f32(z1), f32(z2), p), lambda p: np_swav(z1, z2, p, codes=codes), protos, vp
    )


def test_wmse_value_and_gradient():
    rng = np.random.default_rng(3)
    z1 = rng.normal(size=(48, 6))
    z2 = z1 + 0.5 * rng.normal(size=(48, 6))
    v = rng.normal(size=z1.shape)
    wmse = jax.jit(functools.partial(losses.wmse, whitening_size=16))
    assert_close(wmse(f32(z1), f32(z2)), np_wmse(z1, z2, 16))
    assert_close(jl.wmse(f32(z1), f32(z2), whitening_size=16, eps=0.1), np_wmse(z1, z2, 16, eps=0.1))
    check_directional_derivative(
        lambda a: jl.wmse(a, f32(z2), whitening_size=16), lambda a: np_wmse(a, z2, 16), z1, v
    )
