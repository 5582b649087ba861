"""Offline: joint SSL training on all tasks' data at once (the upper bound of Table 1–2)."""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxcssl.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class Offline(Strategy):
    """One phase holding every training sample of every task."""

    name = "offline"
    label = "Offline"

    def phases(self, tasks, schedule):
        del schedule
        joined = np.concatenate([np.asarray(t, np.int32) for t in tasks])
        return [(tuple(range(len(tasks))), joined[None, :])]
