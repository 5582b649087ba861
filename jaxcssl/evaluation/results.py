"""The machine-readable results of a run, `W/results.json`: schema, builder, writer, reader.

Schema version 1. Accuracies are fractions in [0, 1]; `null` means not evaluated or undefined
(e.g. forgetting with one task). Task indices are 0-based, in training order.

    {
      "schema_version": 1,
      "config": {...},                     # the run's config as a plain dict (ConfigDict.to_dict())
      "run": {
        "strategy": "cromo",               # continual-learning method
        "ssl_method": "barlow_twins",      # SSL objective
        "dataset": "cifar100",
        "split_kind": "class_incremental", # how the classes were dealt into tasks
        "task_classes": [[3, 17, ...], ...],  # class ids of each task
        "num_tasks": 5,
        "seed": 0,
        "devices": {"count": 1, "platform": "gpu", "kind": "NVIDIA H100 ...", "processes": 1},
        "jax_version": "0.11.2",
        "date": "2026-01-31T12:00:00+00:00",  # UTC, ISO 8601
        "label": "CroMo-Mixup*",           # optional: row name in reports (default: strategy)
        "learner": "continual"             # optional: the training protocol (config.learner.name)
      },
      "matrices": {                        # accuracy matrices A[t][i]: on task i after task t
        "knn": [[0.61, null], [0.55, 0.58]],   # null above the diagonal / not yet evaluated
        "linear_fast": [[...], [...]]
      },
      "reference": {"knn": [0.61, 0.60]},  # optional: accuracy on task i of a model trained on
                                           # task i alone, enables forward_transfer below
      "continual": {                       # per matrix, over the tasks completed so far
        "knn": {"tasks_completed": 2, "average_accuracy": ..., "final_accuracy": ...,
                "forgetting": ..., "backward_transfer": ..., "continual_accuracy": ...,
                "forward_transfer": ...}   # forward_transfer only with "reference"
      },
      "final": {                           # the final model, per evaluation protocol
        "linear": {"top1": ..., "top5": ..., "la": ..., "wp": ..., "tp": ...},
        "linear_fast": {"top1": ..., "top5": ..., "la": ..., "wp": ..., "tp": ...},
        "knn": {"top1": ..., "la": ..., "wp": ..., "tp": ..., "per_task": [...]}
      },
      "per_task": {"knn": [...], "linear": [...]},   # per-task accuracy of the final model
      "timings": {"train_seconds": [...], "eval_seconds": [...], "images_per_second": [...]},
      "history": [                         # one row per evaluation during training
        {"task": 0, "step": 500, "knn": 0.42, "knn_per_task": [0.42, null]}, ...
      ],                                   # (rows within a phase also carry "phase_step")
      "learner": {...}                     # optional: the learner's own numbers (e.g. pseudo-label statistics)
    }

Every key above is present (an empty dict or list when nothing was measured), except
`run.label`, `run.learner`, `reference` and `learner`, which are optional. Rows of `history` need `task` and `step`; the
other row keys are free-form metric names (`knn_per_task` is what `plots.py` draws).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxcssl.evaluation import continual

SCHEMA_VERSION = 1
RESULTS_FILENAME = "results.json"
TOP_LEVEL_KEYS = ("schema_version", "config", "run", "matrices", "continual", "final", "per_task", "timings",
                  "history")
RUN_KEYS = ("strategy", "ssl_method", "dataset", "split_kind", "task_classes", "num_tasks", "seed", "devices",
            "jax_version", "date")


class ResultsError(ValueError):
    """A results.json that is missing, unreadable or does not follow the schema."""


def to_json(value: Any) -> Any:
    """Plain JSON types: arrays to lists, NumPy/JAX scalars to Python numbers, NaN/inf to None."""
    if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        array = np.asarray(value)
        return to_json(array.tolist()) if array.ndim else to_json(array.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def run_info(*, strategy: str, ssl_method: str, dataset: str, split_kind: str,
             task_classes: Sequence[Sequence[int]], seed: int, label: str | None = None,
             learner: str | None = None) -> dict[str, Any]:
    """The `run` block: what was run, plus the devices, jax version and the UTC date, filled in here."""
    import jax  # Only for the device description.

    devices = jax.devices()
    info = {"strategy": strategy, "ssl_method": ssl_method, "dataset": dataset, "split_kind": split_kind,
            "task_classes": [[int(c) for c in classes] for classes in task_classes],
            "num_tasks": len(task_classes), "seed": int(seed),
            "devices": {"count": len(devices), "platform": devices[0].platform, "kind": devices[0].device_kind,
                        "processes": jax.process_count()},
            "jax_version": jax.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if label is not None:
        info["label"] = label
    if learner is not None:
        info["learner"] = learner
    return info


def completed_block(A: Any) -> np.ndarray:
    """The leading square block A[:s, :s] of a partly filled matrix, s = tasks evaluated so far."""
    A = np.array(to_json(A), dtype=np.float64)
    done = 0
    while done < min(A.shape) and np.isfinite(A[done, done]):
        done += 1
    return A[:done, :done]


def continual_block(matrices: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """The `continual` block: `continual.continual_summary` of each matrix's completed block."""
    block = {}
    for name, A in matrices.items():
        done = completed_block(A)
        if done.size == 0:
            continue
        summary = {"tasks_completed": int(done.shape[0]), **continual.continual_summary(done)}
        if reference and name in reference:
            summary["forward_transfer"] = continual.forward_transfer(done, list(reference[name])[:done.shape[0]])
        block[name] = summary
    return block


def build_results(*, config: Any, run: Mapping[str, Any], matrices: Mapping[str, Any] | None = None,
                  final: Mapping[str, Any] | None = None, per_task: Mapping[str, Any] | None = None,
                  timings: Mapping[str, Any] | None = None, history: Sequence[Mapping[str, Any]] | None = None,
                  reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assembles a schema-valid results dict (JSON types only); `continual` is computed from `matrices`."""
    matrices = dict(matrices or {})
    results = {"schema_version": SCHEMA_VERSION, "config": config, "run": dict(run), "matrices": matrices,
               "continual": continual_block(matrices, reference), "final": dict(final or {}),
               "per_task": dict(per_task or {}), "timings": dict(timings or {}), "history": list(history or [])}
    if reference:
        results["reference"] = dict(reference)
    results = to_json(results)
    validate_results(results)
    return results


def _require(mapping: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise ResultsError(f"'{where}' must be an object, got {type(mapping).__name__}")
    for key in keys:
        if key not in mapping:
            raise ResultsError(f"missing key '{where}.{key}'" if where else f"missing key '{key}'")


def validate_results(results: Any) -> None:
    """Raises ResultsError naming the first missing or malformed key."""
    _require(results, TOP_LEVEL_KEYS, "")
    if results["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"schema_version is {results['schema_version']!r}, this code reads {SCHEMA_VERSION}")
    _require(results["run"], RUN_KEYS, "run")
    num_tasks = results["run"]["num_tasks"]
    if len(results["run"]["task_classes"]) != num_tasks:
        raise ResultsError(f"run.task_classes has {len(results['run']['task_classes'])} tasks but "
                           f"run.num_tasks is {num_tasks}")
    for key in ("matrices", "continual", "final", "per_task", "timings"):
        if not isinstance(results[key], dict):
            raise ResultsError(f"'{key}' must be an object, got {type(results[key]).__name__}")
    for name, A in results["matrices"].items():
        if (not isinstance(A, list) or len(A) != num_tasks
                or any(not isinstance(row, list) or len(row) != num_tasks for row in A)):
            raise ResultsError(f"matrices.{name} must be a {num_tasks}x{num_tasks} list of lists")
    for name, block in results["final"].items():
        if not isinstance(block, dict):
            raise ResultsError(f"final.{name} must be an object, got {type(block).__name__}")
    if not isinstance(results["history"], list):
        raise ResultsError(f"'history' must be a list, got {type(results['history']).__name__}")
    for index, row in enumerate(results["history"]):
        _require(row, ("task", "step"), f"history[{index}]")


def _results_path(path: str | os.PathLike) -> pathlib.Path:
    """A `.json` path is the file itself; anything else is a workdir holding `results.json`."""
    path = pathlib.Path(path)
    return path if path.suffix == ".json" and not path.is_dir() else path / RESULTS_FILENAME


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> pathlib.Path:
    """Validates and writes `results` atomically (temporary file in the same folder, then rename).

    `path` is a `.json` file or the workdir (then `results.json` inside it, created if need be).
    Returns the file's path.
    """
    path = _results_path(path)
    results = to_json(results)
    validate_results(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a `.json` results file or a workdir's `results.json`.

    Raises ResultsError with one line naming the file and the problem.
    """
    path = _results_path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ResultsError(f"{path}: cannot read ({e.strerror})") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    try:
        validate_results(results)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    return results


def matrix(results: Mapping[str, Any], name: str) -> np.ndarray:
    """float64 [T, T] accuracy matrix `name` of a results dict, null entries as NaN."""
    if name not in results["matrices"]:
        raise KeyError(f"no matrix '{name}' in results (have: {sorted(results['matrices'])})")
    return np.array(to_json(results["matrices"][name]), dtype=np.float64)
