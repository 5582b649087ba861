"""Kaizen's terms beside the SSL objective (Tang et al., WACV 2024; poster: ``L = L_FE^KD + L_C^KD +
L_C^CT + L_FE^CT``), as the authors' code computes them.

* ``L_FE^KD``, :func:`feature_distillation`: the current projections through CaSSLe's predictor,
  ``p_v = h(z_v)``, against the frozen previous feature extractor's ``z̄_v``, with one distance per SSL
  objective: ``"cosine"`` (BYOL) ``½ Σ_v mean(2 − 2 cos(p_v, z̄_v))``, ``"mse"`` (VICReg)
  ``½ Σ_v mean((p_v − z̄_v)²)``, ``"contrastive"`` (SimCLR, MoCo v2+) :func:`contrastive_distillation`;
* ``L_C^CT``, :func:`masked_cross_entropy`: cross-entropy of the classifier on the labelled samples;
* ``L_C^KD``, :func:`soft_label_distillation`: cross-entropy from the previous classifier's softened
  prediction to the current one.

The frozen side (``z̄``, the previous classifier's logits) receives no gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcssl.losses._common import as_float, check_pair
from jaxcssl.losses.byol import byol
from jaxcssl.losses.info_nce import info_nce

FEATURE_DISTANCES = ("cosine", "mse", "contrastive")


def contrastive_distillation(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array,
                             temperature: float) -> jax.Array:
    """``½ [InfoNCE(P → sg(Z̄)) + InfoNCE(sg(Z̄) → P)]`` over ``P = [p1; p2]``, ``Z̄ = [z1; z2]`` (2N rows).

    Row ``i`` of one side is the positive of row ``i`` of the other; every row of the other side,
    both views, is a candidate of the softmax (cosine similarities over ``temperature``): CaSSLe's
    and Kaizen's contrastive distiller.
    """
    check_pair("contrastive_distillation", p1, z1)
    check_pair("contrastive_distillation", p2, z2)
    p = jnp.concatenate([p1, p2])
    z = jax.lax.stop_gradient(jnp.concatenate([z1, z2]))
    return 0.5 * (info_nce(p, z, temperature) + info_nce(z, p, temperature))


def feature_distillation(distance: str, p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array,
                         temperature: float = 0.2) -> jax.Array:
    """``L_FE^KD`` (without its weight λ) of predicted ``p_v`` against frozen ``z_v`` for both views."""
    if distance == "cosine":
        return 0.5 * (byol(p1, z1) + byol(p2, z2))
    if distance == "mse":
        check_pair("feature_distillation", p1, z1)
        check_pair("feature_distillation", p2, z2)
        return 0.5 * sum(jnp.mean((as_float(p) - jax.lax.stop_gradient(as_float(z))) ** 2)
                         for p, z in ((p1, z1), (p2, z2)))
    if distance == "contrastive":
        return contrastive_distillation(p1, p2, z1, z2, temperature)
    raise ValueError(f"feature_distillation: distance {distance!r} is not one of {', '.join(FEATURE_DISTANCES)}")


def masked_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over the samples with a label (``labels >= 0``; ``-1`` marks none, as
    ``ignore_index=-1``); 0 when no sample of the batch is labelled (where torch gives NaN)."""
    logits = as_float(logits)
    labelled = labels >= 0
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
    return -jnp.sum(jnp.where(labelled, picked, 0.0)) / jnp.maximum(jnp.sum(labelled), 1)


def soft_label_distillation(logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """``mean_i −Σ_c softmax(sg(t_i)/T)_c · log softmax(y_i/T)_c``: the student ``y`` fitted to the
    teacher's softened prediction (Hinton et al., 2015, without their ``T²`` factor; Kaizen: ``T = 1``)."""
    check_pair("soft_label_distillation", logits, teacher_logits)
    target = jax.nn.softmax(jax.lax.stop_gradient(as_float(teacher_logits)) / temperature, axis=-1)
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(as_float(logits) / temperature, axis=-1), axis=-1))
