r"""Online-SSL Table 1: offline, CaSSLe, ours without RALS and ours for a list of step budgets.

For every objective of ``--objectives`` the run ``ours`` at the smallest budget of ``--steps`` comes
first: it pre-trains on the first task, then streams. Its pre-training checkpoint
(``checkpoints/tasks/0``) is where every other run starts (``online.init_from`` /
``continual.init_from``), so that all methods share one pre-trained model (Sec. 5.2). Each run trains in
``<workdir>/<objective>/<run>_<steps>`` with ``<config_file>:<objective>,<steps>,<run>``. A finished
run (its ``results.json`` exists) is read, not retrained; an interrupted one resumes. With
``--time_limit`` the script stops cleanly when the time is up (exit status 75) and the same command
continues. Each time it writes ``<workdir>/RESULTS.md`` (the linear-probe top-1 of every run in
Table 1's layout, beside the paper's numbers) and ``<workdir>/accuracy_vs_steps.png``.

    python experiments/online_ssl.py --workdir=workdirs/online_c100 --time_limit=55m
    python experiments/online_ssl.py --config_file=configs/online_cifar10.py --steps=4 --objectives=barlow_twins \
        --workdir=workdirs/online_c10      # the embedded CIFAR-10 subset, on a CPU
    python experiments/online_ssl.py --set=online.memory_size=5000 ...   # any override, every run

``--report_only`` rewrites the report from the finished runs without training.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import Any, Optional, Sequence

from absl import app, flags, logging

from jaxcssl import engine, evaluation, preemption
from jaxcssl.errors import ConfigError

# Table 1, linear-probe top-1 (%): {dataset: {(run, steps): {objective: accuracy}}}. "Full" CaSSLe is
# the fully trained one (500 epochs per task).
PAPER_TABLE1: dict[str, dict[tuple[str, int], dict[str, float]]] = {
    "cifar100": {
        ("offline", 10): {"barlow_twins": 48.5, "simclr": 50.68},
        ("cassle", 10): {"barlow_twins": 50.89, "simclr": 49.48},
        ("norals", 10): {"barlow_twins": 55.39, "simclr": 50.39},
        ("ours", 10): {"barlow_twins": 55.75, "simclr": 50.63},
        ("offline", 20): {"barlow_twins": 56.23, "simclr": 51.71},
        ("cassle", 20): {"barlow_twins": 54.35, "simclr": 50.34},
        ("norals", 20): {"barlow_twins": 55.95, "simclr": 52.44},
        ("ours", 20): {"barlow_twins": 56.64, "simclr": 52.77},
        ("offline", 50): {"barlow_twins": 59.64, "simclr": 54.29},
        ("cassle", 50): {"barlow_twins": 56.25, "simclr": 51.83},
        ("norals", 50): {"barlow_twins": 57.15, "simclr": 53.25},
        ("ours", 50): {"barlow_twins": 58.48, "simclr": 54.76},
        ("offline", 100): {"barlow_twins": 62.93, "simclr": 56.64},
        ("cassle", 100): {"barlow_twins": 57.48, "simclr": 53.19},
    },
    "imagenet100": {
        ("offline", 10): {"barlow_twins": 44.74, "simclr": 58.94},
        ("cassle", 10): {"barlow_twins": 49.70, "simclr": 59.70},
        ("norals", 10): {"barlow_twins": 66.10, "simclr": 64.64},
        ("ours", 10): {"barlow_twins": 66.94, "simclr": 64.86},
        ("offline", 20): {"barlow_twins": 67.94, "simclr": 67.84},
        ("cassle", 20): {"barlow_twins": 64.48, "simclr": 63.74},
        ("norals", 20): {"barlow_twins": 67.02, "simclr": 66.26},
        ("ours", 20): {"barlow_twins": 68.18, "simclr": 66.78},
        ("offline", 50): {"barlow_twins": 69.24, "simclr": 71.26},
        ("cassle", 50): {"barlow_twins": 67.56, "simclr": 65.56},
        ("norals", 50): {"barlow_twins": 66.92, "simclr": 67.48},
        ("ours", 50): {"barlow_twins": 68.40, "simclr": 67.98},
        ("offline", 100): {"barlow_twins": 74.66, "simclr": 73.28},
        ("cassle", 100): {"barlow_twins": 69.74, "simclr": 66.94},
    },
}
LABELS = {"offline": "Offline", "cassle": "CaSSLe", "norals": "Ours without RALS", "ours": "Ours"}
RUNS = tuple(LABELS)

def _define_flags() -> None:
    """The command line's flags, defined only when the module runs as a program (it imports cleanly)."""
    global _WORKDIR, _CONFIG_FILE, _CONFIG_SUFFIX, _OBJECTIVES, _STEPS, _RUNS, _SET, _TIME_LIMIT, _FINAL_EVAL_TIME
    global _REPORT_ONLY
    _WORKDIR = flags.DEFINE_string("workdir", "workdirs/online_ssl", "One sub-folder per objective and run.")
    _CONFIG_FILE = flags.DEFINE_string(
        "config_file", os.path.join(os.path.dirname(__file__), "..", "configs", "online_cifar100.py"),
        "A config file whose get_config takes '<objective>,<steps>,<run>' (configs/online_*.py).")
    _CONFIG_SUFFIX = flags.DEFINE_string("config_suffix", "", "Appended to the config argument (e.g. 'full').")
    _OBJECTIVES = flags.DEFINE_list("objectives", ["barlow_twins", "simclr"], "SSL objectives (Table 1's columns).")
    _STEPS = flags.DEFINE_list("steps", ["10", "20", "50", "100"], "Local steps per stream batch (Table 1's rows).")
    _RUNS = flags.DEFINE_list("runs", list(RUNS), f"Runs per budget, of {', '.join(RUNS)}.")
    _SET = flags.DEFINE_multi_string("set", [], "key=value applied to every run's config (a Python literal or a string).")
    _TIME_LIMIT = flags.DEFINE_string("time_limit", "", "Stop cleanly after this long (e.g. 55m); rerun to continue.")
    _FINAL_EVAL_TIME = flags.DEFINE_string(
        "final_eval_time", "0", "Start a run's final evaluation only if this much time is left (e.g. 5m).")
    _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite the report from the finished runs.")




def load_config_file(path: str):
    """The ``get_config`` of ``path``."""
    spec = importlib.util.spec_from_file_location("online_ssl_config", path)
    if spec is None or not os.path.isfile(path):
        raise ConfigError(f"--config_file {path!r} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["online.memory_size=5000", ...]`` -> ``{"online.memory_size": 5000}``."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def run_dir(workdir: str, objective: str, run: str, steps: int) -> str:
    return os.path.join(workdir, objective, f"{run}_{steps}")


def finished(path: str) -> bool:
    return os.path.exists(os.path.join(path, "results.json"))


def pretraining(workdir: str, objective: str, steps: Sequence[int]) -> str:
    """The run that pre-trains (``ours`` at the smallest budget) and whose task-0 checkpoint all others use."""
    return run_dir(workdir, objective, "ours", min(steps))


def plan(workdir: str, objectives: Sequence[str], steps: Sequence[int], runs: Sequence[str]
         ) -> list[tuple[str, int, str, str, Optional[str]]]:
    """``(objective, steps, run, workdir, init_from)`` in training order: per objective its pre-training
    run first, then every other run from that run's first checkpoint."""
    out = []
    for objective in objectives:
        first = pretraining(workdir, objective, steps)
        start = os.path.join(first, "checkpoints", "tasks", "0")
        out.append((objective, min(steps), "ours", first, None))
        for n in steps:
            for run in runs:
                path = run_dir(workdir, objective, run, n)
                if path != first:
                    out.append((objective, n, run, path, start))
    return out


def build(get_config, objective: str, steps: int, run: str, init_from: Optional[str], overrides: dict, suffix: str):
    config = get_config(",".join([objective, str(steps), run] + ([suffix] if suffix else [])))
    if init_from is not None:
        if config.learner.name == "online":
            config.online.pretrain_epochs = 0
            config.online.init_from = init_from
        else:
            config.continual.init_from = init_from
    config.update_from_flattened_dict(overrides)
    return config


def run_all(get_config, workdir: str, objectives, steps, runs, overrides: dict, suffix: str,
            stop: preemption.StopRequest) -> None:
    """Train (or resume, or skip when finished) every run in turn; raises ``RunStopped``."""
    for objective, n, run, path, init_from in plan(workdir, objectives, steps, runs):
        if finished(path):
            logging.info("%s: finished earlier", path)
            continue
        logging.info("%s: training%s", path, f" from {init_from}" if init_from else "")
        engine.run(build(get_config, objective, n, run, init_from, overrides, suffix), path, stop=stop)


def accuracy(path: str) -> tuple[Optional[float], str]:
    """The final linear-probe top-1 of a finished run (the fast probe or kNN when that is all it has)."""
    if not finished(path):
        return None, ""
    final = evaluation.read_results(path)["final"]
    for protocol in ("linear", "linear_fast", "knn"):
        if protocol in final:
            return 100 * final[protocol]["top1"], protocol
    return None, ""


def table(workdir: str, dataset: str, objectives: Sequence[str], steps: Sequence[int], runs: Sequence[str]) -> str:
    """Table 1's layout: a row per budget and run, per objective ours | paper."""
    paper = PAPER_TABLE1.get(dataset, {})
    header = "| steps | strategy | " + " | ".join(f"{o} | paper" for o in objectives) + " |"
    lines = [header, "|---:|---|" + "---:|---:|" * len(objectives)]
    protocols = set()
    for n in steps:
        for run in runs:
            cells = []
            for objective in objectives:
                value, protocol = accuracy(run_dir(workdir, objective, run, n))
                protocols.add(protocol)
                cells.append("not run" if value is None else f"{value:.2f}")
                cells.append(f"{paper[(run, n)][objective]:.2f}" if objective in paper.get((run, n), {}) else "–")
            lines.append(f"| {n} | {LABELS[run]} | " + " | ".join(cells) + " |")
    used = sorted(p for p in protocols if p)
    note = f"\nAccuracy: final {', '.join(used)} top-1 (%)." if used else ""
    return "\n".join(lines) + note


def plot(workdir: str, dataset: str, objectives: Sequence[str], steps: Sequence[int], runs: Sequence[str]) -> str:
    """``<workdir>/accuracy_vs_steps.png``: accuracy against the step budget, ours solid, the paper dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paper = PAPER_TABLE1.get(dataset, {})
    fig = Figure(figsize=(5 * len(objectives), 4))
    for i, objective in enumerate(objectives):
        ax = fig.add_subplot(1, len(objectives), i + 1)
        for j, run in enumerate(runs):
            color = f"C{j}"
            ours = [(n, accuracy(run_dir(workdir, objective, run, n))[0]) for n in steps]
            ours = [(n, v) for n, v in ours if v is not None]
            if ours:
                ax.plot(*zip(*ours), marker="o", color=color, label=LABELS[run])
            theirs = [(n, paper[(run, n)][objective]) for n in steps if objective in paper.get((run, n), {})]
            if theirs:
                ax.plot(*zip(*theirs), marker="x", linestyle="--", color=color, label=f"{LABELS[run]} (paper)")
        ax.set_xscale("log")
        ax.set_xticks(list(steps), [str(n) for n in steps])
        ax.set_xlabel("local steps per stream batch")
        ax.set_ylabel("linear-probe top-1 (%)")
        ax.set_title(f"{dataset} {objective}")
        ax.legend(fontsize=7)
    path = os.path.join(workdir, "accuracy_vs_steps.png")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def write_report(workdir: str, dataset: str, objectives, steps, runs) -> str:
    """``<workdir>/RESULTS.md`` and the plot, from the finished runs."""
    os.makedirs(workdir, exist_ok=True)
    report = (f"Online-SSL Table 1 on {dataset} (`python experiments/online_ssl.py`); every run starts from "
              f"the pre-training of `ours` at {min(steps)} steps.\n\n"
              + table(workdir, dataset, objectives, steps, runs) + "\n\n![accuracy vs steps](accuracy_vs_steps.png)\n")
    with open(os.path.join(workdir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(report)
    plot(workdir, dataset, objectives, steps, runs)
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    try:
        steps = [int(n) for n in _STEPS.value]
        unknown = [r for r in _RUNS.value if r not in RUNS]
        if unknown or not steps or min(steps) <= 0:
            raise ConfigError(f"--runs must be of {', '.join(RUNS)} and --steps positive integers")
        get_config = load_config_file(_CONFIG_FILE.value)
        overrides = parse_overrides(_SET.value)
        dataset = build(get_config, _OBJECTIVES.value[0], steps[0], "ours", None, overrides,
                        _CONFIG_SUFFIX.value).dataset.name
        args = (_WORKDIR.value, dataset, _OBJECTIVES.value, steps, _RUNS.value)
        if _REPORT_ONLY.value:
            print(write_report(*args), flush=True)
            return
        with preemption.StopRequest.from_flags(_TIME_LIMIT.value, _FINAL_EVAL_TIME.value) as stop:
            run_all(get_config, _WORKDIR.value, _OBJECTIVES.value, steps, _RUNS.value, overrides,
                    _CONFIG_SUFFIX.value, stop)
    except preemption.RunStopped as stopped:
        print(write_report(*args), flush=True)
        print(f"online_ssl: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"online_ssl: error: {error}")
    print(write_report(*args), flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
