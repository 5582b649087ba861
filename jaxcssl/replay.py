"""Fixed-capacity replay memory held as device arrays, with pure jitted insert and sample.

Three ways to fill it:
- :func:`insert_task`: at the end of a task, save ``num_samples`` of the task's samples chosen
  uniformly without replacement (CroMo-Mixup Sec. 4 and Table 6: 500/500/100/100 per task; the
  reference's ``np.random.choice(..., replace=False)``).
- :func:`insert_indices`: save given samples, in the given order (a selection made elsewhere, e.g.
  Kaizen's first 1% of each class).
- :func:`reservoir_insert`: reservoir sampling over a stream (Vitter, 1985, algorithm R), as ER/DER
  and online SSL memories do, so the memory is a uniform sample of everything offered so far.

:func:`sample` draws a replay batch uniformly with replacement over the filled slots, as the
reference's ``torch.randint``. The arrays are ordinary pytree leaves: replicate the buffer over a
mesh with ``NamedSharding(mesh, P())`` and the functions run unchanged under ``jax.jit``.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ReplayBuffer:
    """Replay memory; slots ``[0, count)`` are filled.

    ``labels`` are kept for evaluation (task-confusion studies, accuracy per task), never for the
    self-supervised training itself. ``features`` holds per-sample embeddings (DER stores the old
    model's outputs) and has zero columns when unused.
    """

    images: jax.Array  # uint8 [capacity, H, W, C]
    task_ids: jax.Array  # int32 [capacity], -1 where empty
    labels: jax.Array  # int32 [capacity], -1 where empty
    features: jax.Array  # float32 [capacity, feature_dim]
    count: jax.Array  # int32 []: filled slots
    num_seen: jax.Array  # int32 []: stream items offered to reservoir_insert so far

    @property
    def capacity(self) -> int:
        return self.images.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]


def create(capacity: int, image_shape: tuple[int, int, int], feature_dim: int = 0) -> ReplayBuffer:
    """An empty buffer of ``capacity`` uint8 images of ``image_shape`` (H, W, C)."""
    if capacity <= 0:
        raise ValueError(f"replay capacity must be positive, got {capacity}")
    if len(image_shape) != 3:
        raise ValueError(f"replay image_shape must be (H, W, C), got {image_shape}")
    return ReplayBuffer(
        images=jnp.zeros((capacity, *image_shape), jnp.uint8),
        task_ids=jnp.full((capacity,), -1, jnp.int32),
        labels=jnp.full((capacity,), -1, jnp.int32),
        features=jnp.zeros((capacity, feature_dim), jnp.float32),
        count=jnp.zeros((), jnp.int32),
        num_seen=jnp.zeros((), jnp.int32),
    )


def _concrete_int(x: jax.Array) -> int | None:
    """``int(x)``, or None when ``x`` is traced (the caller is inside ``jax.jit``)."""
    try:
        return int(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def _check_images(buffer: ReplayBuffer, images: jax.Array, who: str) -> None:
    if images.dtype != jnp.uint8 or images.shape[1:] != buffer.images.shape[1:]:
        raise ValueError(
            f"{who}: images must be uint8 [N, {', '.join(map(str, buffer.images.shape[1:]))}] like the buffer, "
            f"got {images.dtype} {list(images.shape)}"
        )


def _features_or_zeros(buffer: ReplayBuffer, features: jax.Array | None, n: int, who: str) -> jax.Array:
    if features is None:
        return jnp.zeros((n, buffer.feature_dim), jnp.float32)
    if features.shape != (n, buffer.feature_dim):
        raise ValueError(
            f"{who}: features must be [{n}, {buffer.feature_dim}] (one row per image, buffer feature_dim), "
            f"got {list(features.shape)}"
        )
    return features


def _write(
    buffer: ReplayBuffer,
    slots: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    task_ids: jax.Array,
    features: jax.Array,
) -> ReplayBuffer:
    """Write row ``i`` at ``slots[i]``; rows whose slot is ``>= capacity`` are dropped."""
    return buffer.replace(
        images=buffer.images.at[slots].set(images, mode="drop"),
        labels=buffer.labels.at[slots].set(labels.astype(jnp.int32), mode="drop"),
        task_ids=buffer.task_ids.at[slots].set(task_ids.astype(jnp.int32), mode="drop"),
        features=buffer.features.at[slots].set(features.astype(jnp.float32), mode="drop"),
    )


def insert_task(
    buffer: ReplayBuffer,
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    indices: jax.Array,
    task_id: int | jax.Array,
    num_samples: int,
    features: jax.Array | None = None,
) -> ReplayBuffer:
    """Save ``num_samples`` of ``indices`` (rows of ``images``/``labels``), drawn without replacement.

    They go to slots ``[count, count + num_samples)``. ``features`` (optional) has one row per
    image; for embeddings of the saved samples only, insert first and then write
    ``buffer.features.at[start:start + num_samples].set(...)``. Raises ValueError when the samples
    do not fit or there are fewer than ``num_samples`` indices; when ``buffer`` is traced (called
    inside ``jax.jit``) the capacity check cannot run and samples beyond the capacity are dropped.
    ``num_seen`` is left alone (it counts reservoir stream items).
    """
    indices = jnp.asarray(indices)
    _check_images(buffer, images, "insert_task")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"insert_task: labels must be [{images.shape[0]}] like images, got {list(labels.shape)}")
    if indices.ndim != 1 or num_samples > indices.shape[0]:
        raise ValueError(
            f"insert_task: num_samples={num_samples} needs a 1-D array of at least that many indices, "
            f"got shape {list(indices.shape)}"
        )
    count = _concrete_int(buffer.count)
    if count is not None and count + num_samples > buffer.capacity:
        raise ValueError(
            f"insert_task: {num_samples} samples do not fit, the buffer holds {count} of its capacity {buffer.capacity}"
        )
    features = _features_or_zeros(buffer, features, images.shape[0], "insert_task")
    return _insert_task(buffer, key, images, labels, indices, jnp.asarray(task_id, jnp.int32), features, num_samples)


@functools.partial(jax.jit, static_argnums=7)
def _insert_task(buffer, key, images, labels, indices, task_id, features, num_samples):
    chosen = jax.random.choice(key, indices, (num_samples,), replace=False)
    slots = buffer.count + jnp.arange(num_samples, dtype=jnp.int32)
    task_ids = jnp.full((num_samples,), task_id, jnp.int32)
    buffer = _write(buffer, slots, images[chosen], labels[chosen], task_ids, features[chosen])
    return buffer.replace(count=jnp.minimum(buffer.count + num_samples, buffer.capacity))


def insert_indices(
    buffer: ReplayBuffer,
    images: jax.Array,
    labels: jax.Array,
    indices: jax.Array,
    task_id: int | jax.Array,
    features: jax.Array | None = None,
) -> ReplayBuffer:
    """Save the samples ``indices`` (rows of ``images``/``labels``), in that order, into slots
    ``[count, count + len(indices))``.

    Raises ValueError when they do not fit; inside ``jax.jit`` samples beyond the capacity are
    dropped. ``features`` (optional) has one row per image, as in :func:`insert_task`.
    """
    indices = jnp.asarray(indices)
    _check_images(buffer, images, "insert_indices")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"insert_indices: labels must be [{images.shape[0]}] like images, got {list(labels.shape)}")
    if indices.ndim != 1:
        raise ValueError(f"insert_indices: indices must be 1-D, got shape {list(indices.shape)}")
    count = _concrete_int(buffer.count)
    if count is not None and count + indices.shape[0] > buffer.capacity:
        raise ValueError(f"insert_indices: {indices.shape[0]} samples do not fit, the buffer holds {count} of its "
                         f"capacity {buffer.capacity}")
    features = _features_or_zeros(buffer, features, images.shape[0], "insert_indices")
    return _insert_indices(buffer, images, labels, indices, jnp.asarray(task_id, jnp.int32), features)


@jax.jit
def _insert_indices(buffer, images, labels, indices, task_id, features):
    n = indices.shape[0]
    slots = buffer.count + jnp.arange(n, dtype=jnp.int32)
    task_ids = jnp.full((n,), task_id, jnp.int32)
    buffer = _write(buffer, slots, images[indices], labels[indices], task_ids, features[indices])
    return buffer.replace(count=jnp.minimum(buffer.count + n, buffer.capacity))


def reservoir_insert(
    buffer: ReplayBuffer,
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    task_ids: int | jax.Array,
    features: jax.Array | None = None,
) -> ReplayBuffer:
    """Offer a batch of stream items, in order, to the reservoir (Vitter's algorithm R).

    Item ``n`` of the stream (0-based, counting ``num_seen``) fills the next empty slot while there
    is one; afterwards it draws ``j`` uniformly from ``[0, n]`` and replaces slot ``j`` when
    ``j < capacity``. After ``N`` items every item is in the buffer with probability
    ``capacity / N``. The batch is processed in one vectorised step that equals the item-by-item
    loop: the draws do not depend on each other, and when two items pick the same slot the later
    one is kept. ``task_ids`` is one id per item or a scalar for all.
    """
    _check_images(buffer, images, "reservoir_insert")
    b = images.shape[0]
    if labels.shape != (b,):
        raise ValueError(f"reservoir_insert: labels must be [{b}] like images, got {list(labels.shape)}")
    task_ids = jnp.broadcast_to(jnp.asarray(task_ids, jnp.int32), (b,))
    features = _features_or_zeros(buffer, features, b, "reservoir_insert")
    return _reservoir_insert(buffer, key, images, labels, task_ids, features)


@jax.jit
def _reservoir_insert(buffer, key, images, labels, task_ids, features):
    capacity = buffer.capacity
    i = jnp.arange(images.shape[0], dtype=jnp.int32)
    position = buffer.num_seen + i  # stream position n of each item
    draw = jax.random.randint(key, i.shape, 0, position + 1)  # uniform over [0, n]
    fills = i < capacity - buffer.count
    slots = jnp.where(fills, buffer.count + i, jnp.where(draw < capacity, draw, capacity))
    # Of the items that pick the same slot, the last one in stream order is the one that stays.
    last_writer = jnp.full((capacity,), -1, jnp.int32).at[slots].max(i, mode="drop")
    stays = (slots < capacity) & (last_writer[jnp.minimum(slots, capacity - 1)] == i)
    buffer = _write(buffer, jnp.where(stays, slots, capacity), images, labels, task_ids, features)
    return buffer.replace(
        count=jnp.minimum(buffer.count + images.shape[0], capacity),
        num_seen=buffer.num_seen + images.shape[0],
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """``batch_size`` slots drawn uniformly with replacement from ``[0, count)``.

    Returns ``images``, ``task_ids``, ``labels``, ``features`` and the slot ``index``. Raises
    ValueError on an empty buffer; inside ``jax.jit`` (where the count is not known) an empty
    buffer yields slot 0 every time, recognisable by ``task_ids == -1``.
    """
    if _concrete_int(buffer.count) == 0:
        raise ValueError("sample: the replay buffer is empty (count=0); insert samples before drawing from it")
    return _sample(buffer, key, batch_size)


@functools.partial(jax.jit, static_argnums=2)
def _sample(buffer, key, batch_size):
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.count, 1))
    return {
        "images": buffer.images[index],
        "task_ids": buffer.task_ids[index],
        "labels": buffer.labels[index],
        "features": buffer.features[index],
        "index": index,
    }
