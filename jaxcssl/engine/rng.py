"""Named random streams: one base key, one independent stream per purpose.

``streams(seed)`` derives one key per name from ``PRNGKey(seed)`` (``fold_in`` of a fixed 32-bit
id of the name, so adding a stream never changes the others); consumers fold in only their own
counter: the step stream the global step, the epoch stream the phase and epoch, the evaluation
stream the phase. Two purposes therefore never share a key, unlike integer offsets folded into one
key next to the step counter (there, the step-7 key was the initialisation key).

Streams:

* ``init``: model, head and strategy-module initialisation (once per run);
* ``step``: everything drawn inside a training step (views, replay batch, mixup λ, ...):
  ``fold_in(stream, global_step)``;
* ``epoch_order``: the sample permutation of each epoch: ``fold_in(fold_in(stream, phase), epoch)``;
* ``task_end``: end-of-phase work (memory selection, EWC's Fisher batches): ``fold_in(stream, phase)``;
* ``eval``: the evaluation after phase ``p``: ``fold_in(stream, p)``;
* ``eval_during``: the evaluations within phase ``p`` at step ``s``: ``fold_in(fold_in(stream, p), s)``;
* ``final_eval``: the final evaluation;
* ``data``: dataset-level draws of a learner (stream orders, labelled subsets).
"""
from __future__ import annotations

import zlib

import jax

STREAMS = ("init", "step", "epoch_order", "task_end", "eval", "eval_during", "final_eval", "data")


def stream_id(name: str) -> int:
    """The fixed 32-bit id of a stream name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(name.encode("utf-8"))


def stream(seed: int, name: str) -> jax.Array:
    """The base key of stream ``name`` for run seed ``seed``."""
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; known: {', '.join(STREAMS)}")
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream_id(name))


def phase_key(seed: int, name: str, phase: int) -> jax.Array:
    """Stream ``name``'s key for phase ``phase``: ``fold_in(stream, phase)``."""
    return jax.random.fold_in(stream(seed, name), phase)


def task_end_keys(seed: int, phase: int) -> tuple[jax.Array, jax.Array]:
    """``(memory selection, strategy)`` keys of the end of phase ``phase``."""
    memory, strategy = jax.random.split(phase_key(seed, "task_end", phase))
    return memory, strategy


def streams(seed: int) -> dict[str, jax.Array]:
    """Every stream's base key: ``{name: key}``."""
    return {name: stream(seed, name) for name in STREAMS}


def eval_key(seed: int, phase: int | None) -> jax.Array:
    """The key of the evaluation after ``phase`` (``None``: the final evaluation), so that
    re-evaluating a checkpoint reproduces the engine's probe numbers."""
    if phase is None:
        return stream(seed, "final_eval")
    return phase_key(seed, "eval", phase)
