"""experiments/fussl.py: which runs and evaluations each table needs, resuming, and the table layouts.

Training and evaluation are the engine's and ``jaxcssl.evaluate``'s (tested elsewhere); here they are
replaced by fakes that write what a finished run writes, so nothing compiles.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

from jaxcssl import evaluation, preemption
from jaxcssl.config import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fussl_driver", ROOT / "experiments" / "fussl.py")
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)


def _write_run(path: pathlib.Path, top1: float, variant: str) -> None:
    run = evaluation.run_info(strategy="fussl", ssl_method="byol", dataset="cifar10", split_kind="class_incremental",
                              task_classes=[list(range(10))], seed=0)
    results = evaluation.build_results(config={}, run=run, final={"linear_fast": {"top1": top1}, "knn": {"top1": 0.1}})
    results["learner"] = {"variant": variant}
    evaluation.write_results(str(path), results)


@pytest.fixture
def fakes(monkeypatch):
    """engine.run writes results.json (FUSSL 0.6, its cases 0.55, continued 0.52); evaluate_run gives 0.5
    for the checkpoint after phase 0 and 0.7 / 0.4 for transfers of the final / base models."""
    calls = {"train": [], "eval": []}

    def run(config, workdir, stop):
        case = pathlib.Path(workdir).name
        calls["train"].append((pathlib.Path(workdir).parent.name, case, config.fussl.variant, config.fussl.labels))
        _write_run(pathlib.Path(workdir), {"fussl": 0.6, "continued": 0.52}.get(case, 0.55), config.fussl.variant)

    def evaluate_run(path, *, task=None, protocols=None, transfer=None):
        calls["eval"].append((pathlib.Path(path).name, task, tuple(protocols), transfer and transfer["name"]))
        top1 = 0.5 if transfer is None else (0.4 if task == 0 else 0.7)
        return {"checkpoint_task": task, "protocols": {protocols[0]: {"top1": top1}}}

    def write_eval(path, record, name):
        folder = pathlib.Path(path) / "eval"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(record))

    monkeypatch.setattr(driver.engine, "run", run)
    monkeypatch.setattr(driver.evaluate, "evaluate_run", evaluate_run)
    monkeypatch.setattr(driver.evaluate, "write_eval", write_eval)
    return calls


def test_table_1_trains_fussl_and_the_continued_baseline_and_evaluates_base_once(tmp_path, fakes):
    stop = preemption.StopRequest()
    _write_run(tmp_path / "byol" / "fussl", 0.6, "fussl")  # finished earlier: read, not retrained
    driver.run_table(1, "cifar10_subset", ["byol", "swav"], str(tmp_path), {"train.epochs": 2}, [], stop)
    assert fakes["train"] == [("byol", "continued", "continued", "fuzzy"), ("swav", "fussl", "fussl", "fuzzy"),
                              ("swav", "continued", "continued", "fuzzy")]
    assert fakes["eval"] == [("fussl", 0, ("linear_fast",), None), ("fussl", 0, ("linear_fast",), None)]
    driver.run_table(1, "cifar10_subset", ["byol", "swav"], str(tmp_path), {}, [], stop)  # all done: nothing new
    assert len(fakes["train"]) == 3 and len(fakes["eval"]) == 2
    lines = driver.write_report(1, "cifar10_subset", str(tmp_path), ["byol", "swav"], []).splitlines()
    assert lines[2] == "| Framework | Base | 1200 ep | FUSSL | paper Base / 1200 ep / FUSSL |"
    assert lines[4] == "| byol | 50.00 | 52.00 | 60.00 (+10.00) | 73.90 / 74.10 / 74.70 |"
    assert (tmp_path / "RESULTS.md").read_text().splitlines()[4] == lines[4]


def test_table_2_scores_every_model_on_every_transfer_dataset(tmp_path, fakes):
    transfers = ["cifar10:image_folder:/data/c10", "cifar100:tfds:"]
    driver.run_table(2, "cifar10_subset", ["barlow_twins"], str(tmp_path), {}, transfers, preemption.StopRequest())
    assert sorted(fakes["eval"], key=str) == sorted([
        ("fussl", 0, ("linear_fast",), "cifar10"),
        ("fussl", 0, ("linear_fast",), "cifar100"), ("fussl", None, ("linear_fast",), "cifar10"),
        ("fussl", None, ("linear_fast",), "cifar100"), ("continued", None, ("linear_fast",), "cifar10"),
        ("continued", None, ("linear_fast",), "cifar100")], key=str)
    row = driver.table_markdown(2, str(tmp_path), ["barlow_twins"], transfers).splitlines()[2]
    assert row.startswith("| barlow_twins | 40.00 | 70.00 | 70.00 (+30.00) | 95.12 / 95.40 / 96.33 | 40.00 |")


def test_tables_3_and_4_train_the_cases_of_section_5(tmp_path, fakes):
    driver.run_table(3, "cifar10_subset", ["swav"], str(tmp_path), {}, [], preemption.StopRequest())
    assert [(case, labels) for _, case, _, labels in fakes["train"]] == [
        ("fussl", "fuzzy"), ("hard", "hard"), ("soft", "soft"), ("progressive", "fuzzy")]
    row = driver.table_markdown(3, str(tmp_path), ["swav"]).splitlines()[2]
    assert row == "| swav | 50.00 | 60.00 (+10.00) | 55.00 | 55.00 | 55.00 | 51.60 / 51.93 / 51.66 / 51.80 / 51.81 |"
    header = driver.table_markdown(4, str(tmp_path / "none"), ["byol"]).splitlines()
    assert header[0] == "| Framework | Base | FUSSL | Case 4 | Case 5 | paper Base / FUSSL / Case 4 / Case 5 |"
    assert header[2] == "| byol | – | – | – | – | 62.93 / 63.97 / 63.20 / 63.81 |"


def test_a_stop_ends_the_table_at_the_stopped_run(tmp_path, monkeypatch):
    trained = []

    def stopped(config, workdir, stop):
        trained.append(workdir)
        raise preemption.RunStopped("stopped in phase 1")

    monkeypatch.setattr(driver.engine, "run", stopped)
    with pytest.raises(preemption.RunStopped):
        driver.run_table(1, "cifar10_subset", ["byol", "swav"], str(tmp_path), {}, [], preemption.StopRequest())
    assert trained == [str(tmp_path / "byol" / "fussl")]


def test_the_runs_are_the_fussl_configs_with_the_overrides():
    config = validate(driver.fussl_config("tiny_imagenet", "byol", "progressive", {"train.epochs": 8}))
    assert (config.fussl.cycles, config.train.epochs, config.fussl.phase2.unfrozen_fraction) == (4, 8, 1.0)
    assert driver._overrides(["--config.train.epochs=8", "--config.dataset.path=/x/y"]) == {
        "train.epochs": 8, "dataset.path": "/x/y"}


def test_the_throughput_presets_time_the_ensemble_step_for_one_and_three_members():
    spec = importlib.util.spec_from_file_location("benchmarks_throughput", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = throughput  # dataclasses look their module up by name
    spec.loader.exec_module(throughput)
    for preset in ("fussl", "fussl-cpu-smoke"):
        benches = throughput.PRESETS[preset]
        assert [b.ensemble for b in benches] == [1, 3]
        config = throughput.make_config(benches[1])
        assert (config.learner.name, config.fussl.ensemble_size, tuple(config.split.classes_per_task)) == (
            "fussl", 3, (10,))
    row = throughput.markdown_row({**dict(strategy="fussl", ensemble=3, method="barlow_twins", task="first", batch=256,
                                          replay=0, dtype="bfloat16", width=64, steps_per_call=1, step_ms=10.0,
                                          images_per_s=25600.0, lower_s=1.0, compile_s=2.0, peak_mib=None,
                                          tflops=None, pct_of_peak=None),
                                   "device_kind": "H100", "platform": "gpu", "jax": "0.11.2",
                                   "date_utc": "2026-12-01T00:00:00+00:00"})
    assert "| fussl m=3 | barlow_twins |" in row and "| 25,600 |" in row
