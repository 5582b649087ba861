"""The continual engine: data parallelism, the frozen old model, resume, workdir and NaN safety."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcssl import checkpointing, engine, metric_writers, preemption, replay
from jaxcssl.engine.compile import compile_step
from jaxcssl.errors import ConfigError
from jaxcssl.learners import continual

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke_config(arg: str = "cromo"):
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.train.epochs = 2
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# --- one compiled step: 1 vs 4 devices, frozen old model ------------------------------------------------
def _one_cromo_step(num_devices: int):
    config = smoke_config("cromo")
    config.train.num_devices = num_devices
    learner = engine.prepare(config)
    data = learner.data
    state = learner.init_state()
    # A memory holding task 0's samples and an old model that differs from the current one.
    buffer = replay.insert_task(
        state.replay, jax.random.PRNGKey(1), data.device_images, data.device_labels,
        jnp.asarray(data.split.train_indices[0]), 0, config.strategy.samples_per_task,
    )
    old = jax.tree_util.tree_map(lambda x: x * 0.9 + 0.01, state.old)
    state = state.replace(replay=buffer, old=jax.tree_util.tree_map(jnp.copy, old))
    phase = learner.plan()[1]
    step = compile_step(learner.step_fn(phase.program), data.mesh)
    old_before = jax.device_get(state.old)
    new_state, metrics = step(state, learner.inputs(phase))
    return old_before, jax.device_get(new_state), jax.device_get(metrics)


@pytest.fixture(scope="module")
def cromo_steps():
    return _one_cromo_step(1), _one_cromo_step(4)


def test_one_step_on_four_devices_matches_one_device(cromo_steps):
    (_, single, m1), (_, sharded, m4) = cromo_steps
    for name in ("loss", "ssl", "distill", "cromo"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=2e-5, err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(single.params), jax.tree_util.tree_leaves(sharded.params)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    stats = (single.model_state.batch_stats, sharded.model_state.batch_stats)
    for a, b in zip(*(jax.tree_util.tree_leaves(s) for s in stats)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_the_step_leaves_the_old_model_bit_identical(cromo_steps):
    (old_before, after, metrics), _ = cromo_steps
    assert leaves_equal(old_before, after.old)
    assert float(metrics["distill"][0]) > 0 and float(metrics["cromo"][0]) > 0
    # The old model is not a parameter: the optimiser state has no slot for it.
    assert len(jax.tree_util.tree_leaves(after.params)) == len(
        jax.tree_util.tree_leaves({"m": after.params["model"], "d": after.params["distill"]})
    )


# --- resume ------------------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def resume_config():
    config = smoke_config("cromo")
    config.train.checkpoint_every_steps = 3
    config.eval.every_epochs = 1  # an evaluation within each task, at step 4 of 8
    return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """An uninterrupted run: its results and workdir."""
    workdir = tmp_path_factory.mktemp("straight")
    return engine.run(resume_config(), str(workdir)), workdir


def assert_same_run(config, straight_workdir, resumed_workdir) -> None:
    """Task 1's checkpoint holds identical parameters, optimiser state, memory and old model."""
    target = jax.device_get(engine.prepare(config).init_state())
    a, _ = checkpointing.RunCheckpoints(str(straight_workdir)).restore_task(1, target)
    b, _ = checkpointing.RunCheckpoints(str(resumed_workdir)).restore_task(1, target)
    assert leaves_equal(a.params, b.params) and leaves_equal(a.opt_state, b.opt_state)
    assert leaves_equal(a.replay, b.replay) and leaves_equal(a.old, b.old)


def test_an_interrupted_run_resumes_to_identical_numbers(tmp_path, monkeypatch, straight_run):
    config = resume_config()
    straight, straight_workdir = straight_run

    saves = []
    original = checkpointing.RunCheckpoints.save_periodic

    def save_then_die(self, step, state, meta):
        original(self, step, state, meta)
        saves.append(step)
        if step > 8:  # within the second task, after a periodic checkpoint
            raise Interrupt(step)

    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_periodic", save_then_die)
    with pytest.raises(Interrupt):
        engine.run(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_periodic", original)
    resumed = engine.run(config, str(tmp_path / "resumed"))

    assert saves and saves[-1] > 8
    assert resumed["final"] == straight["final"]
    assert resumed["matrices"] == straight["matrices"]
    assert resumed["history"] == straight["history"]
    # Within-task evaluations: history rows at step 4 of each task, besides the two task ends.
    assert [(row["task"], row.get("phase_step")) for row in straight["history"]] == [
        (0, 4), (0, None), (1, 4), (1, None)]
    assert_same_run(config, straight_workdir, tmp_path / "resumed")


class SigtermInTask1(metric_writers.JsonlWriter):
    """Sends this process SIGTERM when it writes the first training metrics of task 1."""

    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        if step > 8 and "train/loss" in scalars and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_time_limit_and_sigterm_stop_with_a_checkpoint_and_resume_identically(tmp_path, straight_run):
    config = resume_config()
    straight, straight_workdir = straight_run
    workdir = str(tmp_path / "stopped")
    with preemption.StopRequest(time_limit_s=0) as stop:
        with pytest.raises(preemption.RunStopped, match=r"stopped in task 1/2 at step 1/8 \(time limit of 0 s reached\)"):
            engine.run(config, workdir, stop=stop)
    assert checkpointing.RunCheckpoints(workdir).latest.all_steps() == [1]

    previous_handler = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequest() as stop:
        writer = SigtermInTask1(os.path.join(workdir, "metrics.jsonl"))
        with pytest.raises(preemption.RunStopped, match=r"stopped in task 2/2 at step \d+/8 \(received SIGTERM\)"):
            engine.run(config, workdir, stop=stop, writer=writer)
    assert signal.getsignal(signal.SIGTERM) is previous_handler
    checkpoints = checkpointing.RunCheckpoints(workdir)
    assert checkpoints.task_ids() == [0] and max(checkpoints.latest.all_steps()) > 8

    # Stopping before the final evaluation when too little time is left for it.
    with preemption.StopRequest(time_limit_s=3600, final_eval_s=7200) as stop:
        with pytest.raises(preemption.RunStopped, match="after task 2/2 before the final evaluation"):
            engine.run(config, workdir, stop=stop)
    resumed = engine.run(config, workdir)
    assert resumed["final"] == straight["final"]
    assert resumed["matrices"] == straight["matrices"]
    assert_same_run(config, straight_workdir, workdir)
    assert len(resumed["timings"]["train_seconds"]) == 2


# --- workdir and NaN safety --------------------------------------------------------------------------------
def test_a_workdir_with_another_config_is_refused_untouched(tmp_path):
    config = smoke_config("finetune")
    checkpointing.check_workdir_config(str(tmp_path), config.to_dict())
    before = (tmp_path / "config.json").read_text()
    config.strategy.name = "er"
    with pytest.raises(checkpointing.WorkdirConfigError, match="strategy.name is 'finetune' there and 'er' now"):
        engine.run(config, str(tmp_path))
    assert (tmp_path / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = smoke_config("finetune")
    config.optim.name = "sgd"
    config.optim.base_lr = 1e30
    config.train.checkpoint_every_steps = 1
    config.train.log_every_steps = 1
    with pytest.raises(engine.NonFiniteLossError, match="non-finite 'loss' in task 1/2"):
        engine.run(config, str(tmp_path))
    checkpoints = checkpointing.RunCheckpoints(str(tmp_path))
    steps = checkpoints.latest.all_steps()
    assert steps == [1]  # saved after the first (finite) step, nothing after
    meta = json.loads((tmp_path / "checkpoints" / "latest" / "1" / "meta" / "metadata").read_text())
    assert meta["next_phase"] == 0


def test_a_split_that_does_not_fit_the_dataset_fails_before_compiling():
    config = smoke_config("finetune")
    config.split.classes_per_task = (2, 3)
    with pytest.raises(ConfigError, match="classes_per_task"):
        engine.prepare(config)


def test_bfloat16_on_cpu_is_refused_before_loading_anything():
    config = smoke_config("finetune")
    config.model.dtype = "bfloat16"
    config.dataset.source = "npz"
    config.dataset.path = "/nonexistent.npz"  # never read: the dtype check comes first
    with pytest.raises(ConfigError, match=r"^model.dtype='bfloat16' on CPU devices: .* use model.dtype=float32 on CPUs"):
        engine.prepare(config)


# --- batches and schedules ---------------------------------------------------------------------------------
def _indices_at(phase_step: int, rows: np.ndarray, batch: int) -> np.ndarray:
    inputs = continual.TaskInputs(
        images=None, labels=None, indices=jnp.asarray(rows), task_id=jnp.int32(0),
        order_key=jax.random.PRNGKey(0), step_key=None, schedule=None,
    )
    return np.asarray(continual.batch_indices(jnp.int32(phase_step), inputs, batch))


def test_an_epoch_visits_every_sample_once_and_epochs_reshuffle():
    rows = np.arange(100, 140)[None, :]  # one task of 40 samples, batches of 8: 5 steps per epoch
    epoch0 = np.concatenate([_indices_at(s, rows, 8) for s in range(5)])
    epoch1 = np.concatenate([_indices_at(s, rows, 8) for s in range(5, 10)])
    assert sorted(epoch0) == list(range(100, 140)) == sorted(epoch1)
    assert not np.array_equal(epoch0, epoch1)


def test_the_interleaved_schedule_draws_step_s_from_task_s_mod_T():
    config = smoke_config("finetune")
    config.split.schedule = "interleaved"
    learner = engine.prepare(config)
    (phase,) = learner.plan()  # one phase trains both tasks
    rows = learner.phase_rows[0][1]
    assert rows.shape[0] == 2 and phase.tasks == (0, 1) and not phase.records_row
    task_of = {int(i): t for t, index in enumerate(learner.data.split.train_indices) for i in index}
    for step in range(6):
        assert {task_of[int(i)] for i in _indices_at(step, rows, 8)} == {step % 2}
    # Task 0's steps of one epoch draw distinct samples of task 0 (drop-last batches).
    steps_per_epoch = rows.shape[1] // 8
    seen = np.concatenate([_indices_at(s, rows, 8) for s in range(0, 2 * steps_per_epoch, 2)])
    assert len(set(seen)) == len(seen) == steps_per_epoch * 8 and set(seen) <= set(rows[0])


def test_forward_transfer_against_a_single_task_reference_run(tmp_path):
    reference_config = smoke_config("finetune")
    reference_config.train.reinit_each_task = True
    reference = engine.run(reference_config, str(tmp_path / "reference"))
    config = smoke_config("finetune")
    config.eval.reference_workdir = str(tmp_path / "reference")
    results = engine.run(config, str(tmp_path / "main"))

    A, R = np.array(results["matrices"]["knn"], float), np.array(reference["matrices"]["knn"], float)
    expected = np.mean([A[i, i] - R[i, i] for i in range(1, len(A))])
    assert results["reference"]["knn"] == [R[0, 0], R[1, 1]]
    np.testing.assert_allclose(results["continual"]["knn"]["forward_transfer"], expected, atol=1e-12)
    # Both runs start from the same initial model, so the first task is trained identically.
    assert A[0, 0] == R[0, 0]
    config.eval.reference_workdir = str(tmp_path / "main")
    with pytest.raises(ValueError, match="reinit_each_task"):
        engine.run(config, str(tmp_path / "third"))
    assert not (tmp_path / "third").exists()  # refused before anything was written
