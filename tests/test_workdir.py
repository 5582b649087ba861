"""Bad input and damaged workdirs: one clear error before anything is written, never a silent wrong
result. A tiny fine-tune run (configs/smoke.py) is trained once uninterrupted; an interrupted copy is
then damaged in the ways runs get damaged, and must resume to the uninterrupted run's numbers or
stop with one line naming the culprit."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from jaxcssl import checkpointing, engine
from jaxcssl.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke_config(arg: str = "finetune"):
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.train.epochs = 2
    config.train.checkpoint_every_steps = 3
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return engine.run(smoke_config(), str(workdir)), workdir


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A workdir killed in task 1 after its periodic checkpoint at global step 11 (tasks/0 ends at 8)."""
    workdir = tmp_path_factory.mktemp("interrupted")
    original = checkpointing.RunCheckpoints.save_periodic

    def save_then_die(self, step, state, meta):
        original(self, step, state, meta)
        if step > 8:
            raise Interrupt(step)

    checkpointing.RunCheckpoints.save_periodic = save_then_die
    try:
        with pytest.raises(Interrupt):
            engine.run(smoke_config(), str(workdir))
    finally:
        checkpointing.RunCheckpoints.save_periodic = original
    return workdir


def _copy(source: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / "w"
    shutil.copytree(source, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in p.as_posix()]
    return max(files, key=lambda p: p.stat().st_size)


def _same_final_model(results: dict, straight_results: dict, workdir, straight_workdir) -> None:
    assert results["final"] == straight_results["final"] and results["matrices"] == straight_results["matrices"]
    learner = engine.prepare(smoke_config())
    target = jax.device_get(learner.init_state())
    a, _ = checkpointing.RunCheckpoints(str(straight_workdir)).restore_task(1, target)
    b, _ = checkpointing.RunCheckpoints(str(workdir)).restore_task(1, target)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_a_flipped_bit_is_detected_the_checkpoint_moved_aside_and_the_run_resumes_identically(
        straight, interrupted, tmp_path, caplog):
    workdir = _copy(interrupted, tmp_path)
    latest = workdir / "checkpoints" / "latest" / "11"
    data = _largest_array_file(latest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    # An unfinished write of a killed save is removed with a note.
    (workdir / "checkpoints" / "latest" / "12.orbax-checkpoint-tmp-1").mkdir()
    results = engine.run(smoke_config(), str(workdir))
    damaged = list((workdir / "checkpoints" / "damaged").iterdir())
    assert [d.name.split("-")[:2] for d in damaged] == [["latest", "11"]]
    assert not (workdir / "checkpoints" / "latest" / "12.orbax-checkpoint-tmp-1").exists()
    assert "skipped damaged checkpoint" in caplog.text and "unfinished checkpoint write" in caplog.text
    _same_final_model(results, straight[0], workdir, straight[1])


@pytest.mark.parametrize("damage", ["empty _METADATA", "truncated meta", "empty step folder"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_last_task_end(damage, interrupted, tmp_path):
    workdir = _copy(interrupted, tmp_path)
    latest = workdir / "checkpoints" / "latest" / "11"
    if damage == "empty _METADATA":
        (latest / "state" / "_METADATA").write_text("")
    elif damage == "truncated meta":
        meta = latest / "meta" / "metadata"
        meta.write_text(meta.read_text()[:40])
    else:
        shutil.rmtree(latest)
        latest.mkdir()
    learner = engine.prepare(smoke_config())
    checkpoints = checkpointing.RunCheckpoints(str(workdir), checkpointing.config_fingerprint(
        learner.config.to_dict()))
    state, meta = checkpoints.restore_latest(learner.init_state())
    assert meta["next_phase"] == 1 and int(state.phase_step) == 0  # tasks/0, not latest/11
    assert len(list((workdir / "checkpoints" / "damaged").iterdir())) == 1


def test_when_no_checkpoint_restores_one_line_names_the_folder(interrupted, tmp_path):
    workdir = _copy(interrupted, tmp_path)
    for meta in (workdir / "checkpoints").rglob("meta/metadata"):
        meta.write_text("{")
    with pytest.raises(checkpointing.CheckpointError, match=r"^no checkpoint in .*checkpoints restores \(damaged: "):
        engine.run(smoke_config(), str(workdir))


def test_checkpoints_of_another_config_are_refused_even_without_config_json(interrupted, tmp_path):
    workdir = _copy(interrupted, tmp_path)
    (workdir / "config.json").unlink()
    config = smoke_config()
    config.optim.base_lr = 0.05
    with pytest.raises(checkpointing.WorkdirConfigError, match="written by a different config"):
        engine.run(config, str(workdir))
    assert not (workdir / "checkpoints" / "damaged").exists()  # refused, not treated as damage


def test_changing_the_per_task_evaluation_mid_run_is_refused(interrupted, tmp_path):
    workdir = _copy(interrupted, tmp_path)
    config = smoke_config()
    config.eval.knn_k = 5
    with pytest.raises(checkpointing.WorkdirConfigError, match=r"eval.knn_k is 5 now but 20 in the evaluations"):
        engine.run(config, str(workdir))
    config = smoke_config()
    config.eval.linear_epochs = 7  # not used by the per-task kNN: allowed
    checkpointing.check_workdir_config(str(workdir), config.to_dict())


def test_a_second_run_on_a_workdir_in_use_is_refused_naming_the_holder(tmp_path):
    with checkpointing.workdir_lock(str(tmp_path)):
        with pytest.raises(checkpointing.WorkdirError, match=rf"in use by pid {os.getpid()} on host"):
            engine.run(smoke_config(), str(tmp_path))
    with checkpointing.workdir_lock(str(tmp_path)):  # released when the holder is done
        pass


@pytest.mark.parametrize("layout,message", [
    ("workdir_file", "is a file, not a directory"),
    ("checkpoints_file", "checkpoints is a file"),
    ("results_dir", "results.json is a directory"),
])
def test_a_workdir_that_cannot_hold_a_run_is_refused_before_anything_is_written(layout, message, tmp_path):
    workdir = tmp_path / "w"
    if layout == "workdir_file":
        workdir.write_text("x")
    else:
        workdir.mkdir()
        if layout == "checkpoints_file":
            (workdir / "checkpoints").write_text("x")
        else:
            (workdir / "results.json").mkdir()
    before = sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else None
    with pytest.raises(checkpointing.WorkdirError, match=message):
        engine.run(smoke_config(), str(workdir))
    assert (sorted(p.name for p in workdir.iterdir()) if workdir.is_dir() else None) == before


def test_a_read_only_parent_is_refused(tmp_path, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere: let the check see what a user would
        monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != str(parent.resolve()))
    try:
        with pytest.raises(checkpointing.WorkdirError, match="is not writable"):
            engine.run(smoke_config(), str(parent / "w"))
    finally:
        parent.chmod(0o700)
    assert not (parent / "w").exists()


def test_a_damaged_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"seed": 0,')
    with pytest.raises(checkpointing.WorkdirConfigError, match=r"config.json is damaged"):
        engine.run(smoke_config(), str(tmp_path))


@pytest.mark.parametrize("change,message", [
    (lambda c: c.train.update(epochs=4_000_000_000), "more than the run's int32 step counter holds"),
    (lambda c: c.train.update(first_task_epochs=-1), r"train.first_task_epochs \(0: same as train.epochs\)=-1"),
    (lambda c: c.optim.update(warmup_epochs=-1), "optim.warmup_epochs=-1 must be >= 0"),
    (lambda c: c.optim.update(later_task_lr_factor=-0.1), "optim.later_task_lr_factor=-0.1 must be >= 0"),
    (lambda c: c.optim.update(weight_decay=-1e-4), "optim.weight_decay=-0.0001 must be >= 0"),
    (lambda c: c.ssl.loss.update(scale=-0.1), "ssl.loss.scale=-0.1 must be > 0"),
    (lambda c: c.train.update(batch_size=0), "train.batch_size=0 must be > 0"),
    (lambda c: c.strategy.update(name="er", samples_per_task=1000), "strategy.samples_per_task=1000 exceeds the 128"),
    (lambda c: c.train.update(batch_size=256), "task 0 has 128 training samples, fewer than train.batch_size=256"),
])
def test_values_that_cannot_work_are_refused_before_the_workdir_is_touched(change, message, tmp_path):
    config = smoke_config()
    change(config)
    with pytest.raises((ConfigError, ValueError), match=message):
        engine.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_class_without_training_images_is_named(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 3] * 8)  # class 2 has no training image
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8],
             class_names=np.array(["cat", "dog", "emu", "fox"]))
    config = smoke_config()
    config.dataset.update(name="mine", source="npz", path=str(tmp_path / "d.npz"))
    with pytest.raises(ConfigError, match=r"dataset 'mine': class\(es\) 'emu' have no training images"):
        engine.prepare(config)


def test_checkpoint_digests_detect_any_change_of_an_array():
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.int32)}
    digests = checkpointing.tree_digests(tree)
    assert checkpointing.first_mismatch(digests, checkpointing.tree_digests(tree)) is None
    flipped = {**tree, "a": tree["a"].copy()}
    flipped["a"].view(np.uint32)[1, 2] ^= 1  # one bit
    assert checkpointing.first_mismatch(digests, checkpointing.tree_digests(flipped)) == "['a']"
    reshaped = {**tree, "b": np.zeros((3, 1), np.int32)}
    assert checkpointing.first_mismatch(digests, checkpointing.tree_digests(reshaped)) == "['b']"
    assert json.dumps(digests)  # stored in the JSON meta


def test_a_configuration_that_does_not_fit_the_device_is_refused_naming_its_largest_item(tmp_path, monkeypatch):
    from jaxcssl.engine import memory

    config = smoke_config("er")
    learner = engine.prepare(config)
    state = learner.init_state()
    plan = memory.plan(state, learner.inputs(learner.plan()[0]))
    assert plan.items["dataset"] == learner.data.device_images.nbytes + learner.data.device_labels.nbytes
    assert plan.items["params"] > 0 and "step temporaries" not in plan.items  # known before compiling
    monkeypatch.setattr(memory, "device_capacity", lambda: plan.items["params"])  # a tiny device
    with pytest.raises(ConfigError, match=r"^the 'first' step needs .* per device but the device has .*; the largest "
                                          r"item is (dataset|params|opt_state|old) "):
        engine.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
