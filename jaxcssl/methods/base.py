"""The interface every SSL method offers to the continual engine.

A method bundles a backbone, its heads (projector, and a predictor for BYOL/SimSiam or prototypes
for SwAV), its loss, an optional EMA target network and its default optimiser (CroMo appendix
Table 5). The engine only ever calls:

* :meth:`SSLMethod.init_variables` — parameters and batch statistics as plain pytrees;
* :meth:`SSLMethod.embed` — ``x -> Embedding(features h, projection z, prediction q)``;
* :meth:`SSLMethod.ssl_loss` — the method's objective on two views (Eq. 1 of the CroMo paper);
* :meth:`SSLMethod.criterion` — one direction ``L_SSL(query, key)`` of the objective, the building
  block of cross-model feature mixup (Eq. 4) and of Sy-CON;
* :meth:`SSLMethod.distill` — the CaSSLe distillation loss ``L(z̄, h(z))`` (Eq. 5, second term);
* :meth:`SSLMethod.per_sample_loss` / :meth:`SSLMethod.grouped_loss` — the objective per image or per
  group of images, where it has such a form (:attr:`SSLMethod.rals_units`), for the online learner's
  sample selection (Online-SSL Sec. 4.2–4.3);
* :func:`ema_update` / :func:`ema_momentum` for methods with a target network.

Key-side embeddings are passed as arrays: for symmetric objectives (Barlow Twins, SimCLR, VICReg,
CorInfoMax, W-MSE) they are the online projections themselves, so gradients flow through both
sides; for BYOL, SimSiam and MoCo they come from the EMA target (or carry a stop-gradient).
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxcssl.models.heads import mlp_head

Pytree = Any


class Embedding(NamedTuple):
    """What one forward pass produces for a batch of images."""

    features: jax.Array  # h = f(x), backbone output (what evaluation uses)
    projection: jax.Array  # z = g(h)
    prediction: Optional[jax.Array] = None  # q = p(z) (BYOL, SimSiam) or prototype scores (SwAV)


class SSLModel(nn.Module):
    """Backbone ``f`` → projector ``g`` (→ predictor ``p``)."""

    backbone: nn.Module
    projector: nn.Module
    predictor: Optional[nn.Module] = None

    def __call__(self, x: jax.Array, train: bool = True) -> Embedding:
        h = self.backbone(x, train=train)
        z = self.projector(h, train=train)
        q = self.predictor(z, train=train) if self.predictor is not None else None
        return Embedding(features=h, projection=z, prediction=q)

    def features(self, x: jax.Array) -> jax.Array:
        """Backbone features in evaluation mode (running BatchNorm statistics)."""
        return self.backbone(x, train=False)


@dataclasses.dataclass(frozen=True)
class SSLMethod(abc.ABC):
    """Base class; each objective overrides :meth:`criterion` (and state/distillation if needed).

    Attributes:
      name: registry name ("barlow_twins", "simclr", ...).
      model: the :class:`SSLModel`.
      loss_kwargs: keyword arguments of the loss function (e.g. ``lambda_offdiag``, ``temperature``),
        a ``FrozenDict`` so that a method is hashable and can be a static ``jax.jit`` argument.
      symmetric: ``ssl_loss(v1, v2) = criterion(v1 → z2)`` when True, else the average of both
        directions ``½(criterion(v1 → k2) + criterion(v2 → k1))``.
      uses_target: whether the key side is an EMA target network (BYOL, MoCo v2).
      batch_fields: per-step inputs the objective needs beyond the views: ``"labels"`` (supervised),
        whose criterion then scores view 1 against the labels.
      PREDICTORS: the extra evaluation predictors :meth:`predictors` returns (``"logits"``).
      rals_units: the forms of :meth:`per_sample_loss` (``"sample"``) and :meth:`grouped_loss`
        (``"group"``) the objective has, its preferred one first; ``()``: neither.
    """

    rals_units: ClassVar[tuple[str, ...]] = ()

    name: str
    model: SSLModel
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    symmetric: bool = True
    uses_target: bool = False
    batch_fields: ClassVar[frozenset[str]] = frozenset()
    PREDICTORS: ClassVar[frozenset[str]] = frozenset()

    # --- model ---------------------------------------------------------------------------
    def init_variables(self, key: jax.Array, image_shape: tuple[int, int, int]) -> dict[str, Pytree]:
        """``{"params": ..., "batch_stats": ...}`` for a batch of two images of ``image_shape``."""
        variables = self.model.init(key, jnp.zeros((2, *image_shape), jnp.float32), train=True)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    def embed(
        self, params: Pytree, batch_stats: Pytree, images: jax.Array, *, train: bool = True
    ) -> tuple[Embedding, Pytree]:
        """Forward pass; in train mode BatchNorm uses batch statistics and returns updated ones."""
        variables = {"params": params, "batch_stats": batch_stats}
        if not train:
            return self.model.apply(variables, images, train=False), batch_stats
        embedding, updates = self.model.apply(variables, images, train=True, mutable=["batch_stats"])
        return embedding, updates.get("batch_stats", batch_stats)

    def features(self, params: Pytree, batch_stats: Pytree, images: jax.Array) -> jax.Array:
        """Backbone features for evaluation (frozen, running statistics)."""
        return self.model.apply(
            {"params": params, "batch_stats": batch_stats}, images, method=SSLModel.features
        )

    # --- loss ----------------------------------------------------------------------------
    def init_loss_state(self) -> Pytree:
        """Running state of the objective (CorInfoMax covariances, MoCo queue); ``{}`` if none."""
        return {}

    @abc.abstractmethod
    def criterion(self, query: Embedding, key: jax.Array, state: Pytree) -> tuple[jax.Array, Pytree]:
        """``L_SSL(query, key)``: the objective from the query's online output to key embeddings."""

    def key_embedding(self, online: Embedding, target: Optional[Embedding]) -> jax.Array:
        """The key side for the current samples: the target's projection or the online one."""
        if self.uses_target:
            return jax.lax.stop_gradient(target.projection)
        return online.projection

    def ssl_loss(
        self, online1: Embedding, online2: Embedding, key1: jax.Array, key2: jax.Array, state: Pytree
    ) -> tuple[jax.Array, Pytree]:
        """The method's objective on two augmented views (CroMo Eq. 1)."""
        if self.symmetric:
            return self.criterion(online1, key2, state)
        loss12, state = self.criterion(online1, key2, state)
        loss21, state = self.criterion(online2, key1, state)
        return 0.5 * (loss12 + loss21), state

    def per_sample_loss(
        self, online1: Embedding, online2: Embedding, key1: jax.Array, key2: jax.Array, state: Pytree
    ) -> jax.Array:
        """The objective per image, ``[N]`` (Online-SSL Eq. 9's ``L^i``); ``state`` is only read."""
        raise NotImplementedError(f"SSL method {self.name!r} has no per-sample loss")

    def grouped_loss(
        self, online1: Embedding, online2: Embedding, key1: jax.Array, key2: jax.Array, state: Pytree,
        group_size: int,
    ) -> jax.Array:
        """The objective on each consecutive group of ``group_size`` images, ``[N // group_size]``
        (Online-SSL Sec. 4.3: the parts of ``N_p`` images of Barlow Twins); ``state`` is only read."""
        raise NotImplementedError(f"SSL method {self.name!r} has no grouped loss")

    @classmethod
    def make_projector(cls, projector: nn.Module, options: Mapping[str, Any], *, dtype: Any) -> nn.Module:
        """The module after the backbone: the spec's projector (``projector``) unless the method has its own."""
        del options, dtype
        return projector

    def predictors(self, variables: Pytree, image_size: int, stats) -> dict[str, Any]:
        """Extra evaluation predictors of the trained ``variables`` (:attr:`PREDICTORS`), e.g. ``"logits"``:
        uint8 images -> class logits; ``{}`` for SSL objectives."""
        del variables, image_size, stats
        return {}

    @classmethod
    def make_predictor(cls, spec: "MethodSpec", options: Mapping[str, Any], *, scale: float, dtype: Any):
        """The module after the projector: the spec's MLP predictor, or ``None``."""
        del options
        if spec.predictor is None:
            return None
        return mlp_head(spec.predictor, scale, dtype)

    def distill(self, predicted: jax.Array, old: jax.Array, state: Pytree) -> tuple[jax.Array, Pytree]:
        """CaSSLe predictive distillation ``L_SSL(z̄, h(z))`` with ``old = z̄`` frozen (Eq. 5).

        The default applies the method's own criterion with the distillation predictor's output
        ``h(z)`` as the query.
        """
        query = Embedding(features=predicted, projection=predicted, prediction=predicted)
        return self.criterion(query, jax.lax.stop_gradient(old), state)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """Everything the registry knows about one SSL method, declared in the method's own module.

    Attributes:
      name: registry name (``config.ssl.method``).
      label: the name papers print ("Barlow Twins").
      cls: the :class:`SSLMethod` subclass.
      defaults: reference hyper-parameters: ``optimizer``, ``base_lr``, ``weight_decay``,
        ``batch_size``, ``warmup_epochs``, ``loss`` (keyword arguments of the loss), optionally
        ``ema_base``, ``norm``, ``scale_lr_by_batch``, method fields and ``per_dataset`` overrides.
      projector: the projector at full width; ``per_dataset_projector`` replaces it per dataset.
      predictor: the online predictor (BYOL, SimSiam), or ``None``.
      augment: the two-view augmentation preset (:data:`jaxcssl.data.augment.ViewPreset`).
    """

    name: str
    label: str
    cls: type
    defaults: Mapping[str, Any]
    projector: Any  # jaxcssl.models.heads.HeadSpec
    augment: tuple[dict, dict, dict]
    predictor: Any = None
    per_dataset_projector: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def projector_spec(self, dataset: str) -> Any:
        return self.per_dataset_projector.get(_dataset_family(dataset), self.projector)


def _dataset_family(dataset: str) -> str:
    return "tiny_imagenet" if dataset.lower() in ("tiny_imagenet", "tinyimagenet") else dataset.lower()


def ema_momentum(step: jax.Array, total_steps: int, base: float = 0.99, final: float = 1.0) -> jax.Array:
    """BYOL's cosine schedule ``τ = final − (final − base)(cos(π k / K) + 1) / 2`` over the run."""
    progress = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return final - (final - base) * (jnp.cos(math.pi * progress) + 1.0) / 2.0


def ema_update(target: Pytree, online: Pytree, momentum: jax.Array) -> Pytree:
    """``ξ ← τ ξ + (1 − τ) θ`` leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)
