"""The task-confusion study: configs/task_confusion.py, and experiments/task_confusion.py end to end on
the CPU configuration (the embedded CIFAR-10 subset) with a reduced grid."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from support import load_module

from jaxcssl import evaluation
from jaxcssl.config import validate
from jaxcssl.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]



configs = load_module(ROOT / "configs" / "task_confusion.py", "task_confusion_config")
driver = load_module(ROOT / "experiments" / "task_confusion.py", "task_confusion_driver")


@pytest.mark.parametrize("dataset", list(configs.SETTINGS))
def test_every_setting_and_method_validates(dataset):
    for setting in configs.SETTINGS[dataset][1]:
        for method in configs.METHODS:
            config = validate(configs.get_config(f"{dataset},{setting},{method}"))
            assert config.eval.on == "train" and config.model.backbone == "resnet18"
            assert ("head" in config.eval.final) == (method == "supervised")


def test_the_settings_are_the_papers():
    cil = configs.get_config("cifar100,10x10,simclr")
    assert cil.split.classes_per_task == (10,) * 10
    assert (cil.strategy.name, cil.split.schedule) == ("finetune", "interleaved")
    uniform = configs.get_config("cifar100,100x1,simclr")
    assert uniform.split.classes_per_task == (10,) * 10  # the same tasks define TP
    assert uniform.strategy.name == "offline"
    dil = configs.get_config("cifar100,10x10_dil,simclr")
    assert (dil.strategy.name, dil.split.schedule) == ("finetune", "interleaved_data")
    assert configs.get_config("cifar10,5x2,byol").split.classes_per_task == (2,) * 5
    # Table 7: optimiser, lr, batch, epochs.
    for method, (optimizer, lr, batch, epochs) in configs.TABLE7.items():
        c = configs.get_config(f"cifar100,10x10,{method}")
        assert (c.optim.name, c.optim.base_lr, c.train.batch_size, c.train.epochs) == (optimizer, lr, batch, epochs)
    assert configs.get_config("cifar100,10x10,supervised").optim.base_batch == 128  # 0.075 is the peak rate
    assert configs.get_config("cifar100,10x10,simclr").optim.base_batch == 256


@pytest.mark.parametrize("arg,culprit", [("cifar100,5x2,simclr", "setting '5x2'"), ("mnist,10x10,simclr", "mnist"),
                                         ("cifar100,10x10,vicreg", "vicreg"), ("cifar100,10x10", "expected")])
def test_bad_arguments_are_one_line(arg, culprit):
    with pytest.raises(ConfigError, match=culprit):
        configs.get_config(arg)


def _fake_run(workdir: pathlib.Path, setting: str, method: str, tp: float) -> None:
    run = evaluation.run_info(strategy="finetune", ssl_method=method, dataset="cifar10",
                              split_kind="class_incremental", task_classes=[[0, 1], [2, 3]], seed=0)
    report = {"top1": 0.5, "la": 0.5, "wp": 0.5 / tp, "tp": tp}
    final = {"knn": report, "linear_fast": report, **({"head": report} if method == "supervised" else {})}
    results = evaluation.build_results(config=configs.get_config(f"demo,{setting},{method}").to_dict(), run=run,
                                       final=final, timings={"train_seconds": [1.0], "eval_seconds": [1.0],
                                                             "images_per_second": [1.0]})
    run_dir = workdir / setting / method
    evaluation.write_results(run_dir, results)
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "test.json").write_text(f'{{"protocols": {{"linear_fast": {{"la": 0.4, "wp": 0.8, '
                                                f'"tp": {tp - 0.1}}}}}}}')


def test_table_gaps_and_bars_from_finished_runs(tmp_path):
    _fake_run(tmp_path, "5x2", "supervised", 0.9)
    _fake_run(tmp_path, "10x1", "supervised", 0.95)
    _fake_run(tmp_path, "5x2", "simclr", 0.6)
    runs = driver.collect(str(tmp_path), ["5x2", "10x1"], ["supervised", "simclr", "byol"])
    assert sorted(runs) == [("10x1", "supervised"), ("5x2", "simclr"), ("5x2", "supervised")]
    gaps = driver.tp_gaps(runs, "5x2", "10x1")
    assert list(gaps) == ["supervised"] and gaps["supervised"] == pytest.approx(0.05)
    text = driver.table(runs, ["5x2", "10x1"], ["supervised", "simclr", "byol"], "5x2", "10x1")
    assert "| Supervised | head | 5x2 | 2 |" in text and "| SimCLR | linear_fast | 5x2 | 4 | 50.00 | 83.33 | 60.00" in text
    assert "| SimCLR | | 10x1 | not finished |" in text and "| BYOL | | 5x2 | not finished |" in text
    assert "| Supervised | 5.00 | 5.00 |" in text
    path = driver.bars_figure(runs, ["5x2", "10x1"], ["supervised", "simclr"], "test", str(tmp_path / "b.png"), "t")
    assert os.path.getsize(path) > 0


def test_pca_is_the_two_leading_principal_axes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([10.0, 3.0, 1.0, 0.1, 0.1])
    points = driver.project(x, "pca")
    np.testing.assert_allclose(np.var(points, axis=0), np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1][:2],
                               rtol=1e-6)


def test_missing_scikit_learn_is_one_line():
    if importlib.util.find_spec("sklearn") is not None:
        pytest.skip("scikit-learn is installed")
    with pytest.raises(ValueError, match=r"--embedding=tsne needs scikit-learn: pip install 'jaxcssl\[plots\]'"):
        driver.project(np.zeros((8, 3)), "tsne")


def _study(workdir: pathlib.Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "experiments/task_confusion.py", "--dataset=demo", f"--workdir={workdir}",
               "--methods=supervised,simclr", "--config=train.epochs=1", *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=1200)


@pytest.mark.slow
def test_the_cpu_study_runs_end_to_end_and_resumes(tmp_path):
    """Supervised and SimCLR, 5x2 vs 10x1, one epoch: runs, test scores, table and figures; a rerun trains nothing."""
    stopped = _study(tmp_path, "--time_limit=1s", "--embedding=none")
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    result = _study(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("RESULTS.md", "task_confusion_train.png", "task_confusion_test.png", "embedding.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    runs = driver.collect(str(tmp_path), ["5x2", "10x1"], ["supervised", "simclr"])
    assert len(runs) == 4
    for (setting, method), run in runs.items():
        for on in ("train", "test"):
            # Ten balanced classes: chance LA is 10%, chance TP 20% (five tasks).
            assert run[on]["linear_fast"]["la"] > 0.15 and run[on]["linear_fast"]["tp"] > 0.25, (setting, method, on)
    assert runs["10x1", "supervised"]["train"]["head"]["la"] > 0.15
    again = _study(tmp_path, "--embedding=none")
    assert again.returncode == 0 and again.stderr.count("finished earlier") == 4, again.stderr[-3000:]
