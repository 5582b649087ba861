"""CorInfoMax (Ozsoy et al., 2022): log-det mutual information (CroMo appendix D.3, Eq. 9–10)."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import CorInfoMaxState, corinfomax, corinfomax_init_state, corinfomax_split_views
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# CroMo Table 5: SGD lr 0.1 (Tiny 0.5) *not* scaled by batch (base_batch = batch), wd 1e-4, batch 512
# (Tiny 256). The paper gives no loss weights; the official commands: sim weight 250 (Tiny 500), cov
# weight 1, la_R = la_mu = 0.01 (the trainer's CovarianceLoss defaults), state updated every step.
_LOSS = dict(sim_loss_weight=250.0, cov_loss_weight=1.0, la_R=0.01, la_mu=0.01, epsilon=1e-8)
DEFAULTS = dict(
    optimizer="sgd", base_lr=0.1, weight_decay=1e-4, batch_size=512, warmup_epochs=0, scale_lr_by_batch=False,
    loss=_LOSS,
    per_dataset=dict(tiny_imagenet=dict(base_lr=0.5, batch_size=256, loss={**_LOSS, "sim_loss_weight": 500.0})),
)


@dataclasses.dataclass(frozen=True)
class CorInfoMax(SSLMethod):
    """``L(q, k) = CorInfoMax(z_q, k; R, μ)``; the running covariance estimates are its state."""

    projection_dim: int = 64

    def init_loss_state(self):
        return corinfomax_init_state(self.projection_dim)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return corinfomax(query.projection, key, state, **self.loss_kwargs)

    def distill_split_views(self, predicted1: jax.Array, predicted2: jax.Array, old1: jax.Array, old2: jax.Array,
                            state: CorInfoMaxState) -> tuple[jax.Array, CorInfoMaxState]:
        """The official CroMo-Mixup distillation: the invariance term on view 2, the log-det term on view 1
        (:func:`~jaxcssl.losses.corinfomax_split_views`), with this method's loss settings."""
        return corinfomax_split_views(predicted1, predicted2, old1, old2, state, **self.loss_kwargs)


SPEC = MethodSpec(
    name="corinfomax", label="CorInfoMax", cls=CorInfoMax, defaults=DEFAULTS,
    projector=HeadSpec((2048, 2048), 64, use_bn=False, final_bn=False, out_bias=False),
    per_dataset_projector={"tiny_imagenet": HeadSpec((4096, 4096), 128, use_bn=False, out_bias=False)},
    # GaussianBlur with a 3x3 kernel, sigma U[0.1, 2]: always on view 1, p=0.1 on view 2.
    augment=({}, {"blur_p": 1.0}, {"blur_p": 0.1}),
)
