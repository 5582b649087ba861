"""CaSSLe (Fini et al., 2022) and CaSSLe+ (CaSSLe with replay, CroMo Sec. 6.2).

``L = L_SSL(z¹, z²) + ζ (L_SSL(z̄¹, h(z¹)) + L_SSL(z̄², h(z²)))``: the predictor ``h`` maps the
current projection onto the frozen old model's, through each method's own loss. CaSSLe+ applies
both terms to the current batch concatenated with a replay batch (the reference's
``process_batch_ering`` with distillation).
"""
from __future__ import annotations

import dataclasses

from jaxcssl.strategies.base import (
    Distilling,
    MemorySpec,
    check_memory,
    concat,
    distill_term,
    old_embed,
    online,
    ssl_term,
)


def ssl_with_distillation(strategy, method, params, state, x1, x2, ctx, weight):
    """``L_SSL(z¹, z²) + weight · Σ_v L(z̄ᵛ, h(zᵛ))`` on views ``x1``, ``x2``."""
    e1, state = online(method, params, state, x1)
    e2, state = online(method, params, state, x2)
    ssl, _, state = ssl_term(method, state, e1, e2, x1, x2)
    distill = 0.0
    for e, x in ((e1, x1), (e2, x2)):
        old = old_embed(method, ctx.old, x, strategy.old_model_bn)
        term, state = distill_term(
            strategy.distill_predictor, method, params, state, e.projection, method.key_embedding(old, old)
        )
        distill = distill + term
    return ssl + weight * distill, ({"ssl": ssl, "distill": distill}, state)


@dataclasses.dataclass(frozen=True)
class CaSSLe(Distilling):
    """Predictive distillation to the previous task's model (ζ = ``distill_weight``)."""

    name = "cassle"
    label = "CaSSLe"
    CONFIG = dict(
        distill_weight=1.0,  # ζ: weight of the distillation sum over both views (CaSSLe uses 1)
    )

    distill_weight: float = 1.0

    def loss(self, method, params, state, batch, ctx):
        return ssl_with_distillation(self, method, params, state, batch.view1, batch.view2, ctx, self.distill_weight)


@dataclasses.dataclass(frozen=True)
class CaSSLePlus(CaSSLe):
    """CaSSLe on the current batch concatenated with a replay batch."""

    name = "cassle_plus"
    label = "CaSSLe+"

    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)

    @classmethod
    def check(cls, config):
        super().check(config)
        check_memory(config, cls.name)

    def loss(self, method, params, state, batch, ctx):
        x1, x2 = concat(batch.view1, batch.memory1), concat(batch.view2, batch.memory2)
        return ssl_with_distillation(self, method, params, state, x1, x2, ctx, self.distill_weight)
