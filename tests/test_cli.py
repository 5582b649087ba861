"""End to end through the command line: the strategies that do not distil, and the one-line errors.

The distilling strategies (CaSSLe, CaSSLe+, Sy-CON, CroMo-Mixup with every paper objective) run in
tests/test_cli_distillation.py: every CLI run compiles its strategy's training steps, and two files
let ``pytest -n 2 --dist loadfile`` run the two halves on both workers. Together they run every
strategy of :data:`jaxcssl.strategies.REGISTRY`.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxcssl.strategies import REGISTRY

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["--config.train.epochs=2", "--config.eval.after_task=('knn',)", "--config.eval.linear_epochs=1"]
# The paper's augmented linear probe is checked with CroMo-Mixup; the other strategies use the fast probe.
FAST_PROBE = "--config.eval.final=('knn','linear_fast')"
DISTILLING = ("cassle", "cassle_plus", "sycon", "cromo")  # tests/test_cli_distillation.py
OWN_CLI_TESTS = ("kaizen",)  # tests/test_kaizen_end_to_end.py: Kaizen refuses Barlow Twins


def run_cli(config: str, workdir: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jaxcssl.main", f"--config={config}", f"--workdir={workdir}", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=900)


def check_finished(result: subprocess.CompletedProcess, workdir: pathlib.Path, probe: str, num_tasks: int = 2) -> dict:
    """A finished run: exit 0, the final ``probe`` line, results.json, plots and task checkpoints."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"final {probe}: LA" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    for protocol in ("knn", probe):
        for metric in ("la", "wp", "tp"):
            assert 0.0 <= results["final"][protocol][metric] <= 1.0
    if results["run"]["strategy"] == "offline":  # one phase for all tasks: no accuracy matrix, one history row
        assert results["matrices"] == {} and len(results["history"]) == 1
    else:
        assert len(results["matrices"]["knn"]) == num_tasks
    assert (workdir / "plots" / "task_aware.png").stat().st_size > 0
    assert (workdir / "checkpoints" / "tasks").is_dir()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [s for s in REGISTRY.names() if s not in DISTILLING + OWN_CLI_TESTS])
def test_every_strategy_without_distillation_runs_end_to_end(strategy, tmp_path):
    result = run_cli(f"configs/smoke.py:{strategy},barlow_twins", tmp_path, *FAST, FAST_PROBE)
    results = check_finished(result, tmp_path, "linear_fast")
    # Two tasks of two balanced classes: the final kNN must beat chance (25%) clearly.
    assert results["final"]["knn"]["top1"] > 0.5


@pytest.mark.parametrize(
    "overrides,culprit",
    [
        (["--config.strategy.name=cromoo"], "strategy.name='cromoo'"),
        (["--config.ssl.method=dino"], "ssl.method='dino'"),
        (["--config.split.classes_per_task=(3,3)"], "classes_per_task"),
        (["--config.dataset.source=npz"], "dataset.source='npz' needs dataset.path"),
        (["--config.dataset.source=npz", "--config.dataset.name=mine", "--config.dataset.path=/nonexistent/data.npz"],
         "/nonexistent/data.npz"),
        (["--config.train.batch_size=30"], "train.batch_size=30 is not divisible"),
    ],
)
def test_bad_input_is_one_line_naming_the_culprit(overrides, culprit, tmp_path):
    result = run_cli("configs/smoke.py:cromo", tmp_path / "w", *overrides)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("jaxcssl: error:") and culprit in message, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_an_unknown_config_key_is_refused(tmp_path):
    result = run_cli("configs/smoke.py:cromo", tmp_path, "--config.strategy.cromo.mixup.lamda=0.5")
    assert result.returncode != 0 and "lamda" in result.stderr


@pytest.mark.parametrize(
    "config,overrides,line",
    [
        ("configs/smoke.py:cromo", ["--config.train.batchsize=32"],
         "unknown config key 'train.batchsize' (did you mean 'batch_size'?); train has: batch_size,"),
        ("configs/smoke.py:cromo", ["--config.ssl.loss.foo=1"], "unknown config key 'ssl.loss.foo'; ssl.loss has: eps,"),
        ("configs/smoke.py:cromo", ["--config.strategy.ewc.weight=abc"],
         "flag --config.strategy.ewc.weight=abc: could not convert string to float: 'abc'"),
        ("configs/smoke.py:cromo", ["--config.reference=official"],
         "--config.reference cannot be set on the command line: the preset is the config file's argument"),
        ("configs/missing.py", [], "config file 'configs/missing.py' does not exist"),
        ("{syntax}", [], "invalid syntax at line 1"),
        ("{no_get_config}", [], "has no get_config()"),
        ("{raises}", [], "get_config() raised RuntimeError: boom"),
    ],
)
def test_a_bad_config_file_or_override_is_one_line(config, overrides, line, tmp_path):
    files = {"syntax": "def get_config(:\n", "no_get_config": "x = 1\n",
             "raises": "def get_config():\n    raise RuntimeError('boom')\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    config = config.format(**{name: str(tmp_path / f"{name}.py") for name in files})
    result = run_cli(config, tmp_path / "w", *overrides)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxcssl: error: ") and line in last, last
    assert not (tmp_path / "w").exists()


def test_an_old_config_key_names_its_new_one(tmp_path):
    result = run_cli("configs/smoke.py:ewc", tmp_path / "w", "--config.strategy.ewc_weight=5")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "jaxcssl: error: config key 'strategy.ewc_weight' is now 'strategy.ewc.weight'"), result.stderr[-2000:]
    assert not (tmp_path / "w").exists()
