"""The loop of every run: plan, resume, step, log, checkpoint, stop, evaluate, write results.

It knows phases, steps and evaluation points, and nothing about SSL: the learner
(:class:`~jaxcssl.learners.base.Learner`) plans the phases, initialises the state, supplies the pure
step (compiled here once per program, :mod:`jaxcssl.engine.compile`) and does the work of a phase's
end. For each phase: ``learner.start_phase`` at its first step, the compiled steps with a progress
line, ``W/metrics.jsonl`` and TensorBoard every ``train.log_every_steps``, a NaN guard, periodic
checkpoints, evaluations every ``Phase.eval_every_steps`` (history rows); then
``learner.end_phase``, the evaluation after it (:mod:`jaxcssl.engine.evaluation`) and a per-phase
checkpoint. After the last phase: the final evaluation, ``W/results.json`` and plots.
A :class:`~jaxcssl.preemption.StopRequest` (time limit, SIGTERM) stops the loop at a step boundary
after a checkpoint; the same call resumes, bit-identically.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcssl import builders, checkpointing, metric_writers, sharding
from jaxcssl.config import flatten, validate
from jaxcssl.engine import evaluation, memory
from jaxcssl.engine.compile import compile_step
from jaxcssl.errors import ConfigError
from jaxcssl.evaluation import protocols
from jaxcssl.learners import Learner, Phase, build_learner
from jaxcssl.preemption import AgreedStop, RunStopped, StopRequest

Pytree = Any


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Progress:
    """The progress line: phase, step, loss terms, images/s and ETA."""

    def __init__(self):
        self._t0, self._steps0, self.first_step = time.time(), 0, 0

    def start(self, phase_step: int) -> None:
        self._t0, self._steps0 = time.time(), phase_step

    def begin_phase(self, phase_step: int) -> None:
        self.first_step = phase_step
        self.start(phase_step)

    def line(self, phase: Phase, phase_step: int, run_steps_left: int, scalars: dict[str, float]) -> str:
        elapsed = max(time.time() - self._t0, 1e-9)
        steps_per_s = (phase_step - self._steps0) / elapsed
        eta_phase = (phase.num_steps - phase_step) / max(steps_per_s, 1e-9)
        eta_run = run_steps_left / max(steps_per_s, 1e-9)
        terms = " ".join(f"{k} {v:.4g}" for k, v in scalars.items())
        return (
            f"{phase.label} step {phase_step}/{phase.num_steps} | {terms} | "
            f"{steps_per_s * phase.images_per_step:,.0f} img/s | ETA {_hms(eta_phase)} run {_hms(eta_run)}"
        )


def _hms(seconds: float) -> str:
    seconds = int(min(seconds, 359_999))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def mean_metrics(pending: list[dict[str, jax.Array]], where: str) -> dict[str, float]:
    """Fetch the metrics of the last calls, check every value is finite, return their means."""
    stacked = jax.device_get(pending)
    scalars: dict[str, float] = {}
    for name in stacked[0]:
        values = np.concatenate([np.ravel(m[name]) for m in stacked])
        if not np.all(np.isfinite(values)):
            bad = {k: float(np.ravel(m[k])[-1]) for m in stacked[-1:] for k in m}
            raise NonFiniteLossError(f"non-finite {name!r} {where}; last values {bad}; the checkpoints are untouched")
        scalars[name] = float(values.mean())
    return scalars


class Programs:
    """The learner's compiled steps, compiled ahead of time once per (program, steps per call, input
    shapes); the first compilation of each program prints its memory plan and refuses one that does
    not fit the device."""

    def __init__(self, learner: Learner):
        self.learner = learner
        self.step_fns: dict[Any, Any] = {}
        self.executables: dict[Any, Any] = {}

    def get(self, phase: Phase, steps_per_call: int, state: Pytree, inputs: Pytree):
        leaves = jax.tree_util.tree_leaves(inputs)
        signature = (phase.program, steps_per_call, jax.tree_util.tree_structure(inputs),
                     tuple((getattr(x, "shape", ()), str(getattr(x, "dtype", type(x)))) for x in leaves))
        if signature not in self.executables:
            first = phase.program not in self.step_fns
            if first:
                self.step_fns[phase.program] = self.learner.step_fn(phase.program)
            jitted = compile_step(self.step_fns[phase.program], self.learner.data.mesh, steps_per_call)
            compiled = jitted.lower(state, inputs).compile()
            if first:
                plan = memory.plan(state, inputs, compiled)
                logging.info(plan.line(str(phase.program)))
                plan.check(str(phase.program))
            sharding.barrier(f"compiled {signature[:2]} for {phase.label}")
            self.executables[signature] = compiled
        return self.executables[signature]


def _write_parameter_overview(state: Pytree, workdir: str) -> None:
    """``W/parameters.txt``: clu's table of the trainable parameters (where clu is installed), and one
    line with their count."""
    params = getattr(state, "params", None)
    if params is None or jax.process_index() != 0:
        return
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
    try:
        from clu import parameter_overview
    except ImportError:  # the accelerator images have no clu: the count alone
        logging.info("%s trainable parameters", f"{count:,}")
        return
    path = os.path.join(workdir, "parameters.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(parameter_overview.get_parameter_overview(params, include_stats=False) + "\n")
    logging.info("%s trainable parameters (table: %s)", f"{count:,}", path)


def _stopped(where: str, reason: str, workdir: str, writer) -> RunStopped:
    """Flush (the checkpoint is already saved) and say how to resume."""
    writer.flush()
    return RunStopped(f"stopped {where} ({reason}); checkpoint saved in {workdir}: the same command resumes")


def prepare(config) -> Learner:
    """Validate, build the mesh, data and learner: every check before anything compiles."""
    config = validate(config)
    sharding.initialize_distributed(config.train.distributed, config.train.distributed_timeout)
    mesh = builders.make_mesh(config)
    learner = build_learner(config, builders.prepare_data(config, mesh))
    for stage in ("after_task", "final"):
        for name in config.eval[stage]:
            needs = protocols.REGISTRY.get(name).NEEDS
            if needs not in learner.predictor_names():
                raise ConfigError(f"eval.{stage} protocol {name!r} needs a {needs!r} predictor, which learner "
                                  f"{learner.name!r} with {learner.info()['label']!r} does not provide")
    return learner


def run(config, workdir: str, *, writer: Optional[Any] = None, stop: Optional[StopRequest] = None) -> dict[str, Any]:
    """Run (or resume) the experiment described by ``config`` in ``workdir``.

    Returns the results dict that is also written to ``W/results.json``. Raises
    :class:`~jaxcssl.preemption.RunStopped` when ``stop`` asks for it, after saving a checkpoint.
    """
    learner = prepare(config)
    config = learner.config
    evaluation.reference_accuracies(config, learner.data.split.num_tasks)  # a bad reference fails now
    state = learner.init_state()
    memory.plan(state, learner.inputs(learner.plan()[0])).check("first")  # what is known before compiling
    checkpointing.check_workdir(workdir)
    main = sharding.is_main_process()
    # Every process checks config.json before process 0 writes it (the same files: the same verdict).
    checkpointing.check_workdir_config(workdir, config.to_dict(), write=False)
    with checkpointing.workdir_lock(workdir) if main else contextlib.nullcontext():
        if main:
            checkpointing.check_workdir_config(workdir, config.to_dict())
        sharding.barrier("config.json written")
        writer = writer or metric_writers.create_default_writer(workdir)
        writer.write_hparams(flatten(config.to_dict()))
        _write_parameter_overview(state, workdir)
        checkpoints = checkpointing.RunCheckpoints(workdir, checkpointing.config_fingerprint(config.to_dict()))
        try:
            state, meta = _resume(checkpoints, state, config, workdir)
            state, meta = _train(learner, state, meta, checkpoints, writer, stop, workdir)
            results = evaluation.final(config, learner, state, meta, workdir,
                                       [p.images_per_step for p in learner.plan()])
        finally:
            checkpoints.close()
        writer.flush()
        return results


def _resume(checkpoints: checkpointing.RunCheckpoints, state: Pytree, config, workdir: str) -> tuple[Pytree, dict]:
    """The newest usable checkpoint's state and meta, or the initial ones."""
    meta = {
        "next_phase": 0, "global_step": 0, "history": [], "matrices": {},
        "timings": {"train_s": [], "eval_s": [], "steps": [], "phase_partial_s": 0.0},
    }
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, meta = restored
        _check_eval_unchanged(config, meta, workdir)
        logging.info("resuming %s at phase %d, step %d", workdir, meta["next_phase"], int(state.phase_step))
    meta["eval_settings"] = _eval_settings(config.to_dict())
    return state, meta


def _eval_settings(config_dict: dict) -> dict[str, Any]:
    """What decides the numbers of the evaluations after (and within) each phase."""
    e = config_dict["eval"]
    out = {key: e.get(key) for key in ("after_task", "on", "every_epochs")}
    for name in e.get("after_task", ()):
        if name in protocols.REGISTRY:
            out.update({key: e.get(key) for key in protocols.REGISTRY.get(name).SETTINGS})
    return json.loads(json.dumps(out, default=list))


def _check_eval_unchanged(config, meta: dict, workdir: str) -> None:
    """Refuse a restart that changes the per-phase evaluation once rows of it are recorded."""
    before = meta.get("eval_settings")
    if not meta["history"] or before is None:
        return
    now = _eval_settings(config.to_dict())
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            raise checkpointing.WorkdirConfigError(
                f"eval.{key} is {now.get(key)!r} now but {before.get(key)!r} in the evaluations {workdir!r} "
                f"already recorded; the accuracy matrix would mix protocols: restore eval.{key}="
                f"{before.get(key)!r} (evaluate other settings afterwards with python -m jaxcssl.evaluate)")


def _train(learner: Learner, state: Pytree, meta: dict, checkpoints: checkpointing.RunCheckpoints, writer,
           stop: Optional[StopRequest], workdir: str) -> tuple[Pytree, dict]:
    """Every phase not finished yet: steps, logs, checkpoints, stops, the phase's end and evaluation."""
    config, phases = learner.config, learner.plan()
    stops = AgreedStop(stop)
    total_run_steps = sum(p.num_steps for p in phases)
    steps_per_call = config.train.steps_per_call
    programs = Programs(learner)
    progress = Progress()

    for phase in phases[meta["next_phase"]:]:
        if int(state.phase_step) == 0:
            state = learner.start_phase(state, phase)
        inputs = learner.inputs(phase)
        # Wall time of the phase across restarts: a resumed phase continues its clock.
        phase_start, pending = time.time() - meta["timings"].get("phase_partial_s", 0.0), []
        phase_step = int(state.phase_step)
        progress.begin_phase(phase_step)
        while phase_step < phase.num_steps:
            k = steps_per_call if phase.num_steps - phase_step >= steps_per_call else 1
            state, metrics = programs.get(phase, k, state, inputs)(state, inputs)
            pending.append(metrics)
            if phase_step == progress.first_step:
                jax.block_until_ready(metrics)
                progress.start(phase_step + k)  # throughput excludes compilation
            phase_step += k
            step = int(meta["global_step"]) + phase_step
            at_log = phase_step % config.train.log_every_steps < k or phase_step == phase.num_steps
            at_checkpoint = phase_step % config.train.checkpoint_every_steps < k and phase_step < phase.num_steps
            stop_reason = stops.at_step(step, boundary=at_log or at_checkpoint)
            if phase_step == phase.num_steps:
                stop_reason = None  # acted on after the phase's own checkpoint
            if at_log or at_checkpoint or stop_reason:
                scalars = mean_metrics(pending, f"in {phase.label} before step {phase_step}")
                pending = []
                writer.write_scalars(step, {f"train/{k_}": v for k_, v in scalars.items()})
                logging.info(progress.line(phase, phase_step, total_run_steps - step, scalars))
            if phase.eval_every_steps and phase_step % phase.eval_every_steps < k and phase_step < phase.num_steps:
                record = evaluation.after_phase(config, learner, state, phase, phase_step)
                meta["history"].append({"task": phase.index, "step": step, "phase_step": phase_step, **record["row"]})
                writer.write_scalars(step, record["scalars"])
                logging.info("%s step %d: %s", phase.label, phase_step, record["summary"])
                sharding.barrier(f"evaluated {phase.label} at step {phase_step}")
            if at_checkpoint or stop_reason:
                meta["timings"]["phase_partial_s"] = time.time() - phase_start
                checkpoints.save_periodic(step, state, meta)
            if stop_reason:
                raise _stopped(f"in {phase.label} at step {phase_step}/{phase.num_steps}", stop_reason,
                               workdir, writer)
        meta["timings"]["train_s"].append(time.time() - phase_start)
        meta["timings"]["steps"].append(phase.num_steps)
        meta["timings"]["phase_partial_s"] = 0.0

        state = learner.end_phase(state, phase)
        eval_start = time.time()
        record = evaluation.after_phase(config, learner, state, phase)
        meta["timings"]["eval_s"].append(time.time() - eval_start)
        step = meta["global_step"] + phase.num_steps
        meta["history"].append({"task": phase.index, "step": step, **record["row"]})
        if phase.records_row:  # A[t][i] needs one task per phase (not offline/interleaved)
            for name, row in record["matrix_rows"].items():
                meta["matrices"].setdefault(name, []).append(row)
        writer.write_scalars(step, record["scalars"])
        logging.info("after %s: %s", phase.label, record["summary"])
        meta["global_step"] += phase.num_steps
        meta["next_phase"] = phase.index + 1
        state = state.replace(phase_step=jnp.zeros_like(state.phase_step))
        checkpoints.save_task_end(phase.index, state, meta)
        is_last = phase.index == len(phases) - 1
        sharding.barrier(f"end of {phase.label}")  # the evaluations took their own time on each process
        stop_reason = stops.at_phase_end(stop.final_eval_s if is_last and stop is not None else 0.0)
        if stop_reason:
                where = f"after {phase.label}" + (" before the final evaluation" if is_last else "")
                raise _stopped(where, stop_reason, workdir, writer)
    return state, meta
