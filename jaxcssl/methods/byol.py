"""BYOL (Grill et al., 2020): online predictor regresses the EMA target (CroMo appendix D.3)."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import byol, byol_per_sample
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# CroMo Table 5: LARS lr 1.0 (Tiny 0.3) x batch/256, wd 1e-5, batch 256. The official commands: 10
# warm-up epochs, the cosine ending at --min_lr 1e-3 (Tiny 1e-6), EMA 0.99 -> 1 (cosine over the whole
# run), GroupNorm + weight standardisation in the backbone.
DEFAULTS = dict(
    optimizer="lars", base_lr=1.0, weight_decay=1e-5, batch_size=256, warmup_epochs=10, final_lr=1e-3,
    ema_base=0.99, norm="group_ws", loss=dict(),
    per_dataset=dict(tiny_imagenet=dict(base_lr=0.3, final_lr=1e-6)),
)


@dataclasses.dataclass(frozen=True)
class BYOL(SSLMethod):
    """``L(q, k) = mean(2 − 2 cos(p(z_q), sg(k)))``; views averaged, keys from the EMA target."""

    symmetric: bool = False
    uses_target: bool = True
    rals_units = ("sample",)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return byol(query.prediction, key), state

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """``½(2 − 2cos(q¹, k²) + 2 − 2cos(q², k¹))`` per image; its mean is :meth:`ssl_loss`."""
        return 0.5 * (byol_per_sample(online1.prediction, key2) + byol_per_sample(online2.prediction, key1))


SPEC = MethodSpec(
    name="byol", label="BYOL", cls=BYOL, defaults=DEFAULTS,
    projector=HeadSpec((4096,), 256, use_bn=True, final_bn=False, out_bias=True),
    predictor=HeadSpec((4096,), 256, use_bn=True),
    # PIL ImageOps.solarize (threshold 128 of 255) after ToPILImage.
    augment=({"solarize_threshold": 128 / 255}, {}, {"solarize_p": 0.2}),
)
