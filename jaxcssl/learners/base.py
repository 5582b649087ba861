"""The learner: how a run is planned, initialised and stepped, between the loop and the step.

The engine's loop (:mod:`jaxcssl.engine.loop`) resumes, checkpoints, logs, stops, evaluates and
writes results, and knows nothing about SSL, strategies or models. A :class:`Learner` tells it:

* :meth:`~Learner.plan` — the phases of the run (a task, a stream, an ensemble stage), each with
  its number of steps and which split tasks it trains, all known before anything compiles;
* :meth:`~Learner.init_state` — the state before the first step, a typed pytree replicated over
  the mesh with two counters the loop reads: ``step`` (steps of the whole run) and ``phase_step``;
* :meth:`~Learner.start_phase` — what changes when a phase starts (a fresh optimiser state);
* :meth:`~Learner.step_fn` and :meth:`~Learner.inputs` — one pure ``(state, inputs) -> (state,
  metrics)`` per program, which the engine compiles once with jit, shardings, donation and
  ``lax.scan`` fusion, and the traced inputs of a phase (data indices, keys, the schedule);
  :meth:`~Learner.call_inputs` completes them for one call (the batches fed from the host);
* :meth:`~Learner.end_phase` — what happens when a phase ends (snapshot the old model, fill the
  memory, let the strategy store what it needs);
* :meth:`~Learner.predictors` — the functions evaluation is handed (never the model):
  ``"features"`` (uint8 images -> features) and ``"backbone"`` (normalised images -> features).

A learner is registered by name (:data:`jaxcssl.learners.REGISTRY`, ``config.learner.name``); its
own settings live in ``config.<name>`` (:attr:`Learner.CONFIG`), checked by :meth:`Learner.check`.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Optional

import jax

from jaxcssl import builders

Pytree = Any
Metrics = dict[str, jax.Array]
StepFn = Callable[[Pytree, Pytree], tuple[Pytree, Metrics]]


@dataclasses.dataclass(frozen=True)
class Phase:
    """One unit of the plan, known before anything compiles.

    Attributes:
      index: position in the plan (0-based); the unit of per-task checkpoints.
      label: what the progress line calls it ("task 2/5").
      num_steps: training steps of the phase.
      program: phases with equal programs share one compiled step (e.g. "first task" / "later task").
      tasks: the split's tasks this phase trains on.
      seen_tasks: the tasks trained so far, this phase included (what evaluation scores after it).
      records_row: its evaluation adds a row ``A[t][·]`` to the accuracy matrices (one task per phase).
      images_per_step: images of the training data one step consumes (throughput and timings).
      eval_every_steps: also evaluate every that many steps within the phase (history rows only;
        0: only at its end).
    """

    index: int
    label: str
    num_steps: int
    program: Hashable
    tasks: tuple[int, ...]
    seen_tasks: tuple[int, ...]
    records_row: bool
    images_per_step: int
    eval_every_steps: int = 0


class Learner(abc.ABC):
    """Base class of the training protocols; see the module docstring."""

    name: ClassVar[str] = ""
    CONFIG: ClassVar[dict[str, Any]] = {}
    HOST_PLACEMENT: ClassVar[bool] = False  # can read its batches from host memory (data.placement="host")

    def __init__(self, config, data: builders.Data):
        self.config = config
        self.data = data

    @classmethod
    def check(cls, config) -> None:
        """Refuse settings this learner cannot run with one ConfigError line (before any data loads)."""
        del config

    @abc.abstractmethod
    def plan(self) -> list[Phase]:
        """The phases of the run."""

    @abc.abstractmethod
    def init_state(self) -> Pytree:
        """The state before the first step (with ``step`` and ``phase_step`` counters), replicated."""

    def start_phase(self, state: Pytree, phase: Phase) -> Pytree:
        """Called when ``phase`` starts at its first step (not when a run resumes within it)."""
        del phase
        return state

    @abc.abstractmethod
    def inputs(self, phase: Phase) -> Pytree:
        """The traced arguments of the step during ``phase``."""

    def call_inputs(self, inputs: Pytree, phase: Phase, phase_step: int, steps: int) -> Pytree:
        """The inputs of the call running ``steps`` steps from ``phase_step``; the phase's inputs unchanged
        unless the learner feeds per-call data (its batches with ``data.placement="host"``)."""
        del phase, phase_step, steps
        return inputs

    @abc.abstractmethod
    def step_fn(self, program: Hashable) -> StepFn:
        """The pure step of ``program``: ``(state, inputs) -> (state, metrics)``."""

    def end_phase(self, state: Pytree, phase: Phase) -> Pytree:
        """Called after the last step of ``phase``, before its evaluation and checkpoint."""
        del phase
        return state

    @abc.abstractmethod
    def predictors(self, state: Pytree) -> dict[str, Callable]:
        """Evaluation's view of the model: ``{"features": ..., "backbone": ..., ["logits": ...]}``."""

    def predictor_names(self) -> frozenset[str]:
        """The keys :meth:`predictors` returns, known before training (checked against the protocols)."""
        return frozenset({"features", "backbone"})

    @abc.abstractmethod
    def backbone_variables(self, state: Pytree) -> dict[str, Pytree]:
        """``{"params", "batch_stats"}`` of the backbone (export)."""

    def classifier(self, state: Pytree) -> Optional[tuple[dict[str, Any], Pytree]]:
        """The deployable classifier on the backbone's features (export): ``(spec, params)``, or ``None``."""
        del state
        return None

    def results(self, state: Pytree) -> dict[str, Any]:
        """Learner-specific numbers for ``results.json`` (its ``learner`` block); ``{}``: none."""
        del state
        return {}

    def info(self) -> dict[str, str]:
        """What the run is, for ``results.json``: ``strategy``, ``ssl_method``, ``label``."""
        return {"strategy": self.name, "ssl_method": "", "label": self.name}
