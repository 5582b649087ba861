"""EWC (Kirkpatrick et al., PNAS 2017) with the Fisher information of the SSL loss.

At the end of task ``t`` the diagonal Fisher is estimated as the mean of squared gradients of the
SSL objective over ``num_batches`` augmented batches of the task, and accumulated over tasks
(online EWC). Later tasks add ``(λ/2) Σ_i F_i (θ_i − θ*_i)²`` with ``θ*`` the parameters at the
last task end.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxcssl.data.augment import augment
from jaxcssl.errors import ConfigError
from jaxcssl.strategies.base import Strategy, TaskEndResult, ssl_only


@dataclasses.dataclass(frozen=True)
class EWC(Strategy):
    name = "ewc"
    label = "EWC"
    CONFIG = dict(
        weight=100.0,  # λ of (λ/2) Σ F (θ − θ*)² (no SSL value published; chosen on the smoke runs)
        batches=20,    # augmented batches of the finished task averaged into its Fisher
    )

    weight: float = 100.0
    batches: int = 20

    @classmethod
    def check(cls, config):
        s = config.strategy.ewc
        if not s.weight >= 0:
            raise ConfigError(f"strategy.ewc.weight={s.weight!r} must be >= 0")
        if not s.batches > 0:
            raise ConfigError(f"strategy.ewc.batches={s.batches!r} must be > 0")

    def init_state(self, params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params["model"])
        return {"fisher": zeros, "anchor": jax.tree_util.tree_map(jnp.array, params["model"])}

    def loss(self, method, params, state, batch, ctx):
        loss, (metrics, state) = ssl_only(method, params, state, batch.view1, batch.view2)
        squared = jax.tree_util.tree_map(
            lambda f, p, a: jnp.sum(f * (p - a) ** 2),
            ctx.strategy_state["fisher"], params["model"], ctx.strategy_state["anchor"],
        )
        penalty = 0.5 * self.weight * sum(jax.tree_util.tree_leaves(squared))
        return loss + penalty, ({**metrics, "ewc": penalty}, state)

    def task_end(self, ctx):
        fisher = estimate_fisher(ctx, self.batches)
        total = jax.tree_util.tree_map(jnp.add, ctx.strategy_state["fisher"], fisher)
        anchor = jax.tree_util.tree_map(jnp.copy, ctx.params["model"])  # not an alias of donated params
        return TaskEndResult({"fisher": total, "anchor": anchor}, ctx.memory)


@functools.partial(jax.jit, static_argnames=("method", "views", "batch_size"))
def _squared_gradient(model_params, model_state, images: jax.Array, candidates: jax.Array, key: jax.Array, *,
                      method, views, batch_size: int):
    """Squared SSL-loss gradient on one augmented batch drawn from ``candidates`` (compiled once per shape)."""
    k_pick, k1, k2 = jax.random.split(key, 3)
    batch = images[jax.random.choice(k_pick, candidates, (batch_size,), replace=False)]
    view1, view2 = augment(k1, batch, views[0]), augment(k2, batch, views[1])

    def ssl(p):
        return ssl_only(method, {"model": p}, model_state, view1, view2)[0]

    return jax.tree_util.tree_map(jnp.square, jax.grad(ssl)(model_params))


def estimate_fisher(ctx, num_batches: int):
    """Mean of squared SSL-loss gradients over ``num_batches`` augmented batches of the finished task."""
    indices = ctx.task_indices
    batch_size = min(len(indices), ctx.batch_size)
    candidates = jnp.asarray(indices, jnp.int32)
    model_params = ctx.params["model"]
    fisher = jax.tree_util.tree_map(jnp.zeros_like, model_params)
    for i in range(num_batches):
        g2 = _squared_gradient(model_params, ctx.model_state, ctx.images, candidates, jax.random.fold_in(ctx.key, i),
                               method=ctx.method, views=ctx.views, batch_size=batch_size)
        fisher = jax.tree_util.tree_map(jnp.add, fisher, g2)
    return jax.tree_util.tree_map(lambda f: f / num_batches, fisher)
