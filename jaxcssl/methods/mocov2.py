"""MoCo v2 (Chen et al., 2020): InfoNCE against an EMA key encoder and a FIFO queue of keys."""
from __future__ import annotations

import dataclasses

import jax

from jaxcssl.losses import info_nce, info_nce_per_sample, mocov2, mocov2_enqueue, mocov2_init_queue
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe: SGD lr 0.3, wd 1e-4, batch 256, temperature 0.2, queue 65536, EMA 0.99.
DEFAULTS = dict(
    optimizer="sgd", base_lr=0.3, weight_decay=1e-4, batch_size=256, warmup_epochs=10, ema_base=0.99,
    loss=dict(temperature=0.2), queue_size=65536,
)


@dataclasses.dataclass(frozen=True)
class MoCoV2(SSLMethod):
    """``L(q, k) = InfoNCE(z_q, sg(k); queue)``; after each step both views' keys are enqueued.

    The queue (``{"queue": [K, D], "ptr": int}``) is the loss state; it starts from random unit
    vectors drawn with a fixed key, as MoCo initialises its buffer.
    """

    symmetric: bool = False
    uses_target: bool = True
    queue_size: int = 65536
    projection_dim: int = 128
    distill_temperature: float = 0.2
    rals_units = ("sample",)

    def init_loss_state(self):
        queue, ptr = mocov2_init_queue(jax.random.PRNGKey(0), self.queue_size, self.projection_dim)
        return {"queue": queue, "ptr": ptr}

    def criterion(self, query: Embedding, key: jax.Array, state):
        return mocov2(query.projection, key, state["queue"], **self.loss_kwargs), state

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """Both directions' InfoNCE against the queue per image, averaged; its mean is :meth:`ssl_loss`."""
        queue = jax.lax.stop_gradient(state["queue"])

        def one(query, key):
            return info_nce_per_sample(query.projection, jax.lax.stop_gradient(key), extra_negatives=queue,
                                       key_negatives=False, **self.loss_kwargs)

        return 0.5 * (one(online1, key2) + one(online2, key1))

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        """CaSSLe's contrastive distiller: InfoNCE from ``h(z)`` to ``z̄`` with in-batch negatives (τ 0.2)."""
        return info_nce(predicted, jax.lax.stop_gradient(old), self.distill_temperature), state

    def ssl_loss(self, online1, online2, key1, key2, state):
        loss, state = super().ssl_loss(online1, online2, key1, key2, state)
        queue, ptr = state["queue"], state["ptr"]
        for keys in (key1, key2):
            queue, ptr = mocov2_enqueue(queue, ptr, jax.lax.stop_gradient(keys))
        return loss, {"queue": queue, "ptr": ptr}


SPEC = MethodSpec(
    name="mocov2", label="MoCo v2+", cls=MoCoV2, defaults=DEFAULTS,
    projector=HeadSpec((2048,), 256, use_bn=False, final_bn=False, out_bias=True),
    # solo-learn mocov2plus.yaml (augmentations/symmetric_weak.yaml).
    augment=({"saturation": 0.4, "blur_p": 0.5}, {}, {}),
)
