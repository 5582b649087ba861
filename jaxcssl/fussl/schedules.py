"""FUSSL's learning-rate schedules, pytrees passed to the step like :mod:`jaxcssl.engine.schedules`.

Phase 1 (Sec. 4.1.3): the peak rate (0.2) for the first 10 epochs, then 0.001 (:class:`StepDecay`);
phase 2: a constant 0.001 (:class:`Constant`). :class:`Continued` resumes a schedule where an
earlier phase left it: the cycles of progressive relabelling and the "1200 ep" baseline continue
one phase-1 schedule instead of restarting it.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class StepDecay:
    """``lr(s) = initial_lr`` for ``s < drop_steps``, then ``final_lr``."""

    drop_steps: jax.Array  # int32 []
    initial_lr: jax.Array  # float32 []
    final_lr: jax.Array  # float32 []

    @classmethod
    def create(cls, drop_steps: int, initial_lr: float, final_lr: float) -> "StepDecay":
        return cls(jnp.int32(drop_steps), jnp.float32(initial_lr), jnp.float32(final_lr))

    def __call__(self, step: jax.Array) -> dict[str, jax.Array]:
        return {"learning_rate": jnp.where(step < self.drop_steps, self.initial_lr, self.final_lr)}


@flax.struct.dataclass
class Constant:
    """``lr(s) = value``."""

    value: jax.Array  # float32 []

    @classmethod
    def create(cls, value: float) -> "Constant":
        return cls(jnp.float32(value))

    def __call__(self, step: jax.Array) -> dict[str, jax.Array]:
        del step
        return {"learning_rate": self.value}


@flax.struct.dataclass
class Continued:
    """``schedule`` from its step ``offset`` on: ``lr(s) = schedule(offset + s)``."""

    schedule: Any  # a schedule pytree
    offset: jax.Array  # int32 []: steps of the schedule taken by earlier phases

    @classmethod
    def create(cls, schedule: Any, offset: int) -> "Continued":
        return cls(schedule, jnp.int32(offset))

    def __call__(self, step: jax.Array) -> dict[str, jax.Array]:
        return self.schedule(self.offset + step)
