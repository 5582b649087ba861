"""The memory plan of a compiled step, per device, printed before training and checked against the device.

Per device: each top-level part of the state (parameters, optimiser state, old model, EMA target,
replay buffer, ...) and each input array (the on-device dataset), by the bytes of its shard on the
first local device (a replicated array counts whole on every device), plus XLA's estimate of the
step's temporary memory (``compiled.memory_analysis()``). When the backend reports the device's
capacity (GPUs, TPUs; not CPUs) a plan that does not fit stops the run with one line naming its
largest item and what to change.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax

from jaxcssl.errors import ConfigError
from jaxcssl.sharding import device_capacity

Pytree = Any
# What to change when an item of the plan is what does not fit.
ADVICE = {
    "dataset": "a smaller dataset.image_size, fewer classes (dataset.classes) or a device with more memory",
    "replay": "a smaller strategy.samples_per_task (the online learner: online.memory_size)",
    "members": "a smaller fussl.ensemble_size, model.width or model.head_scale",  # FUSSL's stacked ensemble
    "step temporaries": "a smaller train.batch_size (or train.steps_per_call; the online learner: online.stream_batch, "
                        "online.memory_batch), or more devices (train.num_devices)",
}
DEFAULT_ADVICE = "a smaller model (model.width, model.head_scale) or more memory per device"


def _device_bytes(tree: Pytree) -> int:
    """Bytes of ``tree`` on the first local device (its shard there)."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            total += leaf.addressable_shards[0].data.nbytes
        elif hasattr(leaf, "nbytes"):
            total += leaf.nbytes
    return total


def _parts(state: Pytree) -> dict[str, Pytree]:
    """The top-level fields of a dataclass state (``params``, ``opt_state``, ``old``, ...)."""
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {"state": state}


@dataclasses.dataclass
class MemoryPlan:
    items: dict[str, int]  # name -> bytes per device
    capacity: Optional[int]  # bytes the device offers, when the backend says

    @property
    def total(self) -> int:
        return sum(self.items.values())

    def line(self, program: str) -> str:
        parts = ", ".join(f"{name} {_mib(size)}" for name, size in self.items.items() if size >= 2**10)
        of = f" of {_mib(self.capacity)}" if self.capacity else " (the backend reports no capacity)"
        return f"memory per device for the {program!r} step: {parts}; total {_mib(self.total)}{of}"

    def check(self, program: str) -> None:
        if self.capacity is None or self.total <= self.capacity:
            return
        name, size = max(self.items.items(), key=lambda item: item[1])
        raise ConfigError(f"the {program!r} step needs {_mib(self.total)} per device but the device has "
                          f"{_mib(self.capacity)}; the largest item is {name} ({_mib(size)}): use "
                          f"{ADVICE.get(name, DEFAULT_ADVICE)}")


def plan(state: Pytree, inputs: Pytree, compiled=None) -> MemoryPlan:
    """The plan of one step called with ``state`` and ``inputs``; with its ``compiled`` executable it
    includes XLA's estimate of the step's temporaries."""
    items: dict[str, int] = {}
    for name, part in _parts(state).items():
        items["replay" if name in ("replay", "memory") else name] = _device_bytes(part)
    fields = inputs._asdict() if hasattr(inputs, "_asdict") else {"inputs": inputs}
    dataset = sum(_device_bytes(fields[k]) for k in ("images", "labels") if k in fields)
    items["dataset"] = dataset
    items["other inputs"] = _device_bytes(inputs) - dataset
    analysis = compiled.memory_analysis() if compiled is not None else None
    if analysis is not None:
        items["step temporaries"] = int(getattr(analysis, "temp_size_in_bytes", 0) or 0)
    return MemoryPlan(items=items, capacity=device_capacity())


def _mib(size: Optional[int]) -> str:
    if size is None:
        return "n/a"
    if size >= 2**30:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
