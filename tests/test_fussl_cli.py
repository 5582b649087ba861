"""FUSSL end to end: ``configs/smoke.py:fussl,byol`` through the command line, then the same run
interrupted after phase 1 (the pseudo-labels) and resumed, which must end with the same numbers."""
from __future__ import annotations

import importlib.util
import json
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
    assert "pseudo-labels of 256 samples" in result.stderr and "estimated memory per device" in result.stderr
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


@pytest.mark.slow
def test_a_run_stopped_after_the_pseudo_labels_resumes_to_the_same_numbers(cli_run, tmp_path, monkeypatch):
    _, _, straight = cli_run
    original = checkpointing.RunCheckpoints.save_task_end

    def save_then_die(self, phase, state, meta):
        original(self, phase, state, meta)
        if phase == 0:
            raise Interrupt(phase)

    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_task_end", save_then_die)
    with pytest.raises(Interrupt):
        engine.run(smoke("fussl,byol"), str(tmp_path))
    monkeypatch.setattr(checkpointing.RunCheckpoints, "save_task_end", original)
    resumed = engine.run(smoke("fussl,byol"), str(tmp_path))
    assert resumed["final"] == straight["final"]
    assert resumed["history"] == straight["history"]
    assert resumed["learner"]["pseudo_labels"] == straight["learner"]["pseudo_labels"]
