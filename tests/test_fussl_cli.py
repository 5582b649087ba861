"""FUSSL end to end: ``configs/smoke.py:fussl,byol`` through the command line, then the same run
killed inside phase 1 and inside phase 2 and resumed, which must end bit-identical."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxcssl import checkpointing, engine, evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def smoke(arg: str):
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fussl_cli")
    command = [sys.executable, "-m", "jaxcssl.main", "--config=configs/smoke.py:fussl,byol", f"--workdir={workdir}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, workdir, json.loads((workdir / "results.json").read_text())


@pytest.mark.slow
def test_both_phases_run_from_the_command_line_and_record_the_pseudo_labels(cli_run):
    result, workdir, results = cli_run
    assert "final linear_fast: LA" in result.stdout
    assert "pseudo-labels of 256 samples" in result.stderr
    for program in ("ensemble", "phase2", "phase2_frozen"):  # the engine's memory plan of each compiled program
        assert f"memory per device for the {program!r} step: members " in result.stderr
    learner = results["learner"]
    assert [p["kind"] for p in learner["phases"]] == ["ensemble", "phase2", "phase2_frozen"]
    assert learner["evaluated"] == "phase-2 model" and learner["ensemble_size"] == 3
    (labels,) = learner["pseudo_labels"]
    fractions = labels["hard_fraction"] + labels["soft_fraction"] + labels["dropped_fraction"]
    assert fractions == pytest.approx(1.0) and labels["samples"] == 256
    assert 1 <= labels["distinct_classes"] <= learner["pseudo_classes"] == 16
    errors = labels["member_errors"]
    assert len(errors) == 3 and all(0 <= e <= 1 for e in errors)
    assert labels["chosen_member"] == int(np.argmin(errors))
    # Base (after phase 1) and after each part of phase 2, then the final evaluation.
    assert [row["task"] for row in results["history"]] == [0, 1, 2]
    assert results["run"]["learner"] == "fussl" and results["run"]["label"] == "FUSSL"
    # Four balanced synthetic classes: chance is 25%.
    assert results["final"]["knn"]["top1"] > 0.5 and results["final"]["linear_fast"]["top1"] > 0.5
    assert results["history"][0]["knn"] > 0.5
    assert (workdir / "checkpoints" / "tasks").is_dir()


@pytest.mark.slow
def test_re_evaluating_the_phase_1_checkpoint_gives_the_base_numbers(cli_run):
    _, workdir, results = cli_run
    base = evaluate.evaluate_run(str(workdir), task=0, protocols=["knn"])
    assert base["protocols"]["knn"]["top1"] == results["history"][0]["knn"]  # the chosen member after phase 1
    final = evaluate.evaluate_run(str(workdir), protocols=["knn"])
    assert final["protocols"]["knn"]["top1"] == results["final"]["knn"]["top1"]  # the phase-2 model


class Interrupt(Exception):
    pass


def _task_digests(workdir) -> list[dict[str, str]]:
    """The digest of every array of the state saved after each phase (the checkpoints' own record)."""
    checkpoints = checkpointing.RunCheckpoints(str(workdir))
    try:
        return [checkpoints._meta(checkpoints.tasks, phase)["digests"] for phase in checkpoints.task_ids()]
    finally:
        checkpoints.close()


@pytest.mark.slow
def test_a_run_killed_inside_the_ensemble_phase_and_inside_phase_2_resumes_bit_identically(
        cli_run, tmp_path, monkeypatch, caplog):
    """Killed after the periodic checkpoint at step 15 (phase 1: 32 steps, the m stacked members, their Adam
    states and EMA targets mid-phase) and at step 50 (the frozen part of phase 2, global steps 40-64)."""
    _, straight_workdir, straight = cli_run
    caplog.set_level(logging.INFO)
    original = checkpointing.RunCheckpoints.save_periodic
    kills = [15, 50]

    def save_then_die(self, step, state, meta):
        original(self, step, state, meta)
        if kills and step == kills[0]:
            raise Interrupt(kills.pop(0))

    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_periodic", save_then_die)
    for _ in range(2):
        with pytest.raises(Interrupt):
            engine.run(smoke("fussl,byol"), str(tmp_path))
    resumed = engine.run(smoke("fussl,byol"), str(tmp_path))
    assert not kills and "at phase 0, step 15" in caplog.text and "at phase 2, step 10" in caplog.text
    assert not (tmp_path / "checkpoints" / "damaged").exists()  # every restored checkpoint verified
    assert resumed["final"] == straight["final"]
    assert resumed["history"] == straight["history"]
    assert resumed["learner"]["pseudo_labels"] == straight["learner"]["pseudo_labels"]
    # Every array of the state after each phase (members, phase-2 model, labels) is bit-identical.
    straight_digests, resumed_digests = _task_digests(straight_workdir), _task_digests(tmp_path)
    assert len(resumed_digests) == 3 and any("members" in key for key in resumed_digests[0])
    for phase, (want, got) in enumerate(zip(straight_digests, resumed_digests)):
        assert checkpointing.first_mismatch(want, got) is None, f"phase {phase}"
