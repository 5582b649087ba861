"""MoCo v2+ (Chen et al., 2020; solo-learn, CaSSLe): InfoNCE against an EMA key encoder and one FIFO
queue of keys per view."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcssl.losses import info_nce, info_nce_per_sample, mocov2_enqueue, mocov2_init_queue, mocov2_symmetric
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec

# solo-learn CIFAR recipe (mocov2plus.yaml): SGD lr 0.3, wd 1e-4, batch 256, temperature 0.2, queue
# 32768, EMA 0.99; CaSSLe's ImageNet-100 runs use a queue of 65536. Tiny-ImageNet has no reference
# recipe and keeps CIFAR's.
DEFAULTS = dict(
    optimizer="sgd", base_lr=0.3, weight_decay=1e-4, batch_size=256, warmup_epochs=10, ema_base=0.99,
    loss=dict(temperature=0.2), queue_size=32768,
    per_dataset=dict(imagenet100=dict(queue_size=65536)),
)


@dataclasses.dataclass(frozen=True)
class MoCoV2(SSLMethod):
    """``½ (L(q¹, k²; Q²) + L(q², k¹; Q¹))``; after each step each view's keys enter its own queue.

    The loss state is ``{"queue": [2, K, D], "ptr": int}``: ``Q¹ = queue[0]`` holds view-1 keys,
    ``Q² = queue[1]`` view-2 keys, both written at the shared pointer. It starts from random unit
    vectors drawn with a fixed key, as MoCo initialises its buffer.

    :meth:`criterion`, one direction without a view (CroMo's mixup terms), cannot pick a view's queue;
    it contrasts the query's key against the batch's other keys (the loss settings' temperature).
    """

    symmetric: bool = False
    uses_target: bool = True
    queue_size: int = 32768
    projection_dim: int = 128
    distill_temperature: float = 0.2
    rals_units = ("sample",)

    def init_loss_state(self):
        queue, ptr = mocov2_init_queue(jax.random.PRNGKey(0), self.queue_size, self.projection_dim)
        return {"queue": queue, "ptr": ptr}

    def criterion(self, query: Embedding, key: jax.Array, state):
        return info_nce(query.projection, jax.lax.stop_gradient(key), **self.loss_kwargs), state

    def per_sample_loss(self, online1, online2, key1, key2, state):
        """``½ (L_i(q¹, k²; Q²) + L_i(q², k¹; Q¹))`` per image: each direction against its key's view's
        queue, as :meth:`ssl_loss`, whose loss is the mean of this one."""
        queues = jax.lax.stop_gradient(state["queue"])

        def one(query, key, queue):
            return info_nce_per_sample(query.projection, jax.lax.stop_gradient(key), extra_negatives=queue,
                                       key_negatives=False, **self.loss_kwargs)

        return 0.5 * (one(online1, key2, queues[1]) + one(online2, key1, queues[0]))

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        """CaSSLe's contrastive distiller: InfoNCE from ``h(z)`` to ``z̄`` with in-batch negatives (τ 0.2)."""
        return info_nce(predicted, jax.lax.stop_gradient(old), self.distill_temperature), state

    def ssl_loss(self, online1, online2, key1, key2, state):
        keys = jax.lax.stop_gradient(jnp.stack([key1, key2]))
        loss = mocov2_symmetric(online1.projection, online2.projection, keys[0], keys[1], state["queue"],
                                **self.loss_kwargs)
        queue, ptr = mocov2_enqueue(state["queue"], state["ptr"], keys)
        return loss, {"queue": queue, "ptr": ptr}


SPEC = MethodSpec(
    name="mocov2", label="MoCo v2+", cls=MoCoV2, defaults=DEFAULTS,
    projector=HeadSpec((2048,), 256, use_bn=False, final_bn=False, out_bias=True),
    # solo-learn mocov2plus.yaml (augmentations/symmetric_weak.yaml).
    augment=({"saturation": 0.4, "blur_p": 0.5}, {}, {}),
)
