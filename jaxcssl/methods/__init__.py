"""SSL methods: backbone + heads + loss + target network + reference recipe, one module each.

Each module declares a :class:`~jaxcssl.methods.base.MethodSpec` (``SPEC``: the method class, its
reference hyper-parameters, projector, predictor and augmentation preset) and is registered below in
:data:`REGISTRY`, the one place ``config.ssl.method`` names are resolved.
``build_method("barlow_twins", dataset="cifar100", backbone=resnet18())`` assembles an
:class:`~jaxcssl.methods.base.SSLMethod`; ``method_defaults(name, dataset)`` gives its recipe.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxcssl.data import augment
from jaxcssl.methods import barlow_twins, byol, corinfomax, mocov2, simclr, simsiam, swav, vicreg, wmse
from jaxcssl.methods.base import Embedding, MethodSpec, SSLMethod, SSLModel, ema_momentum, ema_update
from jaxcssl.models.heads import DistillPredictor, MLPHead, mlp_head, scaled
from jaxcssl.registry import Registry

REGISTRY: Registry[MethodSpec] = Registry("ssl.method")
for _module in (barlow_twins, simclr, byol, corinfomax, vicreg, mocov2, simsiam, swav, wmse):
    REGISTRY.register(_module.SPEC.name, _module.SPEC)

__all__ = [
    "REGISTRY", "Embedding", "MethodSpec", "SSLMethod", "SSLModel", "build_method", "distill_predictor_for",
    "ema_momentum", "ema_update", "method_defaults", "predictor_for", "projector_for", "ssl_views",
]


def _spec(name: str) -> MethodSpec:
    try:
        return REGISTRY.get(name)
    except ValueError:
        raise ValueError(f"unknown SSL method {name!r}; known: {', '.join(REGISTRY.names())}") from None


def method_defaults(name: str, dataset: str) -> dict[str, Any]:
    """Reference hyper-parameters of ``name`` for ``dataset`` (optimizer, lr, wd, batch, loss); a copy."""
    defaults = dict(_spec(name).defaults)
    per_dataset = defaults.pop("per_dataset", {})
    defaults.update(per_dataset.get(dataset, {}))
    defaults["loss"] = dict(defaults.get("loss", {}))
    return defaults


def projector_for(method: str, dataset: str = "cifar100", scale: float = 1.0, dtype: Any = jnp.float32) -> MLPHead:
    """The reference projector of ``method`` (``dataset`` matters for CorInfoMax on Tiny-ImageNet);
    ``scale`` multiplies every width (rounded, at least 8) for tiny test models."""
    return mlp_head(_spec(method).projector_spec(dataset), scale, dtype)


def predictor_for(method: str, scale: float = 1.0, dtype: Any = jnp.float32) -> MLPHead:
    """The online predictor of BYOL (Linear-BN-ReLU-Linear 4096 -> 256) or SimSiam (512 -> 2048)."""
    spec = _spec(method)
    if spec.predictor is None:
        with_one = ", ".join(n for n, s in REGISTRY.items() if s.predictor is not None)
        raise ValueError(f"method {method!r} has no predictor; methods with one: {with_one}")
    return mlp_head(spec.predictor, scale, dtype)


def distill_predictor_for(
    method: str, dataset: str = "cifar100", scale: float = 1.0, dtype: Any = jnp.float32, hidden_dim: int | None = None
) -> DistillPredictor:
    """CaSSLe's predictor ``h`` for ``method``: projector output -> hidden -> projector output.

    ``hidden_dim`` (full width, times ``scale``) defaults to the projector's first hidden width.
    """
    projector = _spec(method).projector_spec(dataset)
    hidden = projector.hidden_dims[0] if hidden_dim is None else hidden_dim
    return DistillPredictor(hidden_dim=scaled(hidden, scale), out_dim=scaled(projector.out_dim, scale), dtype=dtype)


def ssl_views(method: str, image_size: int, mean=None, std=None) -> tuple[augment.ViewConfig, augment.ViewConfig]:
    """The two augmentation views of ``method``'s reference recipe (:func:`jaxcssl.data.augment.ssl_views`);
    ``mean``/``std`` default to CIFAR-100's statistics."""
    default_mean, default_std = augment.DATASET_STATS["cifar100"]
    return augment.ssl_views(_spec(method).augment, image_size, mean or default_mean, std or default_std)


def build_method(
    name: str,
    *,
    dataset: str,
    backbone: nn.Module,
    head_scale: float = 1.0,
    dtype: Any = jnp.float32,
    loss_kwargs: Optional[Mapping[str, Any]] = None,
    **options: Any,
) -> SSLMethod:
    """Assemble ``name`` with its reference heads around ``backbone``.

    ``head_scale`` shrinks every head width (tiny test models); ``loss_kwargs`` and the method
    fields the recipe sets (MoCo's ``queue_size``) default to the reference values of
    :func:`method_defaults`; ``options`` set or override method fields such as ``distill_temperature`` (SimCLR),
    ``queue_size`` (MoCo v2) or ``num_prototypes`` (SwAV).
    """
    spec = _spec(name)
    cls = spec.cls
    projector = projector_for(name, dataset, scale=head_scale, dtype=dtype)
    defaults = method_defaults(name, dataset)
    if loss_kwargs is None:
        loss_kwargs = defaults["loss"]
    fields = set(cls.__dataclass_fields__)
    options = {**{key: value for key, value in defaults.items() if key in fields}, **options}
    if "projection_dim" in fields:
        options.setdefault("projection_dim", projector.out_dim)
    unknown = set(options) - fields
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for SSL method {name!r}")
    predictor = cls.make_predictor(spec, options, scale=head_scale, dtype=dtype)
    model = SSLModel(backbone=backbone, projector=projector, predictor=predictor)
    return cls(name=name, model=model, loss_kwargs=FrozenDict(loss_kwargs), **options)
