"""Errors about the user's input, each reported by the command line as one line naming the culprit.

Kept free of ml_collections, clu, grain and tfds so that the compiled-step modules (learners,
strategies, methods) can raise them on an accelerator machine that has only jax, flax and optax.
"""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""
