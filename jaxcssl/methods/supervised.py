"""Supervised learning: the backbone and a linear classifier trained with cross-entropy on the labels.

The reference of CroMo-Mixup's task-confusion study (Sec. 3, Fig. 4, App. B; Table 7: SGD, lr 0.075,
batch 128, 200 epochs), selected like an SSL objective (``ssl.method=supervised``) so that every
schedule takes it. One view per sample with the linear probe's training augmentation
(RandomResizedCrop (0.08, 1) + horizontal flip), the labels from the batch's ``"labels"`` field, and

    L = mean_i CE(W h_i + b, y_i) = mean_i [logsumexp_c (W h_i + b)_c - (W h_i + b)_{y_i}]

over the samples with a label (``y = -1`` withholds one). The classifier ``W h + b`` is the model's
"projector" (a ``Linear`` to the dataset's classes, never shrunk by ``model.head_scale``); its logits
are the ``"logits"`` predictor scored as they are by the ``head`` evaluation protocol.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxcssl.data.augment import preprocess
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod
from jaxcssl.models.heads import HeadSpec, MLPHead

# Table 7 gives SGD, lr 0.075, batch 128 and 200 epochs, and neither momentum, weight decay nor a
# schedule: the usual 0.9 (config.optim.momentum), 5e-4 and the per-task cosine. The lr is the peak
# rate at batch 128, not scaled by batch / 256 (set optim.base_batch=256 to scale it).
DEFAULTS = dict(
    optimizer="sgd", base_lr=0.075, weight_decay=5e-4, batch_size=128, warmup_epochs=0, scale_lr_by_batch=False,
    loss={}, num_classes=100,  # the learner passes the dataset's own
    per_dataset=dict(cifar10=dict(num_classes=10), tiny_imagenet=dict(num_classes=200)),
)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer ``labels`` over the samples with ``labels >= 0``."""
    labelled = labels >= 0
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(labelled, labels, 0))
    return jnp.sum(jnp.where(labelled, per_sample, 0.0)) / jnp.maximum(jnp.sum(labelled), 1)


@functools.partial(jax.jit, static_argnames=("method", "image_size", "stats"))
def _logits(method: SSLMethod, variables: Any, images: jax.Array, *, image_size: int, stats) -> jax.Array:
    """uint8 images -> class logits of the trained classifier (evaluation mode)."""
    return method.model.apply(variables, preprocess(images, image_size, *stats), train=False).projection


@dataclasses.dataclass(frozen=True)
class Supervised(SSLMethod):
    """``criterion(e, y) = CE(logits(e), y)``: the key side is the labels."""

    num_classes: int = 100  # the dataset's (build_method's num_classes; the recipe's per-dataset default)
    batch_fields: ClassVar[frozenset[str]] = frozenset({"labels"})
    PREDICTORS: ClassVar[frozenset[str]] = frozenset({"logits"})

    @classmethod
    def make_projector(cls, projector, options: Mapping[str, Any], *, dtype: Any) -> MLPHead:
        del projector
        if not options.get("num_classes", 0) >= 1:
            raise ValueError("ssl.method='supervised' needs num_classes >= 1 (the dataset's number of classes)")
        return MLPHead(hidden_dims=(), out_dim=int(options["num_classes"]), dtype=dtype)

    def criterion(self, query: Embedding, key: jax.Array, state):
        return cross_entropy(query.projection, key), state

    def distill(self, predicted: jax.Array, old: jax.Array, state):
        raise TypeError("ssl.method='supervised' has no distillation loss")

    def predictors(self, variables, image_size: int, stats) -> dict[str, Any]:
        return {"logits": functools.partial(_logits, self, variables, image_size=image_size, stats=stats)}


SPEC = MethodSpec(
    name="supervised", label="Supervised", cls=Supervised, defaults=DEFAULTS,
    projector=HeadSpec((), 1, use_bn=False),  # replaced by the classifier (make_projector)
    # One view (view 2 is computed by nobody: XLA drops it): the linear probe's training transform.
    augment=({"jitter_p": 0.0, "grayscale_p": 0.0}, {}, {}),
)
