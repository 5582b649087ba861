"""Barlow Twins (Zbontar et al., 2021): redundancy reduction on the cross-correlation matrix.

CroMo-Mixup appendix D.3, Eq. 7-8; Online-SSL (RALS) Eq. 11-12 for the grouped per-part form.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcssl.losses._common import as_float, check_pair, matmul


def _standardize(z: jax.Array, eps: float, unbiased_std: bool) -> jax.Array:
    n = z.shape[0]
    centred = z - jnp.mean(z, axis=0)
    var = jnp.sum(centred * centred, axis=0) / (n - 1 if unbiased_std else n)
    return centred * jax.lax.rsqrt(var + eps)


def cross_correlation(
    z1: jax.Array, z2: jax.Array, *, eps: float = 1e-5, unbiased_std: bool = False
) -> jax.Array:
    """The ``[D, D]`` cross-correlation of CroMo-Mixup Eq. 8 over the (global) batch.

    ``C_ij = sum_b z~1_bi z~2_bj / (sqrt(sum_b z~1_bi^2) sqrt(sum_b z~2_bj^2))`` with ``z~`` the
    batch-centred embeddings, computed as BatchNorm(affine=False) followed by ``/ N``:
    ``z~ / sqrt(var + eps)`` with the biased variance. ``eps=0`` gives Eq. 8 exactly.
    ``unbiased_std=True`` standardises with the ``N - 1`` variance (``torch.std``) as the CroMo-Mixup
    reference ``BarlowTwinsLoss`` does, which scales C by ``(N - 1) / N``.
    """
    z1, z2 = as_float(z1), as_float(z2)
    check_pair("barlow_twins", z1, z2)
    n = z1.shape[0]
    return matmul(_standardize(z1, eps, unbiased_std).T, _standardize(z2, eps, unbiased_std)) / n


def barlow_twins(
    z1: jax.Array,
    z2: jax.Array,
    lambda_offdiag: float = 5e-3,
    scale: float = 1.0,
    *,
    eps: float = 1e-5,
    unbiased_std: bool = False,
) -> jax.Array:
    """Barlow Twins loss, CroMo-Mixup Eq. 7: ``scale * (sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2)``.

    ``C`` is :func:`cross_correlation` (Eq. 8). The official CroMo-Mixup code multiplies by
    ``scale_loss`` (0.1 in its commands) and uses ``torch.std``: ``barlow_twins(z1, z2, 5e-3, 0.1,
    eps=0.0, unbiased_std=True)`` reproduces its ``BarlowTwinsLoss`` exactly. Symmetric in ``(z1, z2)``.
    """
    c = cross_correlation(z1, z2, eps=eps, unbiased_std=unbiased_std)
    diag = jnp.diagonal(c)
    off = jnp.where(jnp.eye(c.shape[0], dtype=bool), 0.0, c)
    return scale * (jnp.sum((1.0 - diag) ** 2) + lambda_offdiag * jnp.sum(off * off))


def barlow_twins_grouped(
    z1: jax.Array,
    z2: jax.Array,
    group_size: int,
    lambda_offdiag: float = 5e-3,
    scale: float = 1.0,
    *,
    eps: float = 1e-5,
    unbiased_std: bool = False,
) -> jax.Array:
    """One Barlow Twins loss per consecutive group of ``group_size`` images -> ``[N // group_size]``.

    The per-part loss of Online-SSL (RALS, Sec. 4.3): Barlow Twins has no per-sample form, so the
    batch is split into parts of ``N_p`` images (16 in the paper) and each part is scored as a whole.
    Row ``g`` is ``barlow_twins(z1[g*N_p:(g+1)*N_p], z2[g*N_p:(g+1)*N_p])``.
    """
    z1, z2 = as_float(z1), as_float(z2)
    check_pair("barlow_twins_grouped", z1, z2)
    n, d = z1.shape
    if group_size < 2 or n % group_size:
        raise ValueError(
            f"barlow_twins_grouped: group_size={group_size} must be >= 2 and divide the batch size {n}"
        )
    groups = n // group_size

    def one(a: jax.Array, b: jax.Array) -> jax.Array:
        return barlow_twins(a, b, lambda_offdiag, scale, eps=eps, unbiased_std=unbiased_std)

    return jax.vmap(one)(z1.reshape(groups, group_size, d), z2.reshape(groups, group_size, d))
