"""DER (Buzzega et al., NeurIPS 2020) for SSL: replay of stored old-model embeddings.

At the end of each task the model's projections of the samples saved into the memory are stored
beside them (computed on the plain, un-augmented images). Later tasks add
``α · MSE(z(x_M), z_stored)`` between the current projection of an augmented memory sample and its
stored embedding to the SSL loss of the current batch (the "dark knowledge" term; DER stores
logits, an SSL model's outputs are its projections). Both sides are L2-normalised: the scale of a
projection is arbitrary for objectives that normalise inside their loss (CorInfoMax's projections grow
without bound and the raw MSE overflows), so DER matches their directions.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcssl.errors import ConfigError
from jaxcssl.strategies.base import MemorySpec, Strategy, TaskEndResult, check_memory, online, ssl_only


def _unit(z: jax.Array) -> jax.Array:
    return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


@dataclasses.dataclass(frozen=True)
class DER(Strategy):
    name = "der"
    label = "DER"
    CONFIG = dict(
        weight=1.0,  # α of α · MSE(z(x_M), stored z̄_M) (DER's α; no SSL value published)
    )

    weight: float = 1.0
    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)

    @classmethod
    def check(cls, config):
        check_memory(config, cls.name)
        if not config.strategy.der.weight >= 0:
            raise ConfigError(f"strategy.der.weight={config.strategy.der.weight!r} must be >= 0")

    @classmethod
    def memory_feature_dim(cls, method):
        return method.model.projector.out_dim

    def loss(self, method, params, state, batch, ctx):
        loss, (metrics, state) = ssl_only(method, params, state, batch.view1, batch.view2)
        memory, state = online(method, params, state, batch.memory1)
        der = jnp.mean((_unit(memory.projection) - _unit(batch.memory_features)) ** 2)  # F.mse_loss, as DER
        return loss + self.weight * der, ({**metrics, "der": der}, state)

    def task_end(self, ctx):
        """Store the snapshot's projections of the plain images just saved into the memory."""
        start, stop = ctx.new_memory_slots
        memory = ctx.memory
        if stop > start:
            embedding, _ = ctx.method.embed(ctx.old["params"], ctx.old["batch_stats"],
                                            ctx.preprocess(memory.images[start:stop]), train=False)
            memory = memory.replace(features=memory.features.at[start:stop].set(embedding.projection))
        return TaskEndResult(ctx.strategy_state, memory)
