"""One pure step -> one compiled program: ``jax.jit`` with donation, shardings and ``lax.scan`` fusion.

A learner supplies ``step(state, inputs) -> (state, metrics)``; the engine never looks inside. The
state is donated (its buffers are reused for the new state), the new state and the metrics are
replicated over the mesh (the step itself shards its batch on the ``data`` axis), and
``steps_per_call`` steps are fused with ``lax.scan`` so the host dispatches one call per K steps.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jaxcssl import sharding

Pytree = Any
Metrics = dict[str, jax.Array]
StepFn = Callable[[Pytree, Pytree], tuple[Pytree, Metrics]]


def compile_step(step: StepFn, mesh: Mesh, steps_per_call: int = 1) -> Callable[[Pytree, Pytree], tuple[Pytree, Metrics]]:
    """A jitted ``(state, inputs) -> (state, metrics)`` running ``steps_per_call`` steps.

    Metrics come back stacked over the fused steps (leading axis ``steps_per_call``).
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call={steps_per_call} must be >= 1")

    def multi_step(state: Pytree, inputs: Pytree) -> tuple[Pytree, Metrics]:
        if steps_per_call == 1:  # no loop: XLA:CPU runs convolutions inside a loop body much slower
            state, metrics = step(state, inputs)
            return state, jax.tree_util.tree_map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda s, _: step(s, inputs), state, None, length=steps_per_call)

    replicated = sharding.replicated(mesh)
    return jax.jit(multi_step, donate_argnums=(0,), out_shardings=(replicated, replicated))
