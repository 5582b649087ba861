"""SimSiam (Chen & He, 2021): predictor + stop-gradient, no target network."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import simsiam, simsiam_per_sample
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe: SGD lr 0.5, wd 1e-5, batch 256.
DEFAULTS = dict(optimizer="sgd", base_lr=0.5, weight_decay=1e-5, batch_size=256, warmup_epochs=10, loss=dict())


@dataclasses.dataclass(frozen=True)
class SimSiam(SSLMethod):
    """``L(q, k) = −cos(p(z_q), sg(k))``; views averaged; keys are the stop-gradient projections."""

    symmetric: bool = False
    rals_units = ("sample",)

    def key_embedding(self, online: Embedding, target: Embedding | None = None) -> jax.Array:
        return jax.lax.stop_gradient(online.projection)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return simsiam(query.prediction, key), state

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """``−½(cos(p¹, sg(z²)) + cos(p², sg(z¹)))`` per image; its mean is :meth:`ssl_loss`."""
        return 0.5 * (simsiam_per_sample(online1.prediction, key2) + simsiam_per_sample(online2.prediction, key1))


SPEC = MethodSpec(
    name="simsiam", label="SimSiam", cls=SimSiam, defaults=DEFAULTS,
    projector=HeadSpec((2048, 2048), 2048, use_bn=True, final_bn=True, out_bias=True),
    predictor=HeadSpec((512,), 2048, use_bn=True),
    # SimSiam's CIFAR recipe, as in the reference code (solo-learn adds blur p=0.5 and crop 0.08).
    augment=({"crop_scale": (0.2, 1.0), "saturation": 0.4}, {}, {}),
)
