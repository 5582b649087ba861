"""A new learner in one module: the continual protocol at one constant learning rate (the README's
walk-through). The schedule is a pytree the engine passes to the compiled step."""
import flax.struct
import jax
import jax.numpy as jnp

from jaxcssl import learners
from jaxcssl.errors import ConfigError
from jaxcssl.learners.continual import ContinualLearner


@flax.struct.dataclass
class Constant:
    """``lr(s) = value`` at every step ``s``."""

    value: jax.Array

    def __call__(self, step):
        return {"learning_rate": self.value}


class ConstantRate(ContinualLearner):
    """Every task at one learning rate: no warm-up, no decay."""

    name = "constant_rate"  # config.learner.name, and the subtree config.constant_rate
    CONFIG = dict(
        learning_rate=0.05,  # the rate of every step
    )

    @classmethod
    def check(cls, config):
        super().check(config)
        if not config.constant_rate.learning_rate > 0:
            raise ConfigError(f"constant_rate.learning_rate={config.constant_rate.learning_rate} must be > 0")

    def schedule(self, phase):
        return Constant(jnp.float32(self.config.constant_rate.learning_rate))


learners.register(ConstantRate)
