"""ResNet-18/50 backbones (He et al., 2016) returning pooled features.

Follows the CroMo-Mixup reference (``models/resnet.py``, torchvision ``resnet``):
- ``stem="cifar"``: 3x3 conv, stride 1, padding 1, no max-pool (``resnetc18``);
  ``stem="imagenet"``: 7x7/2 conv + 3x3/2 max-pool.
- Convolutions without bias, initialised as ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``.
- The scale of the last norm of every residual block starts at zero (Goyal et al., 2017), so each
  block starts as ``relu(shortcut(x))``; the shortcut is a 1x1 conv + norm when the shape changes.
- Bottleneck blocks are torchvision's (stride on the 3x3 conv, expansion 4).
- ``norm="group_ws"``: GroupNorm + weight-standardised convolutions, the BYOL/BiT backbone that the
  reference selects with ``--normalization group --weight_standard``.

Parameters are float32 (``param_dtype``); ``dtype`` is the compute dtype; features are float32.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: N(0, 2 / (kh * kw * out)).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

MAX_GROUPS = 32
WS_EPSILON = 1e-10
_STEMS = ("cifar", "imagenet")
_BLOCKS = ("basic", "bottleneck")
_NORMS = ("batch", "group_ws")


def standardize_kernel(kernel: jax.Array, eps: float = WS_EPSILON) -> jax.Array:
    """Weight standardisation (Qiao et al., 2019) of a ``[kh, kw, in, out]`` kernel.

    Each output channel is centred and scaled to unit (population) variance over ``kh, kw, in``,
    as big_vision's BiT ``StdConv``. The CroMo-Mixup reference divides by ``std(unbiased) + 1e-5``
    instead; the two differ by a per-channel constant that the following GroupNorm removes.
    """
    kernel = kernel - jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    return kernel * jax.lax.rsqrt(jnp.mean(jnp.square(kernel), axis=(0, 1, 2), keepdims=True) + eps)


class WSConv(nn.Conv):
    """``nn.Conv`` whose kernel is weight-standardised (in float32) on every call."""

    def param(self, name: str, *args: Any, **kwargs: Any) -> Any:
        value = super().param(name, *args, **kwargs)
        return standardize_kernel(value) if name == "kernel" else value


def group_count(channels: int) -> int:
    """Groups of the GroupNorm layers: ``gcd(32, channels)``.

    That is 32 for every layer of the standard widths (64 and up). Tiny test widths have layers
    with fewer than 32 channels; those get one group per channel (8 channels -> 8 groups).
    """
    return math.gcd(MAX_GROUPS, channels)


def _make_norm(
    channels: int,
    *,
    kind: str,
    train: bool,
    momentum: float,
    epsilon: float,
    dtype: Any,
    name: str,
    zero_init: bool = False,
) -> nn.Module:
    scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
    if kind == "batch":
        return nn.BatchNorm(
            use_running_average=not train,
            momentum=momentum,
            epsilon=epsilon,
            dtype=dtype,
            scale_init=scale_init,
            name=name,
        )
    return nn.GroupNorm(
        num_groups=group_count(channels), epsilon=epsilon, dtype=dtype, scale_init=scale_init, name=name
    )


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34)."""

    filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(self.filters, (3, 3), self.strides, padding=1, name="conv1")(x)
        y = nn.relu(self.norm(self.filters, name="norm1")(y))
        y = self.conv(self.filters, (3, 3), 1, padding=1, name="conv2")(y)
        y = self.norm(self.filters, name="norm2", zero_init=True)(y)
        if x.shape != y.shape:
            x = self.conv(self.filters, (1, 1), self.strides, padding=0, name="proj_conv")(x)
            x = self.norm(self.filters, name="proj_norm")(x)
        return nn.relu(y + x)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual block with expansion 4 (ResNet-50, torchvision v1.5)."""

    filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.filters * self.expansion
        y = self.conv(self.filters, (1, 1), 1, padding=0, name="conv1")(x)
        y = nn.relu(self.norm(self.filters, name="norm1")(y))
        y = self.conv(self.filters, (3, 3), self.strides, padding=1, name="conv2")(y)
        y = nn.relu(self.norm(self.filters, name="norm2")(y))
        y = self.conv(out, (1, 1), 1, padding=0, name="conv3")(y)
        y = self.norm(out, name="norm3", zero_init=True)(y)
        if x.shape != y.shape:
            x = self.conv(out, (1, 1), self.strides, padding=0, name="proj_conv")(x)
            x = self.norm(out, name="proj_norm")(x)
        return nn.relu(y + x)


class ResNet(nn.Module):
    """ResNet backbone: NHWC float images -> globally average-pooled features ``[B, feature_dim]``.

    Submodules are named ``stem_conv``, ``stem_norm`` and ``stage{i}_block{j}`` (1-based); inside a
    block ``conv1..3``, ``norm1..3`` and, when the shape changes, ``proj_conv``/``proj_norm``.

    ``inference_stages=k`` runs the norms of the stem and of stages ``1..k`` in inference mode even
    when ``train=True``: they use their running statistics and do not update them (the frozen part
    of a network fine-tuned from its last stages, FUSSL Sec. 4.1.3). 0 (the default): none.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width: int = 64
    stem: str = "cifar"
    norm: str = "batch"
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    inference_stages: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        _check_choice("block", self.block, _BLOCKS)
        _check_choice("stem", self.stem, _STEMS)
        _check_choice("norm", self.norm, _NORMS)
        conv = functools.partial(
            WSConv if self.norm == "group_ws" else nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=conv_kernel_init,
        )

        def norm(stage: int) -> Callable[..., nn.Module]:
            """The norm factory of ``stage`` (1-based; the stem goes with stage 1)."""
            return functools.partial(
                _make_norm,
                kind="batch" if self.norm == "batch" else "group",
                train=train and stage > self.inference_stages,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                dtype=self.dtype,
            )

        if self.stem == "cifar":
            x = conv(self.width, (3, 3), 1, padding=1, name="stem_conv")(x)
            x = nn.relu(norm(1)(self.width, name="stem_norm")(x))
        else:
            x = conv(self.width, (7, 7), 2, padding=3, name="stem_conv")(x)
            x = nn.relu(norm(1)(self.width, name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block_cls = BasicBlock if self.block == "basic" else BottleneckBlock
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = block_cls(
                    filters=self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    conv=conv,
                    norm=norm(i + 1),
                    name=f"stage{i + 1}_block{j + 1}",
                )(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"ResNet {field}={value!r} is not one of {', '.join(choices)}")


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2); 512 features at width 64."""
    return ResNet(stage_sizes=(2, 2, 2, 2), block="basic", **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3); 2048 features at width 64."""
    return ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", **kwargs)


def feature_dim(model: ResNet) -> int:
    """Size of the pooled features: ``width * 2**(stages - 1)``, times 4 for bottleneck blocks."""
    expansion = 4 if model.block == "bottleneck" else 1
    return model.width * 2 ** (len(model.stage_sizes) - 1) * expansion
