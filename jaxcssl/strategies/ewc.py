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
from jaxcssl.strategies.base import Strategy, ssl_only


@dataclasses.dataclass(frozen=True)
class EWC(Strategy):
    weight: float = 100.0
    num_batches: int = 20

    def init_state(self, params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params["model"])
        return {"fisher": zeros, "anchor": jax.tree_util.tree_map(jnp.array, params["model"])}

    def loss(self, method, params, state, batch, ctx):
        loss, (metrics, state) = ssl_only(method, params, state, batch.view1, batch.view2)
        if not ctx.has_old:
            return loss, (metrics, state)
        squared = jax.tree_util.tree_map(
            lambda f, p, a: jnp.sum(f * (p - a) ** 2),
            ctx.strategy_state["fisher"], params["model"], ctx.strategy_state["anchor"],
        )
        penalty = 0.5 * self.weight * sum(jax.tree_util.tree_leaves(squared))
        return loss + penalty, ({**metrics, "ewc": penalty}, state)

    def end_of_task(self, run, state, phase, key):
        fisher = estimate_fisher(run, state, phase.rows.reshape(-1), key, self.num_batches)
        total = jax.tree_util.tree_map(jnp.add, state.strategy_state["fisher"], fisher)
        anchor = jax.tree_util.tree_map(jnp.copy, state.params["model"])  # not an alias of donated params
        return state.replace(strategy_state={"fisher": total, "anchor": anchor})


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


def estimate_fisher(run, state, indices, key, num_batches: int):
    """Mean of squared SSL-loss gradients over ``num_batches`` augmented batches of ``indices``."""
    batch_size = min(len(indices), run.batch_size)
    candidates = jnp.asarray(indices, jnp.int32)
    fisher = jax.tree_util.tree_map(jnp.zeros_like, state.params["model"])
    for i in range(num_batches):
        g2 = _squared_gradient(state.params["model"], state.model_state, run.device_images, candidates,
                               jax.random.fold_in(key, i), method=run.method, views=run.views, batch_size=batch_size)
        fisher = jax.tree_util.tree_map(jnp.add, fisher, g2)
    return jax.tree_util.tree_map(lambda f: f / num_batches, fisher)
