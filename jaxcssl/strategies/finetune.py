"""Fine-tune: plain SSL on each task in turn, nothing against forgetting (lower bound)."""
from __future__ import annotations

import dataclasses

from jaxcssl.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class Finetune(Strategy):
    """The base :meth:`Strategy.loss`: the SSL objective on the current batch."""

    name = "finetune"
    label = "Fine-tune"
