"""The engine's evaluation points: after every phase and at the end of the run.

They connect a learner's predictors to the protocols of :mod:`jaxcssl.evaluation.protocols`:

* :func:`after_phase` — ``config.eval.after_task`` on every task seen so far, giving one row
  ``A[t][·]`` of each accuracy matrix (``None`` for tasks not seen yet) and a history row;
* :func:`final` — ``config.eval.final`` on all tasks with top-1/top-5 and LA/WP/TP, then
  ``W/results.json`` and plots.

``config.eval.on = "train"`` scores the training data instead of the test data (the CroMo
task-confusion study, Sec. 3).
"""
from __future__ import annotations

import time
from typing import Any, Optional

import jax
import numpy as np
from absl import logging

from jaxcssl import evaluation
from jaxcssl.engine import rng
from jaxcssl.evaluation import protocols
from jaxcssl.evaluation.results import to_json
from jaxcssl.learners.base import Learner, Phase

Pytree = Any


def scope(learner: Learner, tasks: tuple[int, ...], on: str) -> protocols.Scope:
    data = learner.data
    return protocols.make_scope(data.dataset, data.split, tasks, on, data.image_size, data.stats)


def _row(per_task: dict[int, float], num_tasks: int) -> list[Optional[float]]:
    return [per_task.get(i) for i in range(num_tasks)]


def after_phase(config, learner: Learner, state: Pytree, phase: Phase, phase_step: Optional[int] = None
                ) -> dict[str, Any]:
    """Evaluate ``config.eval.after_task`` on the tasks seen so far → matrix rows and a history row.

    ``phase_step``: an evaluation within the phase (``Phase.eval_every_steps``) at that step.
    """
    if phase_step is None:
        key = rng.eval_key(config.seed, phase.index)
    else:
        key = jax.random.fold_in(rng.phase_key(config.seed, "eval_during", phase.index), phase_step)
    results = protocols.evaluate(tuple(config.eval.after_task), learner.predictors(state),
                                 scope(learner, phase.seen_tasks, config.eval.on), config.eval, key)
    num_tasks = learner.data.split.num_tasks
    row, matrix_rows, scalars, summary = {}, {}, {}, []
    for protocol, result in results.items():
        per_task = _row(result["per_task"], num_tasks)
        matrix_rows[protocol] = per_task
        overall = result["report"]["top1"]
        row[protocol] = overall
        row[f"{protocol}_per_task"] = per_task
        scalars[f"eval/{protocol}"] = overall
        scalars.update({f"eval/{protocol}_task{i}": a for i, a in enumerate(per_task) if a is not None})
        summary.append(f"{protocol} {100 * overall:.2f}% (per task " +
                       " ".join(f"{100 * a:.1f}" for a in per_task if a is not None) + ")")
    return {"row": row, "matrix_rows": matrix_rows, "scalars": scalars, "summary": "; ".join(summary)}


def reference_accuracies(config, num_tasks: int) -> Optional[dict[str, list]]:
    """``R[i]`` per matrix of ``eval.after_task``: the diagonal ``A_ref[i][i]`` of a run trained on
    every task alone (``train.reinit_each_task=True``) in ``eval.reference_workdir``, for Kaizen's
    forward transfer ``mean_{i≥1} A[i][i] − R[i]``. Checked before training starts."""
    workdir = config.eval.reference_workdir
    if not workdir:
        return None
    reference = evaluation.read_results(workdir)
    if not reference["config"]["train"].get("reinit_each_task"):
        raise ValueError(f"eval.reference_workdir {workdir!r} was not trained with train.reinit_each_task=True")
    out = {}
    for name in config.eval.after_task:
        ref = reference["matrices"].get(name)
        if ref is None or len(ref) != num_tasks:
            raise ValueError(f"eval.reference_workdir {workdir!r} has no {num_tasks}-task '{name}' matrix")
        out[name] = [ref[i][i] for i in range(num_tasks)]
    return out


def final(config, learner: Learner, state: Pytree, meta: dict, workdir: str, images_per_step: list[int]) -> dict:
    """The final evaluation on all tasks, ``W/results.json`` and ``W/plots/``; returns the results."""
    start = time.time()
    data = learner.data
    tasks = tuple(range(data.split.num_tasks))
    results = protocols.evaluate(tuple(config.eval.final), learner.predictors(state),
                                 scope(learner, tasks, config.eval.on), config.eval, rng.eval_key(config.seed, None))
    per_task = {name: _row(r["per_task"], len(tasks)) for name, r in results.items()}
    final_block = {name: dict(r["report"]) for name, r in results.items()}
    if "knn" in final_block:
        final_block["knn"]["per_task"] = per_task["knn"]
    timings = meta["timings"]
    images_per_s = [
        steps * images / max(seconds, 1e-9)
        for steps, seconds, images in zip(timings["steps"], timings["train_s"], images_per_step)
    ]
    info = learner.info()
    out = evaluation.build_results(
        config=config.to_dict(),
        run=evaluation.run_info(
            strategy=info["strategy"], ssl_method=info["ssl_method"], dataset=data.dataset.name,
            split_kind=data.split.kind, task_classes=[np.asarray(c).tolist() for c in data.split.task_classes],
            seed=config.seed, label=info["label"], learner=learner.name,
        ),
        matrices=meta["matrices"], final=final_block, per_task=per_task,
        timings={"train_seconds": timings["train_s"], "eval_seconds": timings["eval_s"] + [time.time() - start],
                 "images_per_second": images_per_s},
        history=meta["history"],
        reference=reference_accuracies(config, len(tasks)),
    )
    extra = learner.results(state)
    if extra:
        out["learner"] = to_json(extra)
    if jax.process_index() == 0:
        evaluation.write_results(workdir, out)
        from jaxcssl.evaluation import plots

        plots.plot_run(workdir)
    for name, report in final_block.items():
        logging.info("final %s: %s", name, {k: v for k, v in report.items() if k != "per_task"})
    return out
