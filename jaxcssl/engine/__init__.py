"""The engine: one loop for every learner, the compiled step, named random streams, schedules.

``jaxcssl.engine.run(config, workdir)`` runs (or resumes) an experiment; ``prepare(config)`` builds
its learner with every check done and nothing compiled. (Imported lazily: learners import
``engine.rng`` and ``engine.schedules``, and the loop imports the learners.)
"""
from __future__ import annotations

_LOOP_NAMES = ("NonFiniteLossError", "prepare", "run")
__all__ = list(_LOOP_NAMES)


def __getattr__(name: str):
    if name in _LOOP_NAMES:
        from jaxcssl.engine import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'jaxcssl.engine' has no attribute {name!r}")
