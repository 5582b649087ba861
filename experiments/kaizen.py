r"""The Kaizen poster's CIFAR-100 comparison: Kaizen, CaSSLe and no distillation for each SSL objective.

For every objective of ``--objectives`` the runs of ``--variants`` train in turn in
``<workdir>/<objective>/<variant>`` with ``configs/kaizen_cifar100.py:<objective>,<variant>`` (or
``--setting=imagenet100``). ``reference`` (every task trained alone, first) gives the specialised
accuracies of forward transfer: the other runs of the objective point ``eval.reference_workdir`` at
it. A finished run (its ``results.json`` exists) is read, not retrained; an interrupted one resumes.
With ``--time_limit`` the script stops cleanly when the time is up (exit status 75) and the same
command continues. Each time it writes ``<workdir>/RESULTS.md`` — continual accuracy, final
accuracy, forgetting and forward transfer of the deployable classifier (the ``head`` matrix) beside
the poster's continual and final accuracy — and ``<workdir>/plots/``: per objective the accuracy of
every task after each step, Kaizen against CaSSLe (the poster's per-task breakdown), and the
average accuracy on the tasks seen so far at each step, one bar per run (its "performance over
time").

    python experiments/kaizen.py --workdir=workdirs/kaizen --time_limit=55m \
        --override=dataset.source=cifar_archive --override=dataset.path=data/cifar-100-python.tar.gz
    python experiments/kaizen.py --objectives=mocov2 --variants=kaizen,replay0,replay5   # replay ablation

``--override=<key>=<value>`` applies to every run (e.g. ``train.epochs=50``).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import sys
from typing import Any, Optional, Sequence

import numpy as np
from absl import app, flags, logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxcssl import engine, evaluation, preemption
from jaxcssl.evaluation.results import matrix

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = {"cifar100": ROOT / "configs" / "kaizen_cifar100.py", "imagenet100": ROOT / "configs" / "kaizen_imagenet100.py"}
# The poster's "Performance comparison on CIFAR100": continual and final accuracy of the classifier.
POSTER = {
    "byol": {"no_distill": {"continual": 0.381, "final": 0.191}, "cassle": {"continual": 0.431, "final": 0.226},
             "kaizen": {"continual": 0.481, "final": 0.313}},
    "simclr": {"no_distill": {"continual": 0.391, "final": 0.209}, "cassle": {"continual": 0.403, "final": 0.213},
               "kaizen": {"continual": 0.547, "final": 0.362}},
    "mocov2": {"no_distill": {"continual": 0.393, "final": 0.206}, "cassle": {"continual": 0.432, "final": 0.244},
               "kaizen": {"continual": 0.570, "final": 0.409}},
    "vicreg": {"no_distill": {"continual": 0.400, "final": 0.212}, "cassle": {"continual": 0.405, "final": 0.217},
               "kaizen": {"continual": 0.516, "final": 0.292}},
}
LABELS = {"byol": "BYOL", "simclr": "SimCLR", "mocov2": "MoCo v2+", "vicreg": "VICReg"}
METRICS = ("continual_accuracy", "final_accuracy", "forgetting", "forward_transfer")

def load_setting(setting: str):
    spec = importlib.util.spec_from_file_location(f"kaizen_{setting}", SETTINGS[setting])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_config(setting: str, objective: str, variant: str, workdir: str, variants: Sequence[str],
               overrides: Sequence[str] = ()):
    """The config of one run: the setting's recipe, the overrides, the reference of forward transfer."""
    config = load_setting(setting).get_config(f"{objective},{variant}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--override={override!r}: expected <config key>=<value>")
        config.update_from_flattened_dict({key: _value(value)})
    if variant != "reference" and "reference" in variants:
        config.eval.reference_workdir = os.path.join(workdir, objective, "reference")
    return config


def _finished(workdir: str, objective: str, variant: str) -> bool:
    return os.path.exists(os.path.join(workdir, objective, variant, "results.json"))


def ordered(variants: Sequence[str]) -> list[str]:
    """``reference`` first: the other runs read its accuracies."""
    return sorted(variants, key=lambda v: v != "reference")


def run_all(setting: str, workdir: str, objectives: Sequence[str], variants: Sequence[str],
            overrides: Sequence[str], stop: preemption.StopRequest) -> None:
    """Train (or resume, or skip when finished) every run in turn; raises ``RunStopped``."""
    for objective in objectives:
        for variant in ordered(variants):
            run_dir = os.path.join(workdir, objective, variant)
            if _finished(workdir, objective, variant):
                logging.info("%s/%s: finished earlier, reading %s", objective, variant, run_dir)
                continue
            logging.info("%s/%s: training in %s", objective, variant, run_dir)
            engine.run(run_config(setting, objective, variant, workdir, variants, overrides), run_dir, stop=stop)


def _results(workdir: str, objective: str, variant: str) -> Optional[dict]:
    if not _finished(workdir, objective, variant):
        return None
    return evaluation.read_results(os.path.join(workdir, objective, variant))


def _percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(workdir: str, objectives: Sequence[str], variants: Sequence[str]) -> str:
    """Markdown: per objective and run, the classifier's metrics (%) beside the poster's."""
    lines = ["| objective | run | continual | final | forgetting | forward transfer | poster continual / final "
             "| train h | device, date |", "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for objective in objectives:
        for variant in variants:
            paper = POSTER.get(objective, {}).get(variant)
            paper = f"{_percent(paper['continual'])} / {_percent(paper['final'])}" if paper else "–"
            results = _results(workdir, objective, variant)
            name = LABELS.get(objective, objective)
            if results is None:
                lines.append(f"| {name} | {variant} | not finished | | | | {paper} | | |")
                continue
            head: dict[str, Any] = results["continual"].get("head", {})
            cells = " | ".join(_percent(head.get(m)) for m in METRICS)
            hours = sum(results["timings"]["train_seconds"]) / 3600
            run = results["run"]
            lines.append(f"| {name} | {run.get('label', variant)} | {cells} | {paper} | {hours:.2f} "
                         f"| {run['devices']['kind']}, {run['date'][:10]} |")
    return "\n".join(lines)


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_per_task(matrices: dict[str, np.ndarray], path: pathlib.Path, title: str) -> pathlib.Path:
    """Accuracy of every task after each step (``A[t][i]`` over ``t``), one line style per run."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    for style, (label, A) in zip(("-", "--", ":", "-."), matrices.items()):
        steps = np.arange(1, A.shape[0] + 1)
        for task in range(A.shape[1]):
            seen = np.isfinite(A[:, task])
            ax.plot(steps[seen], 100 * A[seen, task], style, marker=".", color=colours[task % 10],
                    label=f"{label}, task {task + 1}")
    ax.set_xticks(np.arange(1, next(iter(matrices.values())).shape[0] + 1))
    ax.set_xlabel("after training task")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_steps(matrices: dict[str, np.ndarray], path: pathlib.Path, title: str) -> pathlib.Path:
    """Average accuracy on the tasks seen so far after each step: a group of bars per step."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    width = 0.8 / len(matrices)
    for j, (label, A) in enumerate(matrices.items()):
        means = [100 * np.mean(A[t, :t + 1]) for t in range(A.shape[0])]
        bars = ax.bar(np.arange(1, A.shape[0] + 1) + (j - (len(matrices) - 1) / 2) * width, means, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(np.arange(1, next(iter(matrices.values())).shape[0] + 1))
    ax.set_xlabel("after training task")
    ax.set_ylabel("average accuracy on seen tasks (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plots(workdir: str, objectives: Sequence[str], variants: Sequence[str]) -> list[pathlib.Path]:
    """``<workdir>/plots/<objective>_per_task.png`` (Kaizen vs CaSSLe) and ``<objective>_steps.png``."""
    written = []
    for objective in objectives:
        matrices = {}
        for variant in variants:
            results = _results(workdir, objective, variant)
            if variant != "reference" and results is not None and "head" in results["matrices"]:
                matrices[results["run"].get("label", variant)] = matrix(results, "head")
        name = LABELS.get(objective, objective)
        out = pathlib.Path(workdir) / "plots"
        pair = {label: A for label, A in matrices.items() if label in ("Kaizen", "CaSSLe + classifier")}
        if pair:
            written.append(plot_per_task(pair, out / f"{objective}_per_task.png", f"{name}: accuracy per task"))
        if matrices:
            written.append(plot_steps(matrices, out / f"{objective}_steps.png",
                                      f"{name}: average accuracy after each step"))
    return written


def write_report(workdir: str, objectives: Sequence[str], variants: Sequence[str]) -> str:
    """``<workdir>/RESULTS.md`` and the plots; returns the report."""
    header = ("Kaizen: the deployable classifier's continual accuracy, final accuracy, forgetting and forward "
              "transfer (%), `python experiments/kaizen.py`, beside the poster (CIFAR-100, 5 tasks). Continual: "
              "mean over steps of the accuracy on the tasks seen so far; final: on all tasks after the last; "
              "forgetting: mean over earlier tasks of the best earlier accuracy minus the final one; forward "
              "transfer: mean over tasks after the first of the accuracy just after learning the task minus "
              "the `reference` run's (the task trained alone).")
    report = header + "\n\n" + table(workdir, objectives, variants) + "\n"
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(report)
    plots(workdir, objectives, variants)
    return report


def _define_flags() -> None:
    """The command line's flags, defined only when the module runs as a program (it imports cleanly)."""
    flags.DEFINE_string("workdir", "workdirs/kaizen", "One sub-folder per objective and run.")
    flags.DEFINE_enum("setting", "cifar100", list(SETTINGS), "The dataset's config file.")
    flags.DEFINE_list("objectives", list(POSTER), "SSL objectives, in this order.")
    flags.DEFINE_list("variants", ["reference", "kaizen", "cassle", "no_distill"],
                      "Runs per objective (configs/kaizen_cifar100.py); 'reference' trains first.")
    flags.DEFINE_multi_string("override", [], "<config key>=<value> applied to every run.")
    flags.DEFINE_string("time_limit", "", "Stop cleanly after this long (e.g. 55m); rerun to continue.")
    flags.DEFINE_string("final_eval_time", "0",
                        "Start a run's final evaluation only if this much time is left (e.g. 3m).")
    flags.DEFINE_bool("report_only", False, "Only rewrite RESULTS.md and the plots from the finished runs.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    f = flags.FLAGS
    workdir, objectives, variants = f.workdir, f.objectives, f.variants
    if f.report_only:
        print(write_report(workdir, objectives, variants), flush=True)
        return
    try:
        with preemption.StopRequest.from_flags(f.time_limit, f.final_eval_time) as stop:
            run_all(f.setting, workdir, objectives, variants, f.override, stop)
    except preemption.RunStopped as stopped:
        print(write_report(workdir, objectives, variants), flush=True)
        print(f"kaizen: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"kaizen: error: {error}")
    print(write_report(workdir, objectives, variants), flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
