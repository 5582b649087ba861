"""SwAV (Caron et al., 2020): swapped prediction of Sinkhorn-Knopp cluster codes."""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcssl.losses import swav_from_scores
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe: LARS lr 0.6, wd 1e-6, batch 256, 3000 prototypes, temperature 0.1.
DEFAULTS = dict(
    optimizer="lars", base_lr=0.6, weight_decay=1e-6, batch_size=256, warmup_epochs=10,
    loss=dict(temperature=0.1, sinkhorn_epsilon=0.05, sinkhorn_iterations=3),
)


class Prototypes(nn.Module):
    """Scores ``ẑ · ĉ_k`` of the L2-normalised projection against unit-norm prototypes ``C``."""

    num_prototypes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
        del train
        prototypes = self.param("prototypes", nn.initializers.lecun_normal(), (self.num_prototypes, z.shape[-1]))
        z = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-12)
        prototypes = prototypes / jnp.linalg.norm(prototypes, axis=-1, keepdims=True).clip(1e-12)
        return jnp.dot(z.astype(self.dtype), prototypes.T.astype(self.dtype)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class SwAV(SSLMethod):
    """``L(q, k) = SwAV(scores_q, scores_k)``: symmetric swapped prediction on prototype scores.

    Keys are prototype scores (the model's ``prediction``), not projections. CaSSLe distils SwAV
    through frozen prototypes, which this library does not implement: distillation strategies
    (``cassle``, ``cassle_plus``, ``cromo`` with ζ > 0) reject SwAV.
    """

    num_prototypes: int = 3000

    @classmethod
    def make_predictor(cls, spec, options, *, scale, dtype):
        del spec, scale
        return Prototypes(options.get("num_prototypes", cls.num_prototypes), dtype=dtype)

    def key_embedding(self, online: Embedding, target: Embedding | None = None) -> jax.Array:
        return online.prediction

    def criterion(self, query: Embedding, key: jax.Array, state):
        return swav_from_scores(query.prediction, key, **self.loss_kwargs), state

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        raise ValueError("distillation is not supported with SSL method 'swav'; set strategy.cromo.distill_weight=0")


SPEC = MethodSpec(
    name="swav", label="SwAV", cls=SwAV, defaults=DEFAULTS,
    projector=HeadSpec((2048,), 128, use_bn=True, final_bn=False, out_bias=True),
    # CaSSLe swav.sh: strong jitter, no blur.
    augment=({"brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2}, {}, {}),
)
