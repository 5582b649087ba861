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


def _cosine_anneal(start: jax.Array, end: jax.Array, pct: jax.Array) -> jax.Array:
    """PyTorch's ``_annealing_cos``: ``end + (start − end)/2 · (cos(π·pct) + 1)``."""
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)


@flax.struct.dataclass
class OneCycle:
    """PyTorch ``OneCycleLR(anneal_strategy="cos", three_phase=False)`` over ``total_steps``, repeated.

    Step ``s`` is step ``n = s mod total_steps`` of a cycle: SLCLRS (Online-SSL Sec. 4.1) is one cycle
    over the N local steps of every stream batch. With ``e = pct_start·T − 1`` (fractional when
    ``pct_start·T`` is not an integer, as in PyTorch) the rate rises from ``max_lr/div_factor`` to
    ``max_lr`` for ``n ≤ e`` (``pct = n/e``) and falls to ``max_lr/div_factor/final_div_factor`` at
    ``n = T − 1`` (``pct = (n − e)/(T − 1 − e)``), each along a half cosine; the momentum moves
    inversely between ``max_momentum`` and ``base_momentum`` (Eq. 7: ``α_n, μ_n = s(n)``).
    """

    total_steps: jax.Array  # int32 []: T, the steps of one cycle
    phase_end: jax.Array  # float32 []: e = pct_start·T − 1, the last step of the rise
    initial_lr: jax.Array  # float32 []: max_lr / div_factor
    max_lr: jax.Array
    min_lr: jax.Array  # float32 []: initial_lr / final_div_factor
    base_momentum: jax.Array
    max_momentum: jax.Array
    cycle_momentum: bool = flax.struct.field(pytree_node=False, default=True)

    @classmethod
    def create(cls, total_steps: int, max_lr: float, *, pct_start: float = 0.3, div_factor: float = 25.0,
               final_div_factor: float = 1e4, base_momentum: float = 0.85, max_momentum: float = 0.95,
               cycle_momentum: bool = True) -> "OneCycle":
        """PyTorch's arguments and defaults (``OneCycleLR(optimizer, max_lr, total_steps, ...)``)."""
        initial = max_lr / div_factor
        return cls(jnp.int32(total_steps), jnp.float32(pct_start * total_steps - 1), jnp.float32(initial),
                   jnp.float32(max_lr), jnp.float32(initial / final_div_factor), jnp.float32(base_momentum),
                   jnp.float32(max_momentum), cycle_momentum)

    def __call__(self, step: jax.Array) -> dict[str, jax.Array]:
        n = jnp.asarray(step % self.total_steps, jnp.float32)
        last = jnp.asarray(self.total_steps, jnp.float32) - 1.0
        rising = n <= self.phase_end
        # A zero-length phase is never the one in use (OnlineLearner.check refuses pct_start·T = 1).
        rise = n / jnp.where(self.phase_end == 0, 1.0, self.phase_end)
        fall = (n - self.phase_end) / jnp.where(last == self.phase_end, 1.0, last - self.phase_end)
        out = {"learning_rate": jnp.where(rising, _cosine_anneal(self.initial_lr, self.max_lr, rise),
                                          _cosine_anneal(self.max_lr, self.min_lr, fall))}
        if self.cycle_momentum:
            out["momentum"] = jnp.where(rising, _cosine_anneal(self.max_momentum, self.base_momentum, rise),
                                        _cosine_anneal(self.base_momentum, self.max_momentum, fall))
        return out
