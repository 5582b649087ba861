"""A new strategy in one module: replay as its own, weighted SSL term (the README's walk-through)."""
import dataclasses

from jaxcssl import strategies
from jaxcssl.errors import ConfigError
from jaxcssl.strategies.base import MemorySpec, Strategy, check_memory, ssl_only


@dataclasses.dataclass(frozen=True)
class WeightedReplay(Strategy):
    """``L_SSL(x_t) + w · L_SSL(x_M)``: the current batch and the replay batch in separate terms."""

    name = "weighted_replay"  # config.strategy.name, and the subtree config.strategy.weighted_replay
    label = "Weighted replay"  # its row name in reports
    CONFIG = dict(
        weight=0.5,  # w of the replay term
    )

    weight: float = 0.5
    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)  # from config.strategy.*

    @classmethod
    def check(cls, config):
        check_memory(config, cls.name)
        if not config.strategy.weighted_replay.weight >= 0:
            raise ConfigError(f"strategy.weighted_replay.weight={config.strategy.weighted_replay.weight} must be >= 0")

    def loss(self, method, params, state, batch, ctx):  # after the first task; before it: plain SSL
        current, (metrics, state) = ssl_only(method, params, state, batch.view1, batch.view2)
        replayed, (_, state) = ssl_only(method, params, state, batch.memory1, batch.memory2)
        return current + self.weight * replayed, ({**metrics, "replay": replayed}, state)


strategies.register(WeightedReplay)
