"""Named random streams: the keys of different purposes never meet, even over a long run."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcssl.engine import rng

LONG_RUN_STEPS = 10_000_000


def _as_uint64(keys: jax.Array) -> np.ndarray:
    keys = np.asarray(jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys)
    return keys.astype(np.uint64)[..., 0] << np.uint64(32) | keys.astype(np.uint64)[..., 1]


def _fold_all(key: jax.Array, count: int) -> np.ndarray:
    return _as_uint64(jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))(key, jnp.arange(count, dtype=jnp.uint32)))


def _run_keys(seed: int, steps: int, phases: int = 100, epochs: int = 5_000) -> dict[str, np.ndarray]:
    """Every key a run of ``steps`` steps and ``phases`` phases of up to ``epochs`` epochs draws."""
    keys = {
        "step": _fold_all(rng.stream(seed, "step"), steps),
        "init": _as_uint64(jnp.stack([rng.stream(seed, "init"), *jax.random.split(rng.stream(seed, "init"))])),
        "final_eval": _as_uint64(rng.eval_key(seed, None)[None]),
        "data": _as_uint64(rng.stream(seed, "data")[None]),
    }
    epoch = [_fold_all(rng.phase_key(seed, "epoch_order", p), epochs) for p in range(phases)]
    keys["epoch_order"] = np.concatenate([_as_uint64(jnp.stack([rng.phase_key(seed, "epoch_order", p)
                                                                for p in range(phases)])), *epoch])
    task_end = [jnp.stack([rng.phase_key(seed, "task_end", p), *rng.task_end_keys(seed, p)]) for p in range(phases)]
    keys["task_end"] = _as_uint64(jnp.concatenate(task_end))
    keys["eval"] = _as_uint64(jnp.stack([rng.eval_key(seed, p) for p in range(phases)]))
    keys["eval_during"] = np.concatenate([_fold_all(rng.phase_key(seed, "eval_during", p), 1_000)
                                          for p in range(phases)])
    return keys


def _collisions(keys: dict[str, np.ndarray]) -> int:
    everything = np.concatenate(list(keys.values()))
    return everything.size - np.unique(everything).size


def test_stream_ids_are_distinct_and_fixed():
    ids = [rng.stream_id(name) for name in rng.STREAMS]
    assert len(set(ids)) == len(ids)
    assert rng.stream_id("step") == 0x43B9FE3C  # a stream's id never depends on the others


def test_the_streams_of_a_long_run_never_meet():
    keys = _run_keys(seed=0, steps=LONG_RUN_STEPS)
    assert keys["step"].size == LONG_RUN_STEPS
    assert _collisions(keys) == 0


def test_the_check_finds_the_collisions_of_integer_offsets_in_one_key():
    """The scheme the streams replace: offsets folded into the step counter's key. Its model-init key
    is the step-7 key and the evaluation key after phase 0 is the key of step 3,000,017."""
    base = jax.random.PRNGKey(0)
    old = {"step": _fold_all(base, 3_000_100), "init": _as_uint64(jax.random.fold_in(base, 7)[None]),
           "eval": _as_uint64(jax.random.fold_in(base, 3_000_017)[None])}
    assert _collisions(old) == 2


def test_seeds_give_different_streams_and_the_same_seed_the_same():
    assert np.array_equal(_as_uint64(rng.stream(3, "step")), _as_uint64(rng.stream(3, "step")))
    assert not np.array_equal(_as_uint64(rng.stream(3, "step")), _as_uint64(rng.stream(4, "step")))
    assert set(rng.streams(0)) == set(rng.STREAMS)
