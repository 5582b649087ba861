"""Every loss gives the same value and gradient on 1 device and with the batch sharded over 4.

The batch axis is sharded ``P('data')`` over a 4-device mesh and state is replicated ``P()``; the
losses are written on global arrays, so XLA must insert the collectives (global BatchNorm-style
statistics, all negatives, Sinkhorn sums). Tolerance: 1e-5 relative (atol 1e-6 on gradients).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcssl import losses

N, D = 32, 8


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (tests/conftest.py sets --xla_force_host_platform_device_count=4)")
    return Mesh(np.asarray(jax.devices()[:4]), ("data",))


def rand(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


Z1, Z2 = rand(1, (N, D)), rand(2, (N, D)) + 0.5 * rand(1, (N, D))
QUEUES, PROTOS = losses.mocov2_init_queue(jax.random.key(0), 24, D)[0], rand(3, (6, D))
EXTRA = rand(4, (10, D))
STATE = losses.CorInfoMaxState(
    R1=jnp.eye(D) + 0.1 * jnp.cov(rand(5, (64, D)), rowvar=False),
    R2=jnp.eye(D),
    mu1=0.1 * rand(6, (D,)),
    mu2=jnp.zeros(D),
)

# name -> (loss of (z1, z2, replicated) -> scalar or array, replicated extra input)
CASES = {
    "barlow_twins": (lambda a, b, _: losses.barlow_twins(a, b), None),
    "barlow_twins_grouped": (lambda a, b, _: losses.barlow_twins_grouped(a, b, 8), None),
    "simclr": (lambda a, b, _: losses.simclr(a, b), None),
    "simclr_per_sample": (lambda a, b, _: losses.simclr_per_sample(a, b), None),
    "info_nce": (lambda a, b, e: losses.info_nce(a, b, 0.2, extra_negatives=e), EXTRA),
    "byol": (lambda a, b, _: losses.byol(a, b), None),
    "simsiam": (lambda a, b, _: losses.simsiam(a, b), None),
    "vicreg": (lambda a, b, _: losses.vicreg(a, b), None),
    "corinfomax": (lambda a, b, s: losses.corinfomax(a, b, s), STATE),
    "mocov2": (lambda a, b, q: losses.mocov2(a, b, q[1]), QUEUES),
    "mocov2_symmetric": (lambda a, b, q: losses.mocov2_symmetric(a, b, b, a, q), QUEUES),
    "swav": (lambda a, b, c: losses.swav(a, b, c), PROTOS),
    "wmse": (lambda a, b, _: losses.wmse(a, b, whitening_size=16), None),
}


def scalar(out):
    """A scalar to differentiate: the loss itself, or the sum of per-sample / per-group losses."""
    loss = out[0] if isinstance(out, tuple) else out
    return jnp.sum(loss)


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_device_equals_four(mesh, name):
    fn, extra = CASES[name]

    @jax.jit
    def run(a, b, e):
        out = fn(a, b, e)
        return out, jax.grad(lambda x: scalar(fn(x, b, e)))(a)

    single_out, single_grad = run(Z1, Z2, extra)
    batch, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    a, b = jax.device_put(Z1, batch), jax.device_put(Z2, batch)
    e = jax.device_put(extra, repl)
    assert len(a.sharding.device_set) == 4
    sharded_out, sharded_grad = run(a, b, e)
    assert len(sharded_grad.sharding.device_set) == 4
    leaves = jax.tree_util.tree_leaves
    for got, want in zip(leaves(sharded_out), leaves(single_out), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(sharded_grad), np.asarray(single_grad), rtol=1e-5, atol=1e-6)


def test_mocov2_enqueue_one_device_equals_four(mesh):
    enqueue = jax.jit(losses.mocov2_enqueue)
    both = jnp.stack([Z1[:8], Z2[:8]])
    want_q, want_p = enqueue(QUEUES, jnp.int32(20), both)
    keys = jax.device_put(both, NamedSharding(mesh, P(None, "data")))
    queue = jax.device_put(QUEUES, NamedSharding(mesh, P()))
    got_q, got_p = enqueue(queue, jnp.int32(20), keys)
    np.testing.assert_allclose(np.asarray(got_q), np.asarray(want_q), rtol=1e-6)
    assert int(got_p) == int(want_p) == 4


def test_corinfomax_state_stays_replicated(mesh):
    step = jax.jit(functools.partial(losses.corinfomax, la_R=0.5))
    batch, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    _, state = step(jax.device_put(Z1, batch), jax.device_put(Z2, batch), jax.device_put(STATE, repl))
    _, want = step(Z1, Z2, STATE)
    for got, ref in zip(state, want, strict=True):
        assert got.sharding.is_fully_replicated
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-7)
