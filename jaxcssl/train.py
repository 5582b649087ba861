"""The continual task loop: read it top to bottom.

For each task: a fresh optimiser state and per-task schedule, ``epochs × task size / batch``
compiled steps (:mod:`jaxcssl.train_step`), periodic checkpoints; at the end of the task: snapshot
the model into the frozen ``old`` pytree, save samples into the replay memory (and DER's stored
embeddings, EWC's Fisher), checkpoint, and evaluate (kNN / fast linear probe per seen task → the
accuracy matrix). After the last task: the final evaluation (linear probe with LA/WP/TP, kNN),
``W/results.json`` and plots. A :class:`~jaxcssl.preemption.StopRequest` (time limit, SIGTERM)
stops the loop at a step boundary after a checkpoint; the same call resumes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcssl import builders, checkpointing, evaluators, metric_writers, replay, sharding
from jaxcssl.config import flatten, task_epochs, validate
from jaxcssl.preemption import RunStopped, StopRequest
from jaxcssl.train_step import TaskData, TrainState, make_optimizer, make_train_step

Pytree = Any


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class Phase:
    """One unit of the task loop: a task, or (interleaved schedule) all tasks at once."""

    task_id: int
    rows: np.ndarray  # int32 [S, n] sample indices
    total_steps: int
    warmup_steps: int
    peak_lr: float


def plan_phases(config, run: builders.Run) -> list[Phase]:
    """Steps and learning rates of every phase, known before anything compiles."""
    batch = config.train.batch_size
    phases = []
    for task_id, rows in enumerate(run.phase_indices):
        num_samples = rows.shape[1]
        if num_samples < batch:
            raise ValueError(
                f"task {task_id} has {num_samples} training samples, fewer than train.batch_size={batch}"
            )
        steps_per_epoch = num_samples // batch
        epochs = task_epochs(config, task_id)
        peak = config.optim.base_lr * batch / config.optim.base_batch
        if task_id > 0:
            peak *= config.optim.later_task_lr_factor
        phases.append(Phase(
            task_id=task_id, rows=rows, total_steps=epochs * steps_per_epoch * rows.shape[0],
            warmup_steps=config.optim.warmup_epochs * steps_per_epoch * rows.shape[0], peak_lr=peak,
        ))
    return phases


def task_data(images: jax.Array, phase: Phase, config, mesh) -> TaskData:
    return TaskData(
        images=images,
        indices=sharding.replicate(phase.rows.astype(np.int32), mesh),
        task_id=jnp.int32(phase.task_id),
        total_steps=jnp.int32(phase.total_steps),
        warmup_steps=jnp.int32(phase.warmup_steps),
        peak_lr=jnp.float32(phase.peak_lr),
        final_lr=jnp.float32(config.optim.final_lr),
    )


class Progress:
    """The progress line: task, step, loss terms, images/s and ETA."""

    def __init__(self, num_tasks: int, batch_size: int):
        self.num_tasks, self.batch_size = num_tasks, batch_size
        self._t0, self._steps0, self.first_step = time.time(), 0, 0

    def start(self, task_step: int) -> None:
        self._t0, self._steps0 = time.time(), task_step

    def begin_task(self, task_step: int) -> None:
        self.first_step = task_step
        self.start(task_step)

    def line(self, phase: Phase, task_step: int, run_steps_left: int, scalars: dict[str, float]) -> str:
        elapsed = max(time.time() - self._t0, 1e-9)
        steps_per_s = (task_step - self._steps0) / elapsed
        images_per_s = steps_per_s * self.batch_size
        eta_task = (phase.total_steps - task_step) / max(steps_per_s, 1e-9)
        eta_run = run_steps_left / max(steps_per_s, 1e-9)
        terms = " ".join(f"{k} {v:.4g}" for k, v in scalars.items())
        return (
            f"task {phase.task_id + 1}/{self.num_tasks} step {task_step}/{phase.total_steps} | {terms} | "
            f"{images_per_s:,.0f} img/s | ETA task {_hms(eta_task)} run {_hms(eta_run)}"
        )


def _hms(seconds: float) -> str:
    seconds = int(min(seconds, 359_999))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _mean_metrics(pending: list[dict[str, jax.Array]], where: str) -> dict[str, float]:
    """Fetch the metrics of the last calls, check every loss is finite, return their means."""
    stacked = jax.device_get(pending)
    scalars: dict[str, float] = {}
    for name in stacked[0]:
        values = np.concatenate([np.ravel(m[name]) for m in stacked])
        if not np.all(np.isfinite(values)):
            bad = {k: float(np.ravel(m[k])[-1]) for m in stacked[-1:] for k in m}
            raise NonFiniteLossError(f"non-finite {name!r} {where}; last values {bad}; the checkpoints are untouched")
        scalars[name] = float(values.mean())
    return scalars


def _stopped(where: str, reason: str, workdir: str, writer, checkpoints: checkpointing.RunCheckpoints) -> RunStopped:
    """Flush and close (the checkpoint is already saved) and say how to resume."""
    writer.flush()
    checkpoints.close()
    return RunStopped(f"stopped {where} ({reason}); checkpoint saved in {workdir}: the same command resumes")


def train(config, workdir: str, *, writer: Optional[Any] = None, stop: Optional[StopRequest] = None) -> dict[str, Any]:
    """Run (or resume) the continual experiment described by ``config`` in ``workdir``.

    Returns the results dict that is also written to ``W/results.json``. Raises
    :class:`~jaxcssl.preemption.RunStopped` when ``stop`` asks for it, after saving a checkpoint.
    """
    config = validate(config)
    sharding.initialize_distributed(config.train.distributed)
    run = builders.prepare(config)  # data, split, method, strategy, mesh: every check before compiling
    evaluators.reference_accuracies(config, run.split.num_tasks)  # a bad reference run fails now, not at the end
    checkpointing.check_workdir_config(workdir, config.to_dict())
    writer = writer or metric_writers.create_default_writer(workdir)
    writer.write_hparams(flatten(config.to_dict()))
    mesh = run.mesh
    phases = plan_phases(config, run)
    total_run_steps = sum(p.total_steps for p in phases)
    tx = make_optimizer(config)

    state = builders.init_train_state(config, run, tx)
    checkpoints = checkpointing.RunCheckpoints(workdir)
    meta = {
        "next_task": 0, "global_step": 0, "history": [], "matrices": {},
        "timings": {"train_s": [], "eval_s": [], "steps": [], "task_partial_s": 0.0},
    }
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state, meta = restored
        logging.info("resuming %s at task %d, step %d", workdir, meta["next_task"], int(state.task_step))
    programs: dict[bool, Any] = {}
    progress = Progress(len(phases), config.train.batch_size)

    for phase in phases[meta["next_task"]:]:
        has_old = phase.task_id > 0
        if has_old not in programs:
            programs[has_old] = {
                k: make_train_step(
                    run.method, run.strategy, tx, run.views, batch_size=config.train.batch_size,
                    replay_batch=config.strategy.replay_batch, has_old=has_old, total_run_steps=total_run_steps,
                    ema_base=config.ssl.ema_base, mesh=mesh, steps_per_call=k,
                )
                for k in {config.train.steps_per_call, 1}
            }
        if int(state.task_step) == 0:
            if config.train.reinit_each_task and phase.task_id > 0:
                initial = builders.init_train_state(config, run, tx)
                state = state.replace(params=initial.params, model_state=initial.model_state)
            state = state.replace(opt_state=sharding.replicate(tx.init(state.params), mesh))
        data = task_data(run.device_images, phase, config, mesh)
        # Wall time of the task across restarts: a resumed task continues its clock.
        task_start, pending = time.time() - meta["timings"].get("task_partial_s", 0.0), []
        task_step = int(state.task_step)
        progress.begin_task(task_step)
        while task_step < phase.total_steps:
            k = config.train.steps_per_call if phase.total_steps - task_step >= config.train.steps_per_call else 1
            state, metrics = programs[has_old][k](state, data)
            pending.append(metrics)
            if task_step == progress.first_step:
                jax.block_until_ready(metrics)
                progress.start(task_step + k)  # throughput excludes compilation
            task_step += k
            step = int(meta["global_step"]) + task_step
            at_log = task_step % config.train.log_every_steps < k or task_step == phase.total_steps
            at_checkpoint = task_step % config.train.checkpoint_every_steps < k and task_step < phase.total_steps
            stop_reason = stop.reason() if stop is not None and task_step < phase.total_steps else None
            if at_log or at_checkpoint or stop_reason:
                scalars = _mean_metrics(pending, f"in task {phase.task_id} before step {task_step}")
                pending = []
                writer.write_scalars(step, {f"train/{k_}": v for k_, v in scalars.items()})
                logging.info(progress.line(phase, task_step, total_run_steps - step, scalars))
            if at_checkpoint or stop_reason:
                meta["timings"]["task_partial_s"] = time.time() - task_start
                checkpoints.save_periodic(step, state, meta)
            if stop_reason:
                raise _stopped(f"in task {phase.task_id} at step {task_step}/{phase.total_steps}", stop_reason,
                               workdir, writer, checkpoints)
        meta["timings"]["train_s"].append(time.time() - task_start)
        meta["timings"]["steps"].append(phase.total_steps)
        meta["timings"]["task_partial_s"] = 0.0

        state = end_of_task(config, run, state, phase)
        eval_start = time.time()
        record = evaluators.after_task(config, run, state, phase.task_id)
        meta["timings"]["eval_s"].append(time.time() - eval_start)
        step = meta["global_step"] + phase.total_steps
        meta["history"].append({"task": phase.task_id, "step": step, **record["row"]})
        if len(run.phase_tasks[phase.task_id]) == 1:  # A[t][i] needs one task per phase (not offline/interleaved)
            for name, row in record["matrix_rows"].items():
                meta["matrices"].setdefault(name, []).append(row)
        writer.write_scalars(step, record["scalars"])
        logging.info("after task %d: %s", phase.task_id, record["summary"])
        meta["global_step"] += phase.total_steps
        meta["next_task"] = phase.task_id + 1
        state = state.replace(task_step=jnp.zeros_like(state.task_step))
        checkpoints.save_task_end(phase.task_id, state, meta)
        if stop is not None:
            is_last = phase.task_id == len(phases) - 1
            stop_reason = stop.reason(stop.final_eval_s if is_last else 0.0)
            if stop_reason:
                where = f"after task {phase.task_id}" + (" before the final evaluation" if is_last else "")
                raise _stopped(where, stop_reason, workdir, writer, checkpoints)

    results = evaluators.final(config, run, state, meta, workdir)
    writer.flush()
    checkpoints.close()
    return results


def end_of_task(config, run: builders.Run, state: TrainState, phase: Phase) -> TrainState:
    """Snapshot the frozen old model, fill the replay memory, let the strategy consolidate."""
    # A copy, not an alias: the training state is donated to the compiled step, the old model is not.
    old = {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}
    state = state.replace(old=jax.tree_util.tree_map(jnp.copy, old))
    key = jax.random.fold_in(state.key, 2_000_003 + phase.task_id)
    if run.strategy.uses_replay and phase.task_id < run.num_tasks - 1:
        buffer = state.replay
        start = int(buffer.count)
        indices = jnp.asarray(np.concatenate(list(phase.rows)), jnp.int32)
        buffer = replay.insert_task(
            buffer, key, run.device_images, run.device_labels, indices, phase.task_id,
            config.strategy.samples_per_task,
        )
        if run.strategy.stores_features:
            stop = int(buffer.count)
            features = evaluators.old_projections(run, state.old, buffer.images[start:stop])
            buffer = buffer.replace(features=buffer.features.at[start:stop].set(features))
        state = state.replace(replay=buffer)
    return run.strategy.end_of_task(run, state, phase, key)
