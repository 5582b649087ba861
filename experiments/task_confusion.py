r"""The task-confusion study of CroMo-Mixup (Sec. 3, Fig. 4, App. B): the grid, its figures and its table.

Every (setting, method) of ``--settings`` x ``--methods`` trains in ``<workdir>/<setting>/<method>``
with ``configs/task_confusion.py:<dataset>,<setting>,<method>`` (accuracy on the training data, as
the paper reports), then its final protocols are run again on the test data
(``<run>/eval/test.json``, :func:`jaxcssl.evaluate.evaluate_run`). A finished run (its
``results.json`` and ``eval/test.json`` exist) is read, not retrained; an interrupted one resumes
from its checkpoint. With ``--time_limit`` the script stops cleanly when the time is up (exit status
75) and the same command continues. Each time it writes into ``<workdir>``:

* ``RESULTS.md``: LA / WP / TP per method and setting, of the linear probe (and, for the supervised
  run, of its own classifier, ``head``), on the training and the test data, and the TP gap between
  the CIL-minibatch setting and uniform sampling;
* ``task_confusion_train.png`` / ``task_confusion_test.png``: Fig. 4's layout, LA, TP and WP of each
  setting per method as grouped bars;
* ``embedding.png``: the backbone features of the first classes of the first tasks in 2-D (PCA, or
  t-SNE with ``--embedding=tsne`` and scikit-learn, ``pip install jaxcssl[plots]``) for the
  supervised run and ``--embedding_method``, in every setting (Fig. 2(d)'s overlapping clusters).

    python experiments/task_confusion.py --dataset=demo --workdir=workdirs/task_confusion_demo  # CPU, minutes
    python experiments/task_confusion.py --dataset=cifar100 --workdir=workdirs/task_confusion_cifar100 --time_limit=9m

``--config=<key>=<value>`` overrides apply to every run (e.g. ``--config=train.epochs=1``, repeatable).
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
from absl import app, flags, logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxcssl import engine, evaluate, evaluation, methods, preemption

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = ("la", "tp", "wp")
METRIC_NAMES = {"la": "LA", "tp": "TP", "wp": "WP"}
PROBES = ("linear", "linear_fast")  # the run's linear probe, whichever its eval.final has
TEST_EVAL = "test"  # <run>/eval/test.json


def _load_configs():
    spec = importlib.util.spec_from_file_location("task_confusion_config", ROOT / "configs" / "task_confusion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


configs = _load_configs()

def default_settings(dataset: str) -> list[str]:
    """The CIL-minibatch and uniform settings of ``dataset`` (Fig. 4)."""
    names = configs.SETTINGS[dataset][1]
    return [name for name, kind in names.items() if kind in ("cil", "uniform")]


def check_grid(dataset: str, settings: Sequence[str], method_names: Sequence[str]) -> None:
    """One line naming an unknown setting or method, before anything runs."""
    for setting in settings:
        if setting not in configs.SETTINGS[dataset][1]:
            raise ValueError(f"--settings: {setting!r} is not a setting of {dataset!r}; its settings: "
                             f"{', '.join(configs.SETTINGS[dataset][1])}")
    for method in method_names:
        if method not in configs.METHODS:
            raise ValueError(f"--methods: {method!r} is not one of: {', '.join(configs.METHODS)}")


def run_config(dataset: str, setting: str, method: str, overrides: Sequence[str] = ()):
    """``configs/task_confusion.py:<dataset>,<setting>,<method>`` with ``key=value`` overrides."""
    config = configs.get_config(f"{dataset},{setting},{method}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--config {override!r}: expected key=value")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        config.update_from_flattened_dict({key: tuple(parsed) if isinstance(parsed, list) else parsed})
    return config


def _run_dir(workdir: str, setting: str, method: str) -> str:
    return os.path.join(workdir, setting, method)


def _test_path(run_dir: str) -> str:
    return os.path.join(run_dir, evaluate.EVAL_DIR, f"{TEST_EVAL}.json")


def finished(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "results.json")) and os.path.exists(_test_path(run_dir))


def run_all(dataset: str, workdir: str, settings: Sequence[str], method_names: Sequence[str],
            overrides: Sequence[str], stop: preemption.StopRequest) -> None:
    """Train (or resume, or skip when finished) every run, then score it on the test data; raises ``RunStopped``."""
    for method in method_names:
        for setting in settings:
            run_dir = _run_dir(workdir, setting, method)
            if finished(run_dir):
                logging.info("%s %s: finished earlier, reading %s", setting, method, run_dir)
                continue
            if not os.path.exists(os.path.join(run_dir, "results.json")):
                logging.info("%s %s: training in %s", setting, method, run_dir)
                engine.run(run_config(dataset, setting, method, overrides), run_dir, stop=stop)
            reason = stop.reason()
            if reason:
                raise preemption.RunStopped(f"stopped before scoring {run_dir} on the test data ({reason}); "
                                            "the same command continues")
            logging.info("%s %s: scoring the test data", setting, method)
            evaluate.write_eval(run_dir, evaluate.evaluate_run(run_dir, on="test"), TEST_EVAL)


# --- the numbers ----------------------------------------------------------------------------------
def _probe(protocols: Mapping[str, Any]) -> Optional[str]:
    return next((p for p in PROBES if p in protocols), None)


def collect(workdir: str, settings: Sequence[str], method_names: Sequence[str]) -> dict[tuple[str, str], dict]:
    """``{(setting, method): {"train": {protocol: report}, "test": {...}, "epochs": ...}}`` of the finished runs."""
    out = {}
    for setting in settings:
        for method in method_names:
            run_dir = _run_dir(workdir, setting, method)
            if not finished(run_dir):
                continue
            results = evaluation.read_results(run_dir)
            with open(_test_path(run_dir), encoding="utf-8") as f:
                test = json.load(f)["protocols"]
            out[setting, method] = {"train": results["final"], "test": test,
                                    "epochs": results["config"]["train"]["epochs"]}
    return out


def _percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def table(runs: Mapping[tuple[str, str], dict], settings: Sequence[str], method_names: Sequence[str],
          cil: str, uniform: str) -> str:
    """The Markdown table: LA / WP / TP on train and test, per method, protocol and setting; TP gaps."""
    lines = ["| method | evaluation | setting | epochs | train LA | train WP | train TP | test LA | test WP | test TP |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in method_names:
        label = methods.REGISTRY.get(method).label
        for setting in settings:
            if (setting, method) not in runs:
                lines.append(f"| {label} | | {setting} | not finished | | | | | | |")
        for protocol in (None, "head"):
            for setting in settings:
                run = runs.get((setting, method))
                name = (_probe(run["train"]) if protocol is None else protocol) if run else None
                if name not in (run or {}).get("train", {}):
                    continue
                train, test = run["train"][name], run["test"].get(name, {})
                cells = [_percent(train.get(m)) for m in ("la", "wp", "tp")] + [
                    _percent(test.get(m)) for m in ("la", "wp", "tp")]
                lines.append(f"| {label} | {name} | {setting} | {run['epochs']} | " + " | ".join(cells) + " |")
    gaps = {on: tp_gaps(runs, cil, uniform, on) for on in ("train", "test")}
    lines += ["", f"TP gap = TP({uniform}) − TP({cil}) of the linear probe, in points:", "",
              "| method | train | test |", "|---|---:|---:|"]
    lines += [f"| {methods.REGISTRY.get(m).label} | {100 * gaps['train'][m]:.2f} | {100 * gaps['test'][m]:.2f} |"
              for m in method_names if m in gaps["train"]]
    return "\n".join(lines)


def tp_gaps(runs: Mapping[tuple[str, str], dict], cil: str, uniform: str, on: str = "train") -> dict[str, float]:
    """TP(uniform) − TP(CIL-minibatch) of the linear probe per method with both runs finished."""
    out = {}
    for (setting, method), run in runs.items():
        if setting == cil and (uniform, method) in runs:
            name = _probe(run["train"])
            out[method] = runs[uniform, method][on][name]["tp"] - run[on][name]["tp"]
    return out


# --- the figures ----------------------------------------------------------------------------------
def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def bars_figure(runs: Mapping[tuple[str, str], dict], settings: Sequence[str], method_names: Sequence[str],
                on: str, path: str, title: str) -> str:
    """Fig. 4's layout: one panel per metric (LA, TP, WP), per method one bar per setting (linear probe)."""
    shown = [m for m in method_names if any((s, m) in runs for s in settings)]
    fig = Figure(figsize=(4.2 * len(METRICS), 3.4))
    width = 0.8 / max(len(settings), 1)
    for panel, metric in enumerate(METRICS):
        ax = fig.add_subplot(1, len(METRICS), panel + 1)
        for i, setting in enumerate(settings):
            values = []
            for method in shown:
                run = runs.get((setting, method))
                values.append(100 * run[on][_probe(run["train"])][metric] if run else np.nan)
            x = np.arange(len(shown)) + (i - (len(settings) - 1) / 2) * width
            drawn = ax.bar(x, values, width, label=setting)
            ax.bar_label(drawn, labels=[f"{v:.1f}" if np.isfinite(v) else "" for v in values], fontsize=6)
        ax.set_xticks(np.arange(len(shown)))
        ax.set_xticklabels([methods.REGISTRY.get(m).label for m in shown], rotation=20, fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
        ax.set_title(f"{METRIC_NAMES[metric]} ({on} data)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def project(features: np.ndarray, how: str, seed: int = 0) -> np.ndarray:
    """``[n, d]`` features -> ``[n, 2]``: PCA (the two leading principal axes) or scikit-learn's t-SNE."""
    centred = features - features.mean(axis=0)
    if how == "pca":
        _, _, axes = np.linalg.svd(centred, full_matrices=False)
        return centred @ axes[:2].T
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ValueError("--embedding=tsne needs scikit-learn: pip install 'jaxcssl[plots]' "
                         "(or use --embedding=pca)") from None
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, len(features) / 4)
                ).fit_transform(centred)


def embedding_features(run_dir: str, num_tasks: int = 2, classes_per_task: int = 2, per_class: int = 200
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
    """Backbone features, labels and tasks of the first training images of the first classes of the
    first ``num_tasks`` tasks of the trained run in ``run_dir``, and the dataset's class names."""
    restored = evaluate.restore(run_dir)
    data = restored.learner.data
    classes = [c for t in range(num_tasks) for c in np.asarray(data.split.task_classes[t])[:classes_per_task]]
    index = np.concatenate([np.flatnonzero(data.dataset.y_train == c)[:per_class] for c in classes])
    embed = restored.learner.predictors(restored.state)["features"]
    features = evaluation.extract_features(embed, data.dataset.x_train[index], restored.config.eval.batch_size)
    labels = data.dataset.y_train[index]
    tasks = np.asarray(data.split.class_to_task)[labels]
    return np.asarray(features, np.float64), labels, tasks, data.dataset.class_names


def embedding_figure(workdir: str, settings: Sequence[str], method_names: Sequence[str], how: str,
                     path: str) -> Optional[str]:
    """One panel per (method, setting) of finished runs: the 2-D embedding, colour = class, marker = task."""
    panels = [(m, s) for m in method_names for s in settings if finished(_run_dir(workdir, s, m))]
    if not panels:
        return None
    fig = Figure(figsize=(3.2 * len(settings), 3.0 * len(method_names)))
    markers = "o^sDv"
    for position, (method, setting) in enumerate(panels):
        features, labels, tasks, class_names = embedding_features(_run_dir(workdir, setting, method))
        points = project(features, how)
        ax = fig.add_subplot(len(method_names), len(settings), position + 1)
        for n, c in enumerate(np.unique(labels)):
            at = labels == c
            ax.scatter(points[at, 0], points[at, 1], s=5, alpha=0.6, marker=markers[tasks[at][0] % len(markers)],
                       color=f"C{n}", label=f"{class_names[c]} (task {tasks[at][0] + 1})")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{methods.REGISTRY.get(method).label}, {setting}", fontsize=9)
        if position == 0:
            ax.legend(fontsize=6, markerscale=2)
    fig.suptitle(f"backbone features of training images, {how.upper() if how == 'pca' else 't-SNE'}", fontsize=10)
    return _save(fig, path)


def _setting_of(dataset: str, kind: str) -> str:
    return next(name for name, k in configs.SETTINGS[dataset][1].items() if k == kind)


def write_report(dataset: str, workdir: str, settings: Sequence[str], method_names: Sequence[str],
                 embedding: str = "pca", embedding_method: str = "simclr") -> str:
    """``RESULTS.md``, the bar figures and the embedding figure of the finished runs; returns the table."""
    cil, uniform = _setting_of(dataset, "cil"), _setting_of(dataset, "uniform")
    runs = collect(workdir, settings, method_names)
    os.makedirs(workdir, exist_ok=True)
    report = (f"The task-confusion study (CroMo-Mixup Sec. 3, Fig. 4) on {dataset}: the linear probe's LA / WP / TP "
              f"(`python experiments/task_confusion.py --dataset={dataset}`).\n\n"
              + table(runs, settings, method_names, cil, uniform) + "\n")
    with open(os.path.join(workdir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(report)
    for on in ("train", "test"):
        bars_figure(runs, settings, method_names, on, os.path.join(workdir, f"task_confusion_{on}.png"),
                    f"task confusion on {dataset}: {' vs '.join(settings)} (linear probe)")
    if embedding != "none":
        drawn = [m for m in ("supervised", embedding_method) if m in method_names]
        embedding_figure(workdir, [s for s in (uniform, cil) if s in settings], drawn, embedding,
                         os.path.join(workdir, "embedding.png"))
    return report


def _define_flags() -> None:
    """The command line (defined when run as a script, so that importing the module defines no flags)."""
    flags.DEFINE_enum("dataset", "demo", list(configs.SETTINGS), "The study's dataset (demo: the CPU one).")
    flags.DEFINE_string("workdir", "workdirs/task_confusion_demo", "One sub-folder per setting and method.")
    flags.DEFINE_list("settings", [], "Settings to run ([] = the CIL-minibatch and uniform ones).")
    flags.DEFINE_list("methods", list(configs.METHODS), "Methods to run, in this order.")
    flags.DEFINE_multi_string("config", [], "key=value overrides of every run's config (e.g. train.epochs=1).")
    flags.DEFINE_string("time_limit", "", "Stop cleanly after this long (e.g. 9m); rerun to continue.")
    flags.DEFINE_string("final_eval_time", "0", "Start a run's final evaluation only if this much time is left.")
    flags.DEFINE_enum("embedding", "pca", ["pca", "tsne", "none"], "The 2-D embedding of embedding.png.")
    flags.DEFINE_string("embedding_method", "simclr", "The SSL run drawn beside the supervised one.")
    flags.DEFINE_bool("report_only", False, "Only rewrite the table and figures from the finished runs.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    f = flags.FLAGS
    dataset, workdir, method_names = f.dataset, f.workdir, f.methods
    settings = f.settings or default_settings(dataset)
    try:
        check_grid(dataset, settings, method_names)
        if f.embedding == "tsne":
            project(np.zeros((8, 3)), "tsne")  # a missing scikit-learn fails now, not after training
        if not f.report_only:
            with preemption.StopRequest.from_flags(f.time_limit, f.final_eval_time) as stop:
                run_all(dataset, workdir, settings, method_names, f.config, stop)
        print(write_report(dataset, workdir, settings, method_names, f.embedding, f.embedding_method), flush=True)
    except preemption.RunStopped as stopped:
        print(write_report(dataset, workdir, settings, method_names, "none"), flush=True)
        print(f"task_confusion: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"task_confusion: error: {error}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
