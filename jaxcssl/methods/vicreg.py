"""VICReg (Bardes et al., 2022): variance, invariance and covariance terms."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcssl.losses import vicreg, vicreg_invariance_per_sample
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe (used by CaSSLe): LARS lr 0.3, wd 1e-4, batch 256, weights 25/25/1.
DEFAULTS = dict(
    optimizer="lars", base_lr=0.3, weight_decay=1e-4, batch_size=256, warmup_epochs=10,
    loss=dict(sim_weight=25.0, var_weight=25.0, cov_weight=1.0),
)


@dataclasses.dataclass(frozen=True)
class VICReg(SSLMethod):
    """``L(q, k) = VICReg(z_q, k)``; symmetric."""

    rals_units = ("group", "sample")

    def criterion(self, query: Embedding, key: jax.Array, state):
        return vicreg(query.projection, key, **self.loss_kwargs), state

    def grouped_loss(self, online1, online2, key1, key2, state, group_size):
        """VICReg on each consecutive group of ``group_size`` images, as Barlow Twins' parts."""
        z1, z2 = online1.projection, key2
        n, d = z1.shape
        if group_size < 2 or n % group_size:
            raise ValueError(f"vicreg grouped loss: group_size={group_size} must be >= 2 and divide the batch {n}")
        groups = (n // group_size, group_size, d)
        return jax.vmap(lambda a, b: vicreg(a, b, **self.loss_kwargs))(z1.reshape(groups), z2.reshape(groups))

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """The invariance term per image, ``sim_weight · mean_d (z¹ − z²)²`` (variance and covariance
        are properties of the batch and have no per-image share)."""
        return self.loss_kwargs.get("sim_weight", 25.0) * vicreg_invariance_per_sample(online1.projection, key2)

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        """CaSSLe's VICReg distiller: the invariance term only, ``sim_weight · MSE(h(z), z̄)``."""
        sim_weight = self.loss_kwargs.get("sim_weight", 25.0)
        return sim_weight * jnp.mean((predicted - jax.lax.stop_gradient(old)) ** 2), state


SPEC = MethodSpec(
    name="vicreg", label="VICReg", cls=VICReg, defaults=DEFAULTS,
    projector=HeadSpec((2048, 2048), 2048, use_bn=True, final_bn=False, out_bias=True),
    # CaSSLe vicreg.sh / solo-learn vicreg.yaml.
    augment=({"crop_scale": (0.2, 1.0), "solarize_p": 0.1}, {}, {}),
)
