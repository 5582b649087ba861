"""Re-evaluating, transfer-evaluating and exporting a finished run (jaxcssl.evaluate, jaxcssl.export).

One tiny finetune run (configs/smoke.py, kNN evaluations only) is trained once for the module; its
W/results.json, written by the engine during training, is the independent reference for the kNN
numbers recomputed here from the restored checkpoints.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcssl import engine, evaluate, export
from jaxcssl.data.augment import preprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRANSFER = {"name": "synthetic", "source": "synthetic",
            "synthetic": {"num_classes": 3, "train_per_class": 32, "test_per_class": 16, "image_size": 20, "seed": 5}}


def smoke_config():
    spec = importlib.util.spec_from_file_location("smoke", ROOT / "configs" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("finetune")
    config.train.epochs = 2
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("run"))
    engine.run(smoke_config(), path)
    return path


@pytest.fixture(scope="module")
def results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxcssl.evaluate", *args], check=False, capture_output=True,
                          text=True, cwd=ROOT, env=os.environ.copy(), timeout=300)


def test_cli_on_the_last_task_reproduces_the_final_knn_of_results_json(workdir, results):
    before = pathlib.Path(workdir, "results.json").read_bytes()
    done = cli(f"--workdir={workdir}", "--protocol=knn")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(workdir, "eval", "task1_test.json")) as f:
        record = json.load(f)
    knn, final = record["protocols"]["knn"], results["final"]["knn"]
    assert record["checkpoint_task"] == 1 and record["tasks"] == [0, 1]
    for key in ("top1", "la", "wp", "tp"):
        assert knn[key] == final[key], key
    assert knn["per_task"] == results["matrices"]["knn"][1] == final["per_task"]
    assert knn["settings"] == {"knn_k": 20, "knn_temperature": 0.5}
    assert any(line.startswith("knn ") for line in done.stdout.splitlines()), done.stdout
    assert pathlib.Path(workdir, "results.json").read_bytes() == before


def test_cli_on_task_0_reproduces_the_first_row_of_the_knn_matrix(workdir, results):
    done = cli(f"--workdir={workdir}", "--task=0", "--protocol=knn", "--name=first")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(workdir, "eval", "first.json")) as f:
        knn = json.load(f)["protocols"]["knn"]
    assert knn["per_task"] == results["matrices"]["knn"][0]  # [A00, None]: task 1 not trained yet
    assert knn["per_task"][1] is None
    assert knn["top1"] == results["history"][0]["knn"] == knn["per_task"][0]


def _no_checkpoint_workdir(workdir: str, tmp_path: pathlib.Path) -> str:
    shutil.copy(os.path.join(workdir, "config.json"), tmp_path / "config.json")
    return str(tmp_path)


@pytest.mark.parametrize("case, expected", [
    ("task", "no checkpoint for task 7 in"),
    ("protocol", "unknown protocol 'svm'; known: knn, linear_fast, linear"),
    ("workdir", "no such workdir:"),
    ("no_checkpoint", "has no task checkpoint"),
    ("export_over_results", "would overwrite part of the run"),
])
def test_bad_requests_end_with_one_line(workdir, tmp_path, case, expected):
    args = {
        "task": [f"--workdir={workdir}", "--task=7"],
        "protocol": [f"--workdir={workdir}", "--protocol=knn,svm"],
        "workdir": [f"--workdir={tmp_path / 'missing'}"],
        "no_checkpoint": [f"--workdir={_no_checkpoint_workdir(workdir, tmp_path)}"],
        "export_over_results": [f"--workdir={workdir}", f"--export={workdir}/results.json"],
    }[case]
    done = cli(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("jaxcssl.evaluate: error: ") and expected in lines[0], lines[0]
    if case == "task":
        assert lines[0].endswith("available tasks: [0, 1]")


def test_only_eval_settings_may_be_overridden(workdir):
    config = evaluate.run_config(workdir, {"eval.knn_k": 5, "dataset.cache_dir": "/tmp/x"})
    assert config.eval.knn_k == 5 and config.model.width == 8
    with pytest.raises(evaluate.EvaluateError, match="--config.model.width would change the trained run"):
        evaluate.run_config(workdir, {"model.width": 16})


def test_transfer_to_another_dataset_is_one_task_and_beats_chance(workdir):
    record = evaluate.evaluate_run(workdir, protocols=("knn", "linear_fast"), transfer=TRANSFER)
    assert record["tasks"] == [0] and record["num_classes"] == 3 and record["dataset"] == "synthetic"
    assert record["transfer"]["synthetic.seed"] == 5
    for protocol in ("knn", "linear_fast"):
        block = record["protocols"][protocol]
        assert block["tp"] == 1.0 and block["la"] == block["wp"] == block["top1"] == block["per_task"][0]
        assert block["top1"] > 1 / 3 + 0.25, (protocol, block["top1"])  # chance: 1/3


def test_transfer_images_are_resized_to_the_run_image_size(workdir):
    config = evaluate.run_config(workdir)
    assert evaluate.transfer_dataset_config(config, TRANSFER, image_size=16).dataset.image_size == 16
    with pytest.raises(evaluate.EvaluateError, match="unknown transfer key 'synthetic.colour'"):
        evaluate.transfer_dataset_config(config, {"synthetic.colour": 1}, image_size=16)


def test_export_then_load_gives_the_engine_features_exactly(workdir, tmp_path):
    path = export.export_backbone(workdir, str(tmp_path / "backbone.msgpack"))
    apply_fn, variables = export.load_backbone(path)
    spec, _ = export.read_backbone(path)
    assert (spec["backbone"], spec["width"], spec["image_size"], spec["source"]["task"]) == ("resnet18", 8, 16, 1)

    restored = evaluate.restore(workdir)
    learner, data = restored.learner, restored.learner.data
    images = data.dataset.x_test[:8]

    # The engine's evaluation features: preprocessing + SSLMethod.features, weights passed as arguments.
    @jax.jit
    def reference(variables, images):
        return learner.method.features(variables["params"], variables["batch_stats"],
                                       preprocess(images, data.image_size, *data.stats))

    expected = reference(learner.model_variables(restored.state), images)
    features = apply_fn(variables, images)
    assert features.shape == (8, spec["feature_dim"])
    np.testing.assert_array_equal(np.asarray(features), np.asarray(expected))
