"""Extending the library: a strategy and a learner, each one module plus one registry line.

The two modules are the README's walk-throughs (``docs/examples``; the README shows them verbatim,
checked here). One run trains the toy strategy under the toy learner end to end.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from jaxcssl import engine, learners, strategies
from jaxcssl.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_config(arg: str):
    config = _load(ROOT / "configs" / "smoke.py").get_config(arg)
    config.train.epochs = 2
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config


@pytest.fixture(scope="module")
def registered():
    strategy = _load(EXAMPLES / "weighted_replay.py").WeightedReplay
    learner = _load(EXAMPLES / "constant_rate.py").ConstantRate
    yield strategy, learner
    strategies.REGISTRY.unregister(strategy.name)
    learners.REGISTRY.unregister(learner.name)


def test_the_readme_shows_the_example_modules_verbatim():
    readme = (ROOT / "README.md").read_text()
    for name in ("weighted_replay.py", "constant_rate.py"):
        assert (EXAMPLES / name).read_text().strip() in readme, name


def test_registered_names_appear_in_the_schema_and_are_checked(registered):
    config = smoke_config("weighted_replay")
    assert config.strategy.weighted_replay.weight == 0.5 and config.constant_rate.learning_rate == 0.05
    config.strategy.weighted_replay.weight = -1.0
    with pytest.raises(ConfigError, match="strategy.weighted_replay.weight=-1.0 must be >= 0"):
        engine.prepare(config)
    config = smoke_config("weighted_replay")
    config.learner.name = "constant_rate"
    config.constant_rate.learning_rate = 0.0
    with pytest.raises(ConfigError, match="constant_rate.learning_rate=0.0 must be > 0"):
        engine.prepare(config)
    with pytest.raises(ValueError, match="already registered"):
        strategies.register(type("WeightedReplay", (registered[0],), {}))


def test_a_toy_strategy_under_a_toy_learner_trains_end_to_end(registered, tmp_path):
    config = smoke_config("weighted_replay")
    config.learner.name = "constant_rate"
    config.constant_rate.learning_rate = 0.05
    results = engine.run(config, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if "train/loss" in row]
    np.testing.assert_allclose([row["train/lr"] for row in trained], 0.05, rtol=1e-6)  # the learner's schedule
    first_task_steps = results["history"][0]["step"]
    replay_steps = [row["step"] for row in trained if "train/replay" in row]
    assert replay_steps and min(replay_steps) > first_task_steps  # the replay term only after the first task
    assert results["run"]["label"] == "Weighted replay" and results["run"]["learner"] == "constant_rate"
    assert results["final"]["knn"]["top1"] > 0.5  # two tasks of two balanced classes: chance is 0.25
