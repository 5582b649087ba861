"""Hyper-parameter schedules passed to a training step as arguments.

A schedule is a pytree (``flax.struct.dataclass``) whose fields are traced arrays, called with the
step within its phase: ``schedule(phase_step) -> {"learning_rate": ..., ...}``, the optimiser's
injected hyper-parameters at that step. Being an argument rather than a constant, one compiled step
serves every phase (each task has its own length and peak rate), and a learner chooses the schedule
without the step knowing which (flax's ``train_step(state, batch, learning_rate_fn)``).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TaskCosine:
    """Per-task schedule: linear warm-up from ``start_lr`` to ``peak_lr`` over ``warmup_steps``, then
    cosine to ``final_lr``.

    ``lr(s) = start + (peak − start)·(s+1)/W`` for ``s < W``, else
    ``final + (peak − final)·½(1 + cos(π·(s − W)/(T − W)))`` (T = ``total_steps``; the cosine is clipped
    at its end). CroMo-Mixup App. D.1: a cosine restarted for every task; BYOL's reference warms up for
    10 epochs from 0; solo-learn's (CaSSLe, Kaizen) from ``warmup_start_lr`` = 0.003.
    """

    total_steps: jax.Array  # int32 []
    warmup_steps: jax.Array  # int32 []
    peak_lr: jax.Array  # float32 []
    final_lr: jax.Array  # float32 []
    start_lr: jax.Array  # float32 []: the rate the warm-up starts from

    @classmethod
    def create(cls, total_steps: int, warmup_steps: int, peak_lr: float, final_lr: float,
               start_lr: float = 0.0) -> "TaskCosine":
        return cls(jnp.int32(total_steps), jnp.int32(warmup_steps), jnp.float32(peak_lr), jnp.float32(final_lr),
                   jnp.float32(start_lr))

    def learning_rate(self, step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warmup = jnp.asarray(self.warmup_steps, jnp.float32)
        decay = jnp.maximum(jnp.asarray(self.total_steps, jnp.float32) - warmup, 1.0)
        progress = jnp.clip((step - warmup) / decay, 0.0, 1.0)
        cosine = self.final_lr + (self.peak_lr - self.final_lr) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        warm = self.start_lr + (self.peak_lr - self.start_lr) * (step + 1.0) / jnp.maximum(warmup, 1.0)
        return jnp.where(step < warmup, warm, cosine)

    def __call__(self, step: jax.Array) -> dict[str, jax.Array]:
        return {"learning_rate": self.learning_rate(step)}
