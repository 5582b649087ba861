"""Data parallelism with ``jax.jit`` + ``Mesh``/``NamedSharding`` (the API that replaced ``pmap``).

One program serves one device and many: the batch is sharded on a ``data`` mesh axis, model state,
the on-device dataset and the replay buffer are replicated. The losses are written on the global
batch, so BatchNorm statistics and contrastive negatives span all devices; XLA inserts the
collectives. Multi-host runs (TPU pods, several GPU hosts) call :func:`initialize_distributed` first.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(enabled: bool, timeout_s: int = 60) -> None:
    """``jax.distributed.initialize`` for multi-process runs; a no-op when disabled or done already.

    On Cloud TPU pods and SLURM / Open MPI clusters jax finds the coordinator, process count and id
    itself; elsewhere set ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``
    and ``JAX_PROCESS_ID``, which are passed on. A launch that cannot assemble (a wrong count, an
    unreachable coordinator) fails within ``timeout_s`` with one line.
    """
    if not enabled or jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    for key, env, kind in (("coordinator_address", "JAX_COORDINATOR_ADDRESS", str),
                           ("num_processes", "JAX_NUM_PROCESSES", int), ("process_id", "JAX_PROCESS_ID", int)):
        if os.environ.get(env):
            try:
                kwargs[key] = kind(os.environ[env])
            except ValueError:
                raise DistributedError(f"{env}={os.environ[env]!r} is not a valid {key}") from None
    tried = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "auto-detected"
    # XLA aborts the process (a C++ stack trace) when the processes do not assemble in time: a
    # watchdog reports it first, as one line, and exits.
    assembled = _watchdog(max(timeout_s - 5, 1), (
        f"train.distributed: the processes did not assemble within {max(timeout_s - 5, 1)} s ({tried}); "
        "check that every process has the same JAX_NUM_PROCESSES and a distinct JAX_PROCESS_ID, and that the "
        "coordinator (process 0) is reachable"))
    try:
        jax.distributed.initialize(initialization_timeout=timeout_s, **kwargs)
    except Exception as error:  # noqa: BLE001 -- jax raises RuntimeError/ValueError/XlaRuntimeError
        text = " ".join(str(error).split())
        raise DistributedError(f"train.distributed: the processes did not assemble ({tried}): {text[:300]}") from None
    finally:
        assembled.set()


def _watchdog(seconds: float, message: str) -> threading.Event:
    """Print ``jaxcssl: error: message`` and exit with status 1 unless the event is set in time."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            os.write(2, f"jaxcssl: error: {message}\n".encode())
            os._exit(1)

    threading.Thread(target=watch, name="jaxcssl-distributed-watchdog", daemon=True).start()
    return done


class DistributedError(ValueError):
    """A multi-process launch that cannot start (one line, naming what was tried)."""


def is_main_process() -> bool:
    """Process 0 writes the run's files (config, results, plots, metrics); every process checkpoints."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: int = 600) -> None:
    """All processes reach this point before any goes on (a no-op with one process).

    A barrier of JAX's coordination service, not a device collective: on CPUs the collectives
    (gloo) give up when the processes enter one more than 30 s apart, so the processes meet here
    before their first collective after work whose length differs between them (compiling, evaluating).
    """
    if jax.process_count() > 1:
        from jax._src import distributed

        distributed.global_state.client.wait_at_barrier(f"jaxcssl:{name}", timeout_s * 1000)


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D ``data`` mesh over the first ``num_devices`` devices (0 = all devices of all hosts)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(f"train.num_devices={num_devices} but only {len(devices)} devices are visible")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh")


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a host pytree (identical on every process) replicated over the mesh."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def shard_batch(x: jax.Array, mesh: Mesh) -> jax.Array:
    """Inside ``jit``: constrain a global batch array to be split over the ``data`` axis."""
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))
