"""W-MSE (Ermolov et al., 2021): MSE between Cholesky-whitened views."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import wmse
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe adapted to LARS: lr 0.3, wd 1e-4, batch 256, whitening sub-batch 128.
DEFAULTS = dict(
    optimizer="lars", base_lr=0.3, weight_decay=1e-4, batch_size=256, warmup_epochs=2,
    loss=dict(whitening_size=128, eps=0.0),
)


@dataclasses.dataclass(frozen=True)
class WMSE(SSLMethod):
    """``L(q, k) = W-MSE(z_q, k)``; symmetric."""

    def criterion(self, query: Embedding, key: jax.Array, state):
        return wmse(query.projection, key, **self.loss_kwargs), state


SPEC = MethodSpec(
    name="wmse", label="W-MSE", cls=WMSE, defaults=DEFAULTS,
    projector=HeadSpec((1024,), 64, use_bn=True, final_bn=False, out_bias=True),
    # solo-learn wmse.yaml.
    augment=({"crop_scale": (0.2, 1.0), "brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2},
             {}, {}),
)
