"""Barlow Twins (Zbontar et al., 2021) as a CroMo-Mixup SSL objective (appendix D.3, Eq. 7–8)."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import barlow_twins, barlow_twins_grouped
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# CroMo Table 5: LARS lr 0.3 (x batch/256), wd 1e-4, batch 256. The paper gives no loss scale; the
# official commands pass --scale_loss 0.1 to BarlowTwinsLoss (0.025 is only its argparse default), with
# lambda 5e-3 and torch.std (unbiased) standardisation.
DEFAULTS = dict(
    optimizer="lars", base_lr=0.3, weight_decay=1e-4, batch_size=256, warmup_epochs=0,
    loss=dict(lambda_offdiag=5e-3, scale=0.1, eps=0.0, unbiased_std=True),
)


@dataclasses.dataclass(frozen=True)
class BarlowTwins(SSLMethod):
    """``L(q, k) = BT(z_q, k)``; symmetric, no target network."""

    rals_units = ("group",)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return barlow_twins(query.projection, key, **self.loss_kwargs), state

    def grouped_loss(self, online1, online2, key1, key2, state, group_size):
        """Online-SSL Sec. 4.3: Barlow Twins on each part of ``N_p`` images (Eq. 11–12 per part)."""
        return barlow_twins_grouped(online1.projection, key2, group_size, **self.loss_kwargs)


SPEC = MethodSpec(
    name="barlow_twins", label="Barlow Twins", cls=BarlowTwins, defaults=DEFAULTS,
    projector=HeadSpec((2048, 2048), 2048, use_bn=True, final_bn=True, out_bias=True),
    # RandomSolarize(0.51, p) on float tensors.
    augment=({"solarize_threshold": 0.51}, {}, {"solarize_p": 0.2}),
)
