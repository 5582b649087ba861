"""CorInfoMax (Ozsoy et al., 2022): log-determinant mutual information with running statistics.

CroMo-Mixup appendix D.3, Eq. 9-10, as implemented by the official code's ``CovarianceLoss`` and
``invariance_loss`` (``trainers/train_infomax.py``):

* ``mu[l] = la_mu * mu[l-1] + (1 - la_mu) * mean_b z_b``
* ``R[l] = la_R * R[l-1] + (1 - la_R) * (1/N) (Z - mu[l])^T (Z - mu[l])``            (Eq. 10)
* ``cov = -(logdet(R1[l] + eps I) + logdet(R2[l] + eps I)) / D``
* ``loss = sim_loss_weight * mean((z1 - z2)^2) + cov_loss_weight * cov``              (Eq. 9)

with ``z`` L2-normalised per sample first (``F.normalize``). The reference scales Eq. 9 its own
way: the log-dets are divided by D and the Frobenius term ``2/(eps N) ||Z1 - Z2||_F^2`` becomes
``sim_loss_weight`` (250) times the mean squared error; ``eps`` only regularises the log-dets.

Stop-gradient: the previous estimates ``R[l-1]``, ``mu[l-1]`` are constants (the reference stores
them detached); the gradient flows through the current batch's mean and covariance, including the
current batch's share of ``mu[l]`` used for centring. The returned state is detached.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcssl.losses._common import as_float, check_pair, l2_normalize, matmul


class CorInfoMaxState(NamedTuple):
    """Running auto-covariance ``R`` ``[D, D]`` and mean ``mu`` ``[D]`` of each branch (a pytree)."""

    R1: jax.Array
    R2: jax.Array
    mu1: jax.Array
    mu2: jax.Array


def corinfomax_init_state(dim: int, r_init: float = 1.0, dtype: jnp.dtype = jnp.float32) -> CorInfoMaxState:
    """``R = r_init * I`` and ``mu = 0`` for both branches, as in the reference (``R_ini = 1``)."""
    eye = r_init * jnp.eye(dim, dtype=dtype)
    zeros = jnp.zeros((dim,), dtype)
    # Separate buffers per leaf: a training state holding one buffer twice cannot be donated to jit.
    return CorInfoMaxState(R1=eye, R2=jnp.copy(eye), mu1=zeros, mu2=jnp.copy(zeros))


def _update(z: jax.Array, r_old: jax.Array, mu_old: jax.Array, la_r: float, la_mu: float):
    n = z.shape[0]
    mu = la_mu * jax.lax.stop_gradient(mu_old) + (1.0 - la_mu) * jnp.mean(z, axis=0)
    centred = z - mu
    r = la_r * jax.lax.stop_gradient(r_old) + (1.0 - la_r) * matmul(centred.T, centred) / n
    return r, mu


def _logdet(a: jax.Array) -> jax.Array:
    # LU-based: degrades to a large finite value (not NaN, unlike float32 Cholesky) near singularity.
    return jnp.linalg.slogdet(a)[1]


def corinfomax_covariance(
    z1: jax.Array,
    z2: jax.Array,
    state: CorInfoMaxState,
    *,
    epsilon: float = 1e-8,
    la_R: float = 0.01,
    la_mu: float = 0.01,
) -> tuple[jax.Array, CorInfoMaxState]:
    """The log-det ("big-bang") term ``-(logdet(R1 + eps I) + logdet(R2 + eps I)) / D`` and new state.

    ``z1``, ``z2`` are used as given (no normalisation). Defaults are the reference's
    ``CovarianceLoss`` defaults (``la_R = la_mu = 0.01``, ``R_eps_weight = 1e-8``).
    """
    z1, z2 = as_float(z1), as_float(z2)
    check_pair("corinfomax", z1, z2)
    d = z1.shape[1]
    if state.R1.shape != (d, d) or state.mu1.shape != (d,):
        raise ValueError(f"corinfomax: state is for dim {state.mu1.shape[0]} but embeddings have dim {d}")
    dtype = jnp.promote_types(z1.dtype, state.R1.dtype)
    z1, z2 = z1.astype(dtype), z2.astype(dtype)
    r1, mu1 = _update(z1, state.R1, state.mu1, la_R, la_mu)
    r2, mu2 = _update(z2, state.R2, state.mu2, la_R, la_mu)
    reg = epsilon * jnp.eye(d, dtype=dtype)
    loss = -(_logdet(r1 + reg) + _logdet(r2 + reg)) / d
    new_state = CorInfoMaxState(
        R1=r1.astype(state.R1.dtype),
        R2=r2.astype(state.R2.dtype),
        mu1=mu1.astype(state.mu1.dtype),
        mu2=mu2.astype(state.mu2.dtype),
    )
    return loss, jax.lax.stop_gradient(new_state)


def corinfomax(
    z1: jax.Array,
    z2: jax.Array,
    state: CorInfoMaxState,
    *,
    epsilon: float = 1e-8,
    la_R: float = 0.01,
    la_mu: float = 0.01,
    sim_loss_weight: float = 250.0,
    cov_loss_weight: float = 1.0,
    normalize: bool = True,
) -> tuple[jax.Array, CorInfoMaxState]:
    """CorInfoMax loss (Eq. 9-10): ``sim_loss_weight * MSE(z1, z2) + cov_loss_weight * cov`` -> ``(loss, state)``.

    ``normalize`` L2-normalises each embedding first, as the reference trainers do. The MSE is the
    mean over all ``N * D`` entries (``F.mse_loss``). Thread ``state`` through the training steps;
    start from :func:`corinfomax_init_state`. Keep a separate state per loss instance (the reference
    uses a second one for its distillation term).
    """
    if normalize:
        z1, z2 = l2_normalize(z1), l2_normalize(z2)
    cov, new_state = corinfomax_covariance(z1, z2, state, epsilon=epsilon, la_R=la_R, la_mu=la_mu)
    sim = jnp.mean((as_float(z1) - as_float(z2)) ** 2)
    return sim_loss_weight * sim + cov_loss_weight * cov, new_state


def corinfomax_split_views(
    predicted1: jax.Array,
    predicted2: jax.Array,
    old1: jax.Array,
    old2: jax.Array,
    state: CorInfoMaxState,
    *,
    epsilon: float = 1e-8,
    la_R: float = 0.01,
    la_mu: float = 0.01,
    sim_loss_weight: float = 250.0,
    cov_loss_weight: float = 1.0,
    normalize: bool = True,
) -> tuple[jax.Array, CorInfoMaxState]:
    """CorInfoMax distillation split across the views, as the official CroMo-Mixup trainer does:
    ``sim_loss_weight * MSE(p², z̄²) + cov_loss_weight * cov(p¹, z̄¹)`` -> ``(loss, state)``.

    Eq. 9's invariance term is taken on view 2 and its log-det term on view 1 (``p = h(z)``, ``z̄`` the
    frozen model's projection), instead of the whole loss on each view; ``state`` holds the running
    estimates of ``p¹`` (``R1``, ``mu1``) and ``z̄¹`` (``R2``, ``mu2``). No gradient reaches ``z̄``.
    """
    old1, old2 = jax.lax.stop_gradient(old1), jax.lax.stop_gradient(old2)
    if normalize:
        predicted1, predicted2, old1, old2 = map(l2_normalize, (predicted1, predicted2, old1, old2))
    cov, new_state = corinfomax_covariance(predicted1, old1, state, epsilon=epsilon, la_R=la_R, la_mu=la_mu)
    sim = jnp.mean((as_float(predicted2) - as_float(old2)) ** 2)
    return sim_loss_weight * sim + cov_loss_weight * cov, new_state
