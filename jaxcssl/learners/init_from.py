"""Start a run from the model of another run's task checkpoint.

Online-SSL Sec. 5.2: "the data of the first task is used for offline pre-training; all methods are
initialised with the pre-trained weights". A learner setting ``init_from`` names
``W/checkpoints/tasks/<p>``, the checkpoint written at the end of phase ``p`` of run ``W``; the new run
starts from its model (parameters, BatchNorm statistics, EMA target), not from its optimiser state,
memory or counters. Which split tasks that model has trained is the source learner's answer
(``tasks_trained``: a continual run's phase ``p`` ends after tasks ``0..p``; an online run's phase 0
is its pre-training on task 0). Both runs must see the same data and build the same model: the config
keys :data:`SAME` must agree, checked before anything loads.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcssl.errors import ConfigError
from jaxcssl.optim import param_path

Pytree = Any
# Config keys (or groups) that fix the data, its split into tasks and the model's shapes.
SAME = ("dataset.name", "dataset.label_mode", "dataset.classes", "dataset.image_size", "dataset.synthetic",
        "split.kind", "split.classes_per_task", "split.num_tasks", "split.class_order", "split.order_seed",
        "model", "ssl.method", "ssl.options", "augment.image_size")


@dataclasses.dataclass(frozen=True)
class Source:
    """A task checkpoint of another run, and what its model has trained."""

    workdir: str
    phase: int
    config: dict  # the source run's config.json
    tasks: tuple[int, ...]  # the split tasks its model has trained


def num_tasks(config: dict) -> int:
    """Tasks of the split described by a run's config dict."""
    split = config["split"]
    return split["num_tasks"] if split["kind"] == "data_incremental" else len(split["classes_per_task"])


def source(path: str, key: str) -> Source:
    """The checkpoint ``path`` (``W/checkpoints/tasks/<p>``) named by config key ``key``; one ConfigError line
    when it is not one."""
    from jaxcssl import learners  # the registry imports the learners, which import this module

    path = os.path.normpath(os.path.expanduser(path))
    tasks_dir, phase = os.path.split(path)
    checkpoints_dir, tasks_name = os.path.split(tasks_dir)
    workdir, checkpoints_name = os.path.split(checkpoints_dir)
    if not phase.isdigit() or (checkpoints_name, tasks_name) != ("checkpoints", "tasks"):
        raise ConfigError(f"{key}={path!r} is not a task checkpoint W/checkpoints/tasks/<task>")
    if not os.path.isdir(path):
        raise ConfigError(f"{key}={path!r} does not exist")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{key}={path!r}: its run has no config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    learner = config.get("learner", {}).get("name", "continual")
    if learner not in learners.REGISTRY or not hasattr(learners.REGISTRY.get(learner), "tasks_trained"):
        raise ConfigError(f"{key}={path!r}: which tasks a {learner!r} run's checkpoints trained is not known")
    tasks = learners.REGISTRY.get(learner).tasks_trained(config, int(phase))
    return Source(workdir=workdir, phase=int(phase), config=config, tasks=tuple(tasks))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def check_compatible(config, src: Source, key: str) -> None:
    """The run of ``config`` and the source see the same data and split and build the same model."""
    mine = _flat(json.loads(json.dumps(config.to_dict(), default=list)))
    theirs = _flat(src.config)
    for name in sorted(set(mine) | set(theirs)):
        if any(name == k or name.startswith(k + ".") for k in SAME) and mine.get(name) != theirs.get(name):
            raise ConfigError(f"{key}: the checkpoint's run has {name}={theirs.get(name, '<unset>')!r}, "
                              f"this run {mine.get(name, '<unset>')!r}")


def _digest_key(saved: str) -> str:
    """A digest key of the saved state (``.params['model']...``: attributes of its dataclasses) as the path
    in the restored plain tree (``['params']['model']...``)."""
    return re.sub(r"\.([A-Za-z_]\w*)", r"['\1']", saved)


def restore(src: Source, key: str) -> dict[str, Any]:
    """``{"params", "batch_stats", "target", "step"}`` of the source checkpoint's model (host arrays).

    The arrays are read onto this process's first device whatever mesh wrote them, and every array used
    is checked against the digest saved with it; a damaged checkpoint is one ConfigError line naming it.
    """
    from jaxcssl import checkpointing  # it imports the config, which imports the learners

    path = os.path.join(src.workdir, "checkpoints", "tasks", str(src.phase))
    manager = ocp.CheckpointManager(os.path.abspath(os.path.dirname(path)), item_names=("state", "meta"),
                                    item_handlers={"state": ocp.StandardCheckpointHandler(),
                                                   "meta": ocp.JsonCheckpointHandler()})
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        layout = manager.item_metadata(src.phase)["state"]
        layout = getattr(layout, "tree", layout)
        target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), layout)
        restored = manager.restore(src.phase, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      meta=ocp.args.JsonRestore()))
    except Exception as error:  # noqa: BLE001 -- an unreadable checkpoint is one line
        lines = str(error).strip().splitlines()
        raise ConfigError(f"{key}={path!r} does not restore ({type(error).__name__}: "
                          f"{lines[0] if lines else ''})") from None
    finally:
        manager.close()
    state = jax.device_get(restored["state"])
    model_state = state["model_state"]
    model = {"params": state["params"]["model"], "batch_stats": model_state["batch_stats"]["model"],
             "target": model_state.get("target") or None, "step": state["step"]}
    saved = {_digest_key(k): v for k, v in (restored["meta"].get("digests") or {}).items()}
    if not saved:
        raise ConfigError(f"{key}={path!r} has no array digests to verify it against")
    prefixes = {"params": "['params']['model']", "batch_stats": "['model_state']['batch_stats']['model']",
                "target": "['model_state']['target']", "step": "['step']"}
    for name, tree in model.items():
        for leaf_path, digest in checkpointing.tree_digests(tree).items():
            if saved.get(prefixes[name] + leaf_path) != digest:
                raise ConfigError(f"{key}={path!r} is damaged: array {prefixes[name] + leaf_path} does not match "
                                  "the digest saved with it")
    return {**model, "step": int(model["step"])}


def matching(expected: Pytree, restored: Pytree, what: str) -> Pytree:
    """``restored`` as a pytree of ``expected``'s structure and dtypes; ConfigError naming the first
    parameter whose path or shape differs."""
    want = {param_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {param_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    for name in sorted(set(want) | set(got)):
        if name not in got or name not in want or np.shape(got[name]) != np.shape(want[name]):
            raise ConfigError(f"init_from: {what} {name!r} is {np.shape(got[name]) if name in got else 'missing'} "
                              f"in the checkpoint, {np.shape(want[name]) if name in want else 'absent'} here")
    leaves = [np.asarray(got[param_path(p)], x.dtype) for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(expected), leaves)
