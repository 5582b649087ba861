"""LUMP (Madaan et al., ICLR 2022): mixup of current and memory samples, SSL loss on the mixture.

``x̃ = λ x_t + (1 − λ) x_M`` with one ``λ ~ Beta(α, α)`` per batch (α = 0.4) for both views, then
``L_SSL(z̃¹, z̃²)``. The first ``R`` current samples are mixed with the ``R`` memory samples and
the others stay clean, so ``replay_batch = batch_size`` is LUMP as published. Unlike the reference
code, whose buffer is never filled, the memory holds ``samples_per_task`` samples of every past task.
"""
from __future__ import annotations

import dataclasses

from jaxcssl import mixup
from jaxcssl.errors import ConfigError
from jaxcssl.strategies.base import MemorySpec, Strategy, check_memory, concat, ssl_only


@dataclasses.dataclass(frozen=True)
class LUMP(Strategy):
    name = "lump"
    label = "LUMP"
    CONFIG = dict(
        alpha=0.4,  # λ ~ Beta(α, α), one draw per batch (LUMP's CIFAR setting)
    )

    alpha: float = 0.4
    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)

    @classmethod
    def check(cls, config):
        check_memory(config, cls.name, mixes=True)
        if not config.strategy.lump.alpha > 0:
            raise ConfigError(f"strategy.lump.alpha={config.strategy.lump.alpha!r} must be > 0")

    def loss(self, method, params, state, batch, ctx):
        num_mixed = batch.memory1.shape[0]
        lam = mixup.sample_lambda(ctx.key, "batch", num_mixed, alpha=self.alpha)
        views = []
        for x, memory in ((batch.view1, batch.memory1), (batch.view2, batch.memory2)):
            views.append(concat(mixup.mix(x[:num_mixed], memory, lam), x[num_mixed:]))
        loss, (metrics, state) = ssl_only(method, params, state, *views)
        return loss, ({**metrics, "lambda": lam.mean()}, state)
