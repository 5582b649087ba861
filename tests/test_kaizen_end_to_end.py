"""Kaizen end to end: the command line with MoCo v2+, and the embedded CIFAR-10 subset with SimCLR
against fine-tuning with the same classifier.

The cheapest end-to-end coverage that still runs every part: MoCo v2+ through the CLI in full (EMA
target, per-view queues, contrastive distiller; with a reference run for forward transfer, and the
export of the classifier); BYOL and VICReg through the CLI at one epoch per task with the classifier's
evaluation only (their SSL loss and the distiller's distance are what differs); SimCLR in-process on
real images (the quality check; the CLI adds nothing the MoCo v2+ run does not cover). Every loss term
of the four objectives is also checked in tests/test_kaizen.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
from test_cli import run_cli

from jaxcssl import engine, export
from jaxcssl.data.datasets import DEMO_CIFAR10_SUBSET

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ("--config.train.epochs=2",)


def smoke_config(objective: str):
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"kaizen,{objective}")


@pytest.mark.slow
def test_the_cli_trains_mocov2_and_reports_the_classifiers_continual_metrics(tmp_path, monkeypatch):
    # The steps are few and tiny: XLA's unoptimised code generation compiles faster than it runs slower.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0")
    reference, main = tmp_path / "reference", tmp_path / "main"
    result = run_cli("configs/smoke.py:kaizen,mocov2", reference, "--config.train.reinit_each_task=True", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("configs/smoke.py:kaizen,mocov2", main, f"--config.eval.reference_workdir={reference}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final linear_fast: LA" in result.stdout
    results = json.loads((main / "results.json").read_text())
    A = np.array(results["matrices"]["head"], float)
    S = np.array(json.loads((reference / "results.json").read_text())["matrices"]["head"], float)
    block = results["continual"]["head"]
    assert block["continual_accuracy"] == pytest.approx((A[0, 0] + (A[1, 0] + A[1, 1]) / 2) / 2)
    assert block["final_accuracy"] == pytest.approx(A[1].mean())
    assert block["forgetting"] == pytest.approx(A[0, 0] - A[1, 0])
    assert block["forward_transfer"] == pytest.approx(A[1, 1] - S[1, 1])
    assert A[0, 0] == S[0, 0]  # the first task is trained identically in both runs
    assert results["run"]["label"] == "Kaizen, replay 10%" and "knn" in results["continual"]
    rows = [json.loads(line) for line in (main / "metrics.jsonl").read_text().splitlines()]
    later = [row for row in rows if "train/classifier_distill" in row]
    assert later and all(np.isfinite(row["train/distill"]) for row in later)
    # The export carries the classifier: predictions from the file score what the engine scored.
    path = export.export_backbone(str(main), str(tmp_path / "kaizen.msgpack"))
    predict, variables = export.load_classifier(path)
    data = engine.prepare(smoke_config("mocov2")).data.dataset
    accuracy = np.mean(np.asarray(predict(variables, data.x_test)) == data.y_test)
    assert accuracy == pytest.approx(results["final"]["head"]["top1"])
    assert export.read_classifier(path)[0]["class_names"] == list(data.class_names)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["byol", "vicreg"])
def test_the_cli_trains_byol_and_vicreg(objective, tmp_path, monkeypatch):
    """The objectives the other runs leave out, at the smoke size with one epoch per task and the
    classifier's evaluation only: every term of the later task is finite and the run reports its metrics."""
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0")
    result = run_cli(f"configs/smoke.py:kaizen,{objective}", tmp_path / "w", "--config.train.epochs=1",
                     "--config.eval.after_task=('head',)", "--config.eval.final=('head',)")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert set(results["continual"]["head"]) >= {"continual_accuracy", "final_accuracy", "forgetting"}
    assert np.array(results["matrices"]["head"], float).shape == (2, 2)
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    later = [row for row in rows if "train/classifier_distill" in row]
    assert later and all(np.isfinite([row[f"train/{k}"] for k in ("ssl", "distill", "ce", "classifier_distill")]).all()
                         for row in later)


def cifar10_config(**kaizen):
    """Two tasks of five CIFAR-10 classes (the embedded subset at 16 × 16), SimCLR, three epochs per task;
    heads at 1/8 width (a classifier of 125 hidden units: at 1/64 its 16 units barely learn)."""
    config = smoke_config("simclr")
    config.dataset.update(name="cifar10", source="image_folder", path=DEMO_CIFAR10_SUBSET, image_size=16)
    config.split.classes_per_task = (5, 5)
    config.model.head_scale = 1 / 8
    config.train.update(batch_size=64, epochs=3, log_every_steps=20, checkpoint_every_steps=1000, num_devices=1)
    config.optim.base_batch = 64
    config.strategy.kaizen.update(**{"replay_fraction": 0.02, "replay_batch": 16, **kaizen})
    config.eval.after_task = ("head",)
    config.eval.final = ("head",)
    return config


@pytest.mark.slow
def test_on_cifar10_the_classifier_beats_chance_and_kaizen_forgets_less_than_fine_tuning(tmp_path):
    kaizen = engine.run(cifar10_config(), str(tmp_path / "kaizen"))
    finetune = engine.run(cifar10_config(feature_distill_weight=0.0, classifier_distill_weight=0.0,
                                         replay_fraction=0.0), str(tmp_path / "finetune"))
    assert finetune["run"]["label"] == "Fine-tune + classifier"
    A, F = (np.array(r["matrices"]["head"], float) for r in (kaizen, finetune))
    assert A[0, 0] == pytest.approx(F[0, 0], abs=0.01)  # the same first task (its programs differ only by h)
    assert kaizen["final"]["head"]["top1"] > 0.15  # chance: 0.1 (argmax over the 10 classes)
    # Fine-tuning's classifier, trained on the second task's labels only, no longer predicts the first
    # task's classes; Kaizen's keeps most of what it knew.
    assert F[1, 0] < 0.05 and A[1, 0] > 0.5 * A[0, 0]
    assert kaizen["continual"]["head"]["forgetting"] < finetune["continual"]["head"]["forgetting"] - 0.15
