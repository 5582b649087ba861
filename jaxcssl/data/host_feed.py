"""The host placement's input pipeline: batches gathered from host memory, fed sharded, one call ahead.

With ``data.placement="host"`` the training set stays in host memory. For every compiled call of
``k`` fused steps the learner names the ``[k, B]`` sample indices (the same indices the device
placement draws inside the step); each process gathers only the rows its devices hold and hands
them to :func:`jax.make_array_from_process_local_data`. While one call runs, a worker thread
gathers and transfers the next one, so the step waits only when the host is slower than the device.
"""
from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Hashable
from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh

from jaxcssl import sharding

IndexFn = Callable[[], np.ndarray]  # -> int [k, B] sample indices of one call


class HostFeed:
    """``[k, B, ...]`` images and ``[k, B]`` labels of one call, prepared one call ahead.

    Args:
      images: uint8 ``[N, H, W, C]`` training images in host memory (identical on every process).
      labels: int ``[N]`` training labels.
      mesh: the devices the batch is sharded over (axis 1 of the fed arrays).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mesh: Mesh):
        self.images, self.labels = images, labels.astype(np.int32)
        self.sharding = sharding.steps_batch_sharded(mesh)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="host_feed")
        self._ahead: Optional[tuple[Hashable, concurrent.futures.Future]] = None

    def gather(self, indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The call's images and labels for ``indices`` (int ``[k, B]``): this process's rows only."""
        indices = np.asarray(indices)
        steps, batch = indices.shape
        rows = sharding.process_rows(self.sharding, (steps, batch), axis=1)
        local = indices[:, rows]
        images = jax.make_array_from_process_local_data(self.sharding, self.images[local],
                                                        (steps, batch, *self.images.shape[1:]))
        labels = jax.make_array_from_process_local_data(self.sharding, self.labels[local], (steps, batch))
        return images, labels

    def get(self, key: Hashable, indices: IndexFn, next_key: Optional[Hashable] = None,
            next_indices: Optional[IndexFn] = None) -> tuple[jax.Array, jax.Array]:
        """The batches of call ``key``, and the next call ``next_key`` started in the background."""
        if self._ahead is not None and self._ahead[0] == key:
            result = self._ahead[1].result()
        else:
            if self._ahead is not None:
                self._ahead[1].cancel()
            result = self.gather(indices())
        self._ahead = None
        if next_key is not None:
            self._ahead = (next_key, self._pool.submit(lambda: self.gather(next_indices())))
        return result
