"""MoCo v2 (Chen et al., 2020; He et al., 2020, Eq. 1): InfoNCE against a queue of past keys.

The queues are explicit state: ``[V, K, D]`` L2-normalised keys, one queue per view (MoCo v2+ as in
solo-learn and CaSSLe: ``V = 2``; their ``[2, D, K]`` buffer transposed), and one int32 write
pointer shared by the views, updated by :func:`mocov2_enqueue` after each step (FIFO ring buffers).
:func:`mocov2_symmetric` is MoCo v2+'s loss: each direction contrasts against the queue of its key's
view, ``0.5 * (mocov2(q1, k2, queues[1]) + mocov2(q2, k1, queues[0]))``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcssl.losses._common import as_float, l2_normalize
from jaxcssl.losses.info_nce import info_nce


def mocov2(q: jax.Array, k: jax.Array, queue: jax.Array, temperature: float = 0.2) -> jax.Array:
    """``-log(exp(q.k/t) / (exp(q.k/t) + sum_{n in queue} exp(q.n/t)))`` averaged over the batch.

    ``q``: ``[N, D]`` online queries; ``k``: ``[N, D]`` momentum-encoder keys of the other view;
    ``queue``: ``[K, D]`` negatives. Cosine similarities; no gradient reaches ``k`` or ``queue``.
    """
    return info_nce(
        q,
        jax.lax.stop_gradient(k),
        temperature,
        extra_negatives=jax.lax.stop_gradient(queue),
        key_negatives=False,
    )


def mocov2_symmetric(
    q1: jax.Array, q2: jax.Array, k1: jax.Array, k2: jax.Array, queues: jax.Array, temperature: float = 0.2
) -> jax.Array:
    """MoCo v2+: ``½ (mocov2(q1, k2; Q²) + mocov2(q2, k1; Q¹))`` with ``queues = [Q¹, Q²]`` (``[2, K, D]``).

    ``Q¹`` holds past view-1 keys, ``Q²`` past view-2 keys: the negatives of a query are keys of the
    same view as its positive.
    """
    if queues.ndim != 3 or queues.shape[0] != 2:
        raise ValueError(f"mocov2_symmetric: queues must be [2, K, D] (one per view), got {queues.shape}")
    return 0.5 * (mocov2(q1, k2, queues[1], temperature) + mocov2(q2, k1, queues[0], temperature))


def mocov2_init_queue(rng: jax.Array, queue_size: int, dim: int, views: int = 2) -> tuple[jax.Array, jax.Array]:
    """``views`` queues of ``queue_size`` random unit vectors (``[views, K, D]``) and a zero pointer, as MoCo."""
    queue = l2_normalize(jax.random.normal(rng, (views, queue_size, dim), jnp.float32))
    return queue, jnp.zeros((), jnp.int32)


def mocov2_enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Write the normalised ``keys`` (stop-gradient) over the oldest entries -> ``(queue, ptr)``.

    ``queue`` is ``[..., K, D]`` and ``keys`` ``[..., N, D]`` with the same leading axes (``[2, K, D]``
    and ``[2, N, D]``: each view's keys into its own queue). Rows ``ptr, ptr + 1, ... (mod K)`` of
    every queue are replaced, so the batch size need not divide ``K``.
    """
    size, n = queue.shape[-2], keys.shape[-2]
    if keys.ndim != queue.ndim or keys.shape[:-2] != queue.shape[:-2] or keys.shape[-1] != queue.shape[-1]:
        expected = (*queue.shape[:-2], "N", queue.shape[-1])
        raise ValueError(f"mocov2_enqueue: keys must be {list(expected)} for a queue {queue.shape}, got {keys.shape}")
    if n > size:
        raise ValueError(f"mocov2_enqueue: batch of {n} keys exceeds the queue size {size}")
    keys = l2_normalize(jax.lax.stop_gradient(as_float(keys))).astype(queue.dtype)
    rows = (ptr + jnp.arange(n, dtype=jnp.int32)) % size
    return queue.at[..., rows, :].set(keys), ((ptr + n) % size).astype(jnp.int32)
