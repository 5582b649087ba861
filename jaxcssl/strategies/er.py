"""Experience replay (ER, Robins 1995): memory samples concatenated to the current batch."""
from __future__ import annotations

import dataclasses

from jaxcssl.strategies.base import MemorySpec, Strategy, check_memory, concat, ssl_only


@dataclasses.dataclass(frozen=True)
class ExperienceReplay(Strategy):
    """``L_SSL`` on ``[x_t; x_M]`` for both views (the reference's ``process_batch_ering``)."""

    name = "er"
    label = "ER"

    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)

    @classmethod
    def check(cls, config):
        check_memory(config, cls.name)

    def loss(self, method, params, state, batch, ctx):
        x1, x2 = concat(batch.view1, batch.memory1), concat(batch.view2, batch.memory2)
        return ssl_only(method, params, state, x1, x2)
