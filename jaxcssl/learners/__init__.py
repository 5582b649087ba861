"""Learners: the training protocols of the library, registered by name (``config.learner.name``).

``continual`` (epochs × tasks, one strategy loss per step: CroMo-Mixup and its baselines), ``online``
(a stream of batches: SLCLRS, a memory, RALS) and ``fussl`` (an SSL ensemble, fuzzy pseudo-labels, a
supervised second phase). Adding a learner is its module (a :class:`~jaxcssl.learners.base.Learner`
subclass) plus one line below.
"""
from __future__ import annotations

from jaxcssl.learners.base import Learner, Phase
from jaxcssl.learners.continual import ContinualLearner
from jaxcssl.learners.fussl import FusslLearner
from jaxcssl.learners.online import OnlineLearner
from jaxcssl.registry import Registry

REGISTRY: Registry[type[Learner]] = Registry("learner.name")


def register(learner: type[Learner]) -> type[Learner]:
    """Add ``learner`` under its ``name`` (usable as a class decorator)."""
    return REGISTRY.register(learner.name, learner)


register(ContinualLearner)
register(OnlineLearner)
register(FusslLearner)

__all__ = ["REGISTRY", "ContinualLearner", "FusslLearner", "Learner", "OnlineLearner", "Phase", "build_learner",
           "register"]


def build_learner(config, data) -> Learner:
    """The learner named by ``config.learner.name`` over ``data``."""
    return REGISTRY.get(config.learner.name)(config, data)
