"""The per-device memory a FUSSL run needs, estimated before anything compiles, and the refusal.

``m`` members multiply parameters, optimiser states and activations by ``m``. The estimate adds:

* the training state (every member, the phase-2 model with its two optimiser states, the
  pseudo-labels): exact, from the shapes of the initial state;
* the dataset held on the device (uint8, replicated);
* the gradients of the ``m`` members (one parameter tree each);
* activations: every module output of one forward pass (``capture_intermediates``, shapes only),
  times two for what the backward pass keeps and produces beside them, for each of the ``2m`` views
  of the per-device share of the batch (phase 2: one image, one model, its own batch).

It is an estimate, not XLA's allocation: the buffers XLA keeps live at once depend on its fusion and
scheduling. Devices that report a memory limit (GPUs, TPUs: ``device.memory_stats()["bytes_limit"]``)
refuse an estimate above it; CPUs report none and are not checked.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcssl.errors import ConfigError

Pytree = Any
BACKWARD_FACTOR = 2  # saved activations + their gradients


def tree_bytes(tree: Pytree) -> int:
    """Bytes of every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree))


def forward_bytes_per_sample(model: nn.Module, variables: Pytree, image_shape: tuple[int, int, int],
                             method: Any = None) -> int:
    """Bytes of every module output of one training-mode forward pass of one image (shapes only)."""
    def forward(v):
        x = jnp.zeros((2, *image_shape), jnp.float32)  # two images: BatchNorm needs a batch
        _, state = model.apply(v, x, True, method=method, capture_intermediates=True,
                               mutable=["batch_stats", "intermediates"])
        return state["intermediates"]

    return tree_bytes(jax.eval_shape(forward, variables)) // 2 + math.prod(image_shape) * 4


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes per device."""

    state: int
    data: int
    gradients: int
    activations: int

    @property
    def total(self) -> int:
        return self.state + self.data + self.gradients + self.activations

    def describe(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"
        return (f"{gib(self.total)} (state {gib(self.state)}, data {gib(self.data)}, "
                f"gradients {gib(self.gradients)}, activations {gib(self.activations)})")


def activation_bytes(per_sample: int, images_per_device: int) -> int:
    return BACKWARD_FACTOR * per_sample * images_per_device


def device_limit(device: jax.Device) -> Optional[int]:
    """The device's memory limit in bytes, or ``None`` when it reports none (CPUs)."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def check(estimate: Estimate, device: jax.Device, limit: Optional[int], hint: str) -> str:
    """The line to print; raises one ConfigError line when ``estimate`` exceeds ``limit``."""
    line = f"fussl: estimated memory per device {estimate.describe()}"
    if limit is None:
        return f"{line}; {device.platform} devices report no memory limit: not checked"
    if estimate.total > limit:
        raise ConfigError(f"fussl: the estimated {estimate.total / 2**30:.2f} GiB per device exceeds the "
                          f"{limit / 2**30:.2f} GiB of {device.device_kind} ({estimate.describe()}); {hint}")
    return f"{line} of {limit / 2**30:.2f} GiB on {device.device_kind}"
