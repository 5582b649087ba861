"""experiments/reduced_budget_cifar10.py: its config, which runs it trains, and its results table.

The training itself (stop, resume) is the engine's, tested in test_engine.py; here the driver's
own logic runs without compiling anything.
"""
from __future__ import annotations

import pathlib

import pytest
from support import load_module

from jaxcssl import evaluation, preemption
from jaxcssl.config import PAPER_SETTINGS, paper_config, validate

ROOT = pathlib.Path(__file__).resolve().parents[1]



driver = load_module(ROOT / "experiments" / "reduced_budget_cifar10.py", "reduced_budget_cifar10")
reduced_config = load_module(ROOT / "configs" / "cifar10_split2_reduced.py", "cifar10_split2_reduced").get_config


@pytest.mark.parametrize("strategy", ["finetune", "cassle_plus", "cromo"])
def test_the_reduced_config_is_the_paper_setting_at_a_tenth_of_the_epochs(strategy):
    config = validate(reduced_config(strategy))
    paper = paper_config("cifar10_split2", "barlow_twins", strategy)
    assert config.train.epochs * 10 == PAPER_SETTINGS["cifar10_split2"]["epochs"] == paper.train.epochs
    assert config.eval.linear_epochs == 200
    assert (config.dataset.name, config.dataset.source) == ("cifar10", "image_folder")
    assert config.model.dtype == "bfloat16"
    # Everything that defines the method is the paper's.
    for group in ("split", "ssl", "strategy", "optim", "augment"):
        assert config[group].to_dict() == paper[group].to_dict(), group
    assert config.train.batch_size == paper.train.batch_size == 256


def _fake_results(workdir: pathlib.Path, strategy: str, la: float) -> None:
    run = evaluation.run_info(strategy=strategy, ssl_method="barlow_twins", dataset="cifar10",
                              split_kind="class_incremental", task_classes=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], seed=0)
    results = evaluation.build_results(
        config=reduced_config(strategy).to_dict(), run=run,
        final={"linear": {"top1": la, "top5": 0.99, "la": la, "wp": 0.9, "tp": 0.95}, "knn": {"top1": 0.8}},
        timings={"train_seconds": [90.0, 150.0], "eval_seconds": [5.0, 5.0, 60.0],
                 "images_per_second": [20000.0, 18000.0]})
    evaluation.write_results(workdir / strategy, results)


def test_finished_runs_are_skipped_and_the_others_trained_in_order(tmp_path, monkeypatch):
    _fake_results(tmp_path, "cassle_plus", 0.8)
    trained = []
    monkeypatch.setattr(driver.engine, "run", lambda config, workdir, stop: trained.append(
        (config.strategy.name, workdir, stop)))
    config = reduced_config("cromo")
    stop = preemption.StopRequest()
    driver.run_all(config, str(tmp_path), ["finetune", "cassle_plus", "cromo"], stop)
    assert trained == [("finetune", str(tmp_path / "finetune"), stop), ("cromo", str(tmp_path / "cromo"), stop)]
    assert config.strategy.name == "cromo"  # each run gets its own copy


def test_a_stop_ends_the_loop_at_the_stopped_run(tmp_path, monkeypatch):
    trained = []

    def stopped(config, workdir, stop):
        trained.append(config.strategy.name)
        raise preemption.RunStopped("stopped in task 0")

    monkeypatch.setattr(driver.engine, "run", stopped)
    with pytest.raises(preemption.RunStopped):
        driver.run_all(reduced_config("cromo"), str(tmp_path), ["finetune", "cromo"], preemption.StopRequest())
    assert trained == ["finetune"]


def test_the_report_lists_finished_runs_beside_the_paper(tmp_path):
    _fake_results(tmp_path, "cromo", 0.61234)
    report = driver.write_report(str(tmp_path), ["finetune", "cromo"], reduced_config("cromo"))
    assert report == (tmp_path / "RESULTS.md").read_text()
    lines = report.splitlines()
    assert lines[0].startswith("CIFAR10-Split2 (CIFAR-10 JPEG), Barlow Twins, 50 epochs per task, linear probe 200 "
                               "epochs, bfloat16")
    assert lines[4] == "| Fine-tune | not finished | | | | 82.67 / 90.12 / 91.73 | | | | |"
    cells = [c.strip() for c in lines[5].split("|")[1:-1]]
    assert cells[:9] == ["CroMo-Mixup", "61.23", "90.00", "95.00", "80.00", "88.22 / 91.78 / 95.75", "4.0", "1.2",
                         "20,000, 18,000"]
    assert cells[9].startswith("cpu, ")
