"""SimCLR (Chen et al., 2020): NT-Xent over the 2N views (CroMo appendix D.3, Eq. 6)."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import simclr, simclr_per_sample
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# CroMo Table 5: SGD (the official trainer uses LARS: config.reference="official"), lr 0.6 (Tiny 0.3)
# x batch/256, wd 5e-4, batch 512 (Tiny 256), temperature 0.5. The CroMo reference distils with the
# same NT-Xent (temperature 0.5) on [h(z), z̄]; CaSSLe uses 0.2 — set distill_temperature.
DEFAULTS = dict(
    optimizer="sgd", base_lr=0.6, weight_decay=5e-4, batch_size=512, warmup_epochs=0,
    loss=dict(temperature=0.5),
    per_dataset=dict(tiny_imagenet=dict(base_lr=0.3, batch_size=256)),
)


@dataclasses.dataclass(frozen=True)
class SimCLR(SSLMethod):
    """``L(q, k) = NT-Xent(z_q, k)``; symmetric, both sides receive gradients."""

    distill_temperature: float = 0.5
    rals_units = ("sample",)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return simclr(query.projection, key, **self.loss_kwargs), state

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """Online-SSL Sec. 4.3: ``l_ij + l_ji`` over the 2N views (Eq. 10); its mean is twice :meth:`ssl_loss`."""
        return simclr_per_sample(online1.projection, key2, **self.loss_kwargs)

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        return simclr(predicted, jax.lax.stop_gradient(old), temperature=self.distill_temperature), state


SPEC = MethodSpec(
    name="simclr", label="SimCLR", cls=SimCLR, defaults=DEFAULTS,
    projector=HeadSpec((2048,), 128, use_bn=False, final_bn=False, out_bias=False),
    augment=({"crop_scale": (0.2, 1.0), "saturation": 0.4}, {}, {}),
)
