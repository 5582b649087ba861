r"""Evaluate a run's checkpoints again: other protocols, the train split, another dataset; export.

Command line::

    python -m jaxcssl.evaluate --workdir=W [--task=N] [--protocol=knn,linear_fast,linear]
        [--on=test|train] [--name=NAME] [--config.eval.linear_epochs=50 ...]
        [--transfer.name=cifar10 --transfer.source=image_folder --transfer.path=...]
        [--export=PATH]

* ``--task=N`` restores the checkpoint written at the end of task N (default: the last one) and
  scores every task it has trained on; ``--protocol`` (default: the run's ``eval.final``) picks
  kNN, the fast linear probe and the paper's augmented linear probe.
* ``--config.*`` changes the run's ``eval.*`` settings (and ``train.num_devices``,
  ``dataset.path``, ``dataset.data_dir``, ``dataset.cache_dir``, which do not change what was
  trained); anything else is refused.
* ``--transfer.*`` takes the keys of ``config.dataset`` and scores the frozen backbone on that
  dataset instead (CroMo-Mixup App. C.3, Table 4): one task holding all its classes, images resized
  to the run's image size and normalised with the run's statistics (the backbone's input). With one
  task, TP = 1 and LA = WP = top-1.
* ``--export=PATH`` writes the backbone to one file (:mod:`jaxcssl.export`) instead of evaluating.

The numbers go to ``W/eval/<name>.json`` (default name ``task<N>_<on>[_transfer_<dataset>]``; a
second call with the same name adds or replaces protocols); ``W/results.json`` and the checkpoints
are only read. Errors print one line naming the culprit (``--traceback`` shows the trace).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from jaxcssl import builders, checkpointing, engine, sharding
from jaxcssl.config import base_config, flatten, validate
from jaxcssl.data import datasets, splits
from jaxcssl.engine import rng
from jaxcssl.errors import ConfigError
from jaxcssl.evaluation import protocols as protocols_lib
from jaxcssl.evaluation.results import to_json
from jaxcssl.learners import Learner

EVAL_DIR = "eval"
# Config keys an evaluation may change: they change neither what was trained nor how to restore it.
MAY_CHANGE = ("eval.", "train.num_devices", "dataset.path", "dataset.data_dir", "dataset.cache_dir")


class EvaluateError(ValueError):
    """A workdir, checkpoint, protocol or option that cannot be evaluated."""


@dataclasses.dataclass
class Restored:
    """A run rebuilt from its workdir, at the end of one task."""

    workdir: str
    config: ml_collections.ConfigDict
    learner: Learner
    state: Any
    meta: dict
    task: int  # the checkpoint: the task (phase) whose end it was written at
    tasks: tuple[int, ...]  # the split's tasks that checkpoint has trained on


def run_config(workdir: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """The run's config (``W/config.json`` over :func:`base_config`) with allowed ``overrides``.

    ``overrides`` maps dotted keys (``"eval.linear_epochs"``) to values; only keys under
    :data:`MAY_CHANGE` are accepted.
    """
    if not os.path.isdir(workdir):
        raise EvaluateError(f"no such workdir: {workdir!r}")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise EvaluateError(f"{workdir!r} is not a jaxcssl run: it has no config.json")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    config = base_config()
    config.update(saved)
    for key, value in (overrides or {}).items():
        if not key.startswith(MAY_CHANGE):
            raise EvaluateError(
                f"--config.{key} would change the trained run; an evaluation may only change "
                f"{', '.join(k + '*' if k.endswith('.') else k for k in MAY_CHANGE)}"
            )
        config.update_from_flattened_dict({key: value})
    return validate(config)


def checkpoint_task(workdir: str, task: int | None = None) -> int:
    """The task checkpoint to use: ``task`` if the workdir has it, else the last one."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints", "tasks")):
        raise EvaluateError(f"{workdir!r} has no task checkpoint: no task of the run has finished yet")
    checkpoints = checkpointing.RunCheckpoints(workdir)
    available = checkpoints.task_ids()
    checkpoints.close()
    if not available:
        raise EvaluateError(f"{workdir!r} has no task checkpoint: no task of the run has finished yet")
    if task is None:
        return max(available)
    if task not in available:
        raise EvaluateError(f"no checkpoint for task {task} in {workdir!r}; available tasks: {sorted(available)}")
    return task


def restore(workdir: str, task: int | None = None, overrides: Mapping[str, Any] | None = None) -> Restored:
    """Rebuild the run of ``workdir`` (data, learner) and restore the checkpoint of ``task``.

    The restore target is the shape of the learner's own initial state (``init_state``, traced, not
    computed), replicated over the run's mesh, so the run's dataset must be loadable here.
    """
    config = run_config(workdir, overrides)
    task = checkpoint_task(workdir, task)
    learner = engine.prepare(config)
    shapes = jax.eval_shape(learner.init_state)
    replicated = sharding.replicated(learner.data.mesh)
    target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), shapes)
    checkpoints = checkpointing.RunCheckpoints(workdir)
    state, meta = checkpoints.restore_task(task, target)
    checkpoints.close()
    return Restored(workdir=workdir, config=config, learner=learner, state=state, meta=meta, task=task,
                    tasks=learner.plan()[task].seen_tasks)


def check_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    known = protocols_lib.REGISTRY.names()
    unknown = [p for p in protocols if p not in known]
    if unknown or not protocols:
        raise EvaluateError(f"unknown protocol {unknown[0] if unknown else '(none given)'!r}; "
                            f"known: {', '.join(known)}")
    return tuple(dict.fromkeys(protocols))


def transfer_dataset_config(config: ml_collections.ConfigDict, transfer: Mapping[str, Any],
                            image_size: int) -> ml_collections.ConfigDict:
    """``config`` with its ``dataset`` replaced by ``transfer`` (keys of ``config.dataset``, nested or
    dotted). An unset ``image_size`` becomes ``image_size``, so the other dataset is resized on load.
    """
    dataset = base_config().dataset
    flat, known = flatten(transfer), flatten(dataset.to_dict())
    for key in flat:
        if key not in known:
            raise EvaluateError(f"unknown transfer key {key!r}; known: {', '.join(sorted(known))}")
    dataset.update_from_flattened_dict(flat)
    if not dataset.image_size:
        dataset.image_size = image_size
    other = copy.deepcopy(config)
    other.dataset = dataset
    try:
        return validate(other)
    except ConfigError as error:
        raise EvaluateError(f"transfer: {error}".replace("dataset.", "transfer.")) from None


def transfer_data(restored: Restored, transfer: Mapping[str, Any]) -> tuple[datasets.Dataset, splits.TaskSplit]:
    """Another dataset for the restored backbone, split as one task of all its classes."""
    data = restored.learner.data
    config = transfer_dataset_config(restored.config, transfer, data.image_size)
    dataset = builders.load_dataset(config)
    channels = data.dataset.image_shape[-1]
    if dataset.image_shape[-1] != channels:
        raise EvaluateError(f"transfer dataset {dataset.name!r} has {dataset.image_shape[-1]} channels, "
                            f"the backbone was trained on {channels}")
    return dataset, splits.make_split(dataset, "class_incremental", classes_per_task=(dataset.num_classes,))


@dataclasses.dataclass(frozen=True)
class Request:
    """A checked evaluation request: everything known before any model or data is built."""

    workdir: str
    task: int  # the task checkpoint
    protocols: tuple[str, ...]
    overrides: dict[str, Any]
    transfer: dict[str, Any] | None


def make_request(workdir: str, *, task: int | None = None, protocols: Sequence[str] | None = None,
                 on: str | None = None, overrides: Mapping[str, Any] | None = None,
                 transfer: Mapping[str, Any] | None = None) -> Request:
    """Check the workdir, config overrides, task, protocols and transfer dataset (one-line errors).

    Arguments as :func:`evaluate_run`; nothing is loaded or compiled.
    """
    overrides = dict(overrides or {})
    if on is not None:
        overrides["eval.on"] = on
    config = run_config(workdir, overrides)
    protocols = check_protocols(tuple(config.eval.final) if protocols is None else tuple(protocols))
    task = checkpoint_task(workdir, task)
    if transfer is not None:
        transfer = flatten(transfer)
        transfer_dataset_config(config, transfer, image_size=0)
    return Request(workdir=workdir, task=task, protocols=protocols, overrides=overrides, transfer=transfer)


def evaluate(request: Request) -> dict[str, Any]:
    """Restore the requested checkpoint and run the protocols; the record of :func:`evaluate_run`."""
    restored = restore(request.workdir, request.task, request.overrides)
    config, data, tasks = restored.config, restored.learner.data, restored.tasks
    dataset, split = data.dataset, data.split
    if request.transfer is not None:
        (dataset, split), tasks = transfer_data(restored, request.transfer), (0,)
    key = rng.eval_key(config.seed, restored.task)  # the engine's key after that task
    scope = protocols_lib.make_scope(dataset, split, tasks, config.eval.on, data.image_size, data.stats)
    results = protocols_lib.evaluate(request.protocols, restored.learner.predictors(restored.state), scope,
                                     config.eval, key)
    blocks = {}
    for protocol, result in results.items():
        per_task = [result["per_task"].get(i) for i in range(split.num_tasks)]
        settings = protocols_lib.settings_of(protocol, config.eval)
        blocks[protocol] = {**result["report"], "per_task": per_task, "settings": settings}
    return to_json({
        "workdir": os.path.abspath(request.workdir),
        "checkpoint_task": restored.task,
        "tasks": list(tasks),
        "on": config.eval.on,
        "dataset": dataset.name,
        "num_classes": dataset.num_classes,
        "transfer": request.transfer,
        "protocols": blocks,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    })


def evaluate_run(workdir: str, *, task: int | None = None, protocols: Sequence[str] | None = None,
                 on: str | None = None, overrides: Mapping[str, Any] | None = None,
                 transfer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint of ``task`` (default: the last) of the run in ``workdir``.

    Args:
      workdir: a run's directory (``W/config.json``, ``W/checkpoints/tasks/<task>``).
      task: the task checkpoint; ``None`` is the last one.
      protocols: names of :data:`jaxcssl.evaluation.protocols.REGISTRY` (``knn``, ``linear_fast``,
        ``linear``); ``None`` is the run's ``eval.final``.
      on: ``"test"`` or ``"train"`` (the split that is scored); ``None`` is the run's ``eval.on``.
      overrides: dotted config keys to change (``{"eval.linear_epochs": 50}``), see :data:`MAY_CHANGE`.
      transfer: keys of ``config.dataset`` naming another dataset to score the frozen backbone on.

    Returns:
      A JSON-ready record: the checkpoint, the scored tasks and split, and per protocol top-1 (top-5
      for the probes), LA, WP, TP, the per-task accuracies (``None`` for tasks not trained yet) and
      the protocol's settings.
    """
    return evaluate(make_request(workdir, task=task, protocols=protocols, on=on, overrides=overrides,
                                 transfer=transfer))


def default_name(record: Mapping[str, Any]) -> str:
    name = f"task{record['checkpoint_task']}_{record['on']}"
    return name + (f"_transfer_{record['dataset']}" if record["transfer"] is not None else "")


def check_name(name: str) -> str:
    if not name or os.sep in name or name.startswith("."):
        raise EvaluateError(f"--name={name!r} must be a plain file name (results go to W/{EVAL_DIR}/<name>.json)")
    return name


def write_eval(workdir: str, record: Mapping[str, Any], name: str | None = None) -> str:
    """Write ``record`` atomically to ``W/eval/<name>.json``; returns the path.

    When that file already holds the same checkpoint, split and dataset, its other protocols are kept.
    """
    name = check_name(name or default_name(record))
    directory = os.path.join(workdir, EVAL_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.json")
    record = dict(record)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        same = ("checkpoint_task", "on", "dataset", "transfer")
        if all(old.get(k) == record[k] for k in same):
            record["protocols"] = {**old.get("protocols", {}), **record["protocols"]}
    tmp = f"{path}.tmp-{os.getpid()}"  # then renamed: a reader never sees half a file
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_table(record: Mapping[str, Any]) -> str:
    """A short console table: one row per protocol, percentages."""
    if record["transfer"] is not None:
        scored = (f"transfer to {record['dataset']} ({record['num_classes']} classes, one task: "
                  f"LA = WP = top-1, TP = 1), {record['on']} split")
    else:
        tasks = record["tasks"]
        scored = (f"task{'s' if len(tasks) > 1 else ''} {', '.join(map(str, tasks))} of {record['dataset']}, "
                  f"{record['on']} split")
    lines = [f"{record['workdir']}: checkpoint after task {record['checkpoint_task']}; {scored}",
             f"{'protocol':<12}{'top-1':>8}{'top-5':>8}{'LA':>8}{'WP':>8}{'TP':>8}  per task"]
    for protocol, block in record["protocols"].items():
        cells = "".join(f"{_percent(block.get(k)):>8}" for k in ("top1", "top5", "la", "wp", "tp"))
        per_task = " ".join(_percent(a) for a in block["per_task"])
        lines.append(f"{protocol:<12}{cells}  {per_task}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def _define_flags() -> None:
    """The CLI's flags, defined only when the module runs as a program (its API imports cleanly)."""
    from absl import flags
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", None, "Directory of a run (W/config.json, W/checkpoints).")
    flags.DEFINE_integer("task", None, "Task checkpoint to evaluate (default: the last one).")
    known = ", ".join(protocols_lib.REGISTRY.names())
    flags.DEFINE_list("protocol", None, f"Protocols among {known} (default: the run's eval.final).")
    flags.DEFINE_string("on", None, "Split scored: test | train (default: the run's eval.on).")
    flags.DEFINE_string("name", None, "Results go to W/eval/<name>.json (default task<N>_<on>[_transfer_<dataset>]).")
    flags.DEFINE_string("export", None, "Write the backbone to this file (jaxcssl.export) instead of evaluating.")
    flags.DEFINE_bool("traceback", False, "Show the full traceback of errors instead of one line.")
    config_flags.DEFINE_config_dict("config", base_config(), "Overrides of the run's eval.* settings.")
    config_flags.DEFINE_config_dict("transfer", base_config().dataset, "Another dataset (keys of config.dataset).")


def main(argv: list[str]) -> None:
    from absl import app, flags, logging
    from ml_collections import config_flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)  # a bad request prints its one line only
    overrides = config_flags.get_override_values(FLAGS["config"])
    transfer = config_flags.get_override_values(FLAGS["transfer"]) or None
    try:
        request = make_request(FLAGS.workdir, task=FLAGS.task, protocols=FLAGS.protocol, on=FLAGS.on,
                               overrides=overrides, transfer=transfer)
        if FLAGS.name is not None:
            check_name(FLAGS.name)
        # Progress (linear probe epochs) only once the request is known to be good.
        logging.set_verbosity(logging.INFO)
        logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
        if FLAGS.export:
            from jaxcssl import export

            path = export.export_backbone(FLAGS.workdir, FLAGS.export, request.task, overrides=request.overrides)
            print(f"wrote {path}", flush=True)
            return
        record = evaluate(request)
        path = write_eval(FLAGS.workdir, record, FLAGS.name)
    except (ConfigError, checkpointing.WorkdirConfigError, FileNotFoundError, ValueError) as error:
        if FLAGS.traceback:
            raise
        sys.exit(f"jaxcssl.evaluate: error: {error}")
    print(format_table(record), flush=True)
    print(f"wrote {path}", flush=True)


def run() -> None:
    from absl import app, flags

    _define_flags()
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
