"""Helpers shared by the test modules."""
from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_module(path: pathlib.Path, name: str):
    """The Python file ``path`` imported as module ``name`` (config files, experiment scripts)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: pathlib.Path, arg: str | None = None):
    """``get_config(arg)`` of a config file, loaded by path as the CLI does."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def smoke_config(arg: str = "cromo"):
    """``configs/smoke.py:<arg>`` at 2 epochs per task with kNN evaluations only (fast)."""
    config = load_config(ROOT / "configs" / "smoke.py", arg)
    config.train.epochs = 2
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config
