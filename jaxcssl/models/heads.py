"""MLP heads (projectors, predictors), CaSSLe's distillation predictor and the linear classifier.

Each SSL method's module declares its heads as :class:`HeadSpec` (``jaxcssl.methods.<name>.SPEC``);
the CroMo-Mixup reference layouts (``models/ssl.py`` ``Encoder``/``Predictor``, ``trainers/*``
temporal projector) are:

=============  ==============================================================  ==================
method         projector                                                       predictor
=============  ==============================================================  ==================
barlow_twins   Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN  (2048-2048-2048)     --
simsiam        as barlow_twins                                                 Linear-BN-ReLU-Linear 512 -> 2048
corinfomax     Linear-ReLU, Linear-ReLU, Linear(no bias)  (2048-2048-64;       --
               Tiny-ImageNet 4096-4096-128)
simclr         Linear-ReLU-Linear(no bias)  (2048 -> 128)                      --
byol           Linear-BN-ReLU-Linear  (4096 -> 256)                            Linear-BN-ReLU-Linear 4096 -> 256
vicreg         Linear-BN-ReLU, Linear-BN-ReLU, Linear  (2048-2048-2048)        --
mocov2         Linear-ReLU-Linear  (2048 -> 256)                               --
swav           Linear-BN-ReLU-Linear  (2048 -> 128), then prototypes           --
wmse           Linear-BN-ReLU-Linear  (1024 -> 64)                             --
=============  ==============================================================  ==================

BYOL follows the BYOL paper (BN in the projector); the newest reference ``ssl.py``
drops that BN. VICReg, MoCo v2, SwAV and W-MSE use the solo-learn CIFAR recipes (CaSSLe's code base).

The CaSSLe distillation predictor of every method is ``Linear(no bias)-BN-ReLU-Linear`` from the
projector's output size through its hidden size back to its output size.

Dense layers are initialised as ``torch.nn.Linear``: kernel and bias ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``. BatchNorm uses PyTorch's momentum 0.1 (flax ``momentum=0.9``) and eps 1e-5.
Outputs are float32 whatever the compute ``dtype``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """An MLP head at full width: ``[Dense(-BN)-ReLU] × len(hidden_dims)``, ``Dense(out_dim)`` (+ BN)."""

    hidden_dims: tuple[int, ...]
    out_dim: int
    use_bn: bool = True
    final_bn: bool = False
    out_bias: bool = True
    l2_normalize: bool = False  # divide the output by its L2 norm (FUSSL's normalised latents)


def _uniform(bound: float) -> nn.initializers.Initializer:
    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_dense(features: int, fan_in: int, *, use_bias: bool, dtype: Any, name: str) -> nn.Dense:
    """``nn.Dense`` initialised like ``torch.nn.Linear(fan_in, features)``."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, kernel_init=_uniform(bound), bias_init=_uniform(bound), name=name
    )


def _batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, name=name
    )


class MLPHead(nn.Module):
    """``[Dense(-BN)-ReLU] * len(hidden_dims)`` then ``Dense(out_dim)``, an optional final BN and an
    optional L2 normalisation of the output (no parameters).

    Layers are named ``dense{i}``/``bn{i}`` (1-based, the output layer is ``dense{len+1}``).
    """

    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    final_bn: bool = False
    hidden_bias: bool = True
    out_bias: bool = True
    l2_normalize: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i, dim in enumerate(self.hidden_dims, start=1):
            x = torch_dense(dim, x.shape[-1], use_bias=self.hidden_bias, dtype=self.dtype, name=f"dense{i}")(x)
            if self.use_bn:
                x = _batch_norm(train, self.dtype, f"bn{i}")(x)
            x = nn.relu(x)
        last = len(self.hidden_dims) + 1
        x = torch_dense(self.out_dim, x.shape[-1], use_bias=self.out_bias, dtype=self.dtype, name=f"dense{last}")(x)
        if self.final_bn:
            x = _batch_norm(train, self.dtype, f"bn{last}")(x)
        x = x.astype(jnp.float32)
        if self.l2_normalize:
            x = x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)
        return x


class DistillPredictor(nn.Module):
    """CaSSLe temporal projector h (Fini et al., 2022): ``Dense(no bias)-BN-ReLU-Dense``."""

    hidden_dim: int
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = torch_dense(self.hidden_dim, x.shape[-1], use_bias=False, dtype=self.dtype, name="dense1")(x)
        x = nn.relu(_batch_norm(train, self.dtype, "bn1")(x))
        x = torch_dense(self.out_dim, x.shape[-1], use_bias=True, dtype=self.dtype, name="dense2")(x)
        return x.astype(jnp.float32)


class LinearClassifier(nn.Module):
    """One dense layer -> logits (the linear probe; the reference applies softmax inside its loss)."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = torch_dense(self.num_classes, x.shape[-1], use_bias=True, dtype=self.dtype, name="dense")(x)
        return x.astype(jnp.float32)


MIN_SCALED_DIM = 8


def scaled(dim: int, scale: float) -> int:
    """``dim × scale`` rounded, at least ``min(dim, 8)`` (tiny test models keep usable heads)."""
    return max(min(dim, MIN_SCALED_DIM), round(dim * scale))


def mlp_head(spec: HeadSpec, scale: float = 1.0, dtype: Any = jnp.float32) -> MLPHead:
    """The :class:`MLPHead` of ``spec`` with every width multiplied by ``scale``."""
    return MLPHead(
        hidden_dims=tuple(scaled(d, scale) for d in spec.hidden_dims),
        out_dim=scaled(spec.out_dim, scale),
        use_bn=spec.use_bn,
        final_bn=spec.final_bn,
        out_bias=spec.out_bias,
        l2_normalize=spec.l2_normalize,
        dtype=dtype,
    )
