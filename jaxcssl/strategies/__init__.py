"""Continual strategies, one module each, registered by name (``config.strategy.name``).

Adding a strategy is its module (a :class:`~jaxcssl.strategies.base.Strategy` subclass with its
``name``, ``label``, ``CONFIG`` and hooks) plus one line below; its settings appear as
``config.strategy.<name>.*`` and it runs through every learner and report without further changes.
"""
from __future__ import annotations

from jaxcssl.registry import Registry
from jaxcssl.strategies import cassle, cromo, der, er, ewc, finetune, kaizen, lump, offline, sycon
from jaxcssl.strategies.base import Batch, Context, MemorySpec, ModelState, Strategy, TaskEnd, TaskEndResult

REGISTRY: Registry[type[Strategy]] = Registry("strategy.name")


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Add ``strategy`` under its ``name`` (usable as a class decorator)."""
    return REGISTRY.register(strategy.name, strategy)


for _strategy in (
    offline.Offline, finetune.Finetune, er.ExperienceReplay, cassle.CaSSLe, cassle.CaSSLePlus, lump.LUMP,
    ewc.EWC, der.DER, sycon.SyCON, cromo.CroMoMixup, kaizen.Kaizen,
):
    register(_strategy)

__all__ = [
    "REGISTRY", "Batch", "Context", "MemorySpec", "ModelState", "Strategy", "TaskEnd", "TaskEndResult",
    "build_strategy", "register",
]


def build_strategy(config, method) -> Strategy:
    """The strategy named by ``config.strategy.name``, built from its config subtree."""
    return REGISTRY.get(config.strategy.name).from_config(config, method)
