"""An ensemble of ``m`` models as one pytree with a leading member axis (FUSSL Sec. 3.1).

Parameters, BatchNorm statistics, loss states, optimiser states and EMA targets of the members are
stacked leaf by leaf, so one ``jax.vmap`` runs the loss and the optimiser update of every member in
one compiled step: each member keeps its own batch statistics, LARS trust ratios and EMA target.
Each member trains on its own pair out of ``2m`` augmented views of every sample.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcssl.data.augment import ViewConfig, augment
from jaxcssl.sharding import DATA_AXIS

Pytree = Any


def stack(tree: Pytree, m: int) -> Pytree:
    """``m`` identical copies of every leaf on a new leading axis (the identical initialisation)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(jnp.asarray(x)[None], m, axis=0), tree)


def member(tree: Pytree, i: int) -> Pytree:
    """Member ``i`` of a stacked tree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def member_views(key: jax.Array, images: jax.Array, views: tuple[ViewConfig, ViewConfig], m: int,
                 mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """``2m`` augmented views of every image: ``(x1, x2)``, each ``[m, B, H, W, C]``; member i gets
    ``(x1[i], x2[i])``, drawn with the keys ``split(key, 2m)[2i]`` and ``[2i + 1]``."""
    keys = jax.random.split(key, 2 * m).reshape(m, 2, *key.shape)
    x1 = jax.vmap(lambda k: augment(k, images, views[0]))(keys[:, 0])
    x2 = jax.vmap(lambda k: augment(k, images, views[1]))(keys[:, 1])
    if mesh is not None:  # the batch axis stays on the data axis of the mesh
        batch = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
        x1, x2 = jax.lax.with_sharding_constraint(x1, batch), jax.lax.with_sharding_constraint(x2, batch)
    return x1, x2
