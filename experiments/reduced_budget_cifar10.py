r"""The reduced-budget CIFAR10-Split2 reproduction: fine-tune, CaSSLe+ and CroMo-Mixup at 50 epochs per task.

GitHub issue "GPU performance", item 3. Each strategy of ``--strategies`` trains in turn in
``<workdir>/<strategy>`` with ``configs/cifar10_split2_reduced.py`` (Barlow Twins, the paper's
setting at 1/10 of its epochs, then the 200-epoch linear probe). A finished run (its
``results.json`` exists) is read, not retrained; an interrupted one resumes from its checkpoint.
With ``--time_limit`` the script stops cleanly when the time is up (exit status 75) and the same
command continues, so the three runs can be spread over several bounded jobs. Each time it writes
``<workdir>/RESULTS.md``: LA / WP / TP of the final linear probe, kNN top-1, wall times, device
and date beside the paper's Table 2 numbers (``--report_only`` rewrites it from the runs' results
without training, e.g. after collecting ``results.json`` files from several machines).

    cp ../shared/data/cifar10-jpeg-*.tar.gz .data/
    python experiments/reduced_budget_cifar10.py --workdir=workdirs/cifar10_split2_reduced --time_limit=9m

``--config.<key>=<value>`` overrides apply to every strategy (e.g. ``--config.train.epochs=5``).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcssl import engine, evaluation, preemption
from jaxcssl import strategies as strategies_lib

# CroMo-Mixup Table 2, CIFAR10-Split2, Barlow Twins, 500 epochs per task: LA / WP / TP (%).
PAPER_TABLE2 = {
    "finetune": (82.67, 90.12, 91.73),
    "cassle_plus": (86.81, 90.30, 95.91),
    "cromo": (88.22, 91.78, 95.75),
}

def _define_flags() -> None:
    """The command line's flags, defined only when the module runs as a program (it imports cleanly)."""
    global _CONFIG, _WORKDIR, _STRATEGIES, _TIME_LIMIT, _FINAL_EVAL_TIME, _REPORT_ONLY
    _CONFIG = config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10_split2_reduced.py"),
        "The run's config; strategy.name is set per run.")
    _WORKDIR = flags.DEFINE_string("workdir", "workdirs/cifar10_split2_reduced", "One sub-folder per strategy.")
    _STRATEGIES = flags.DEFINE_list("strategies", list(PAPER_TABLE2), "Strategies to run, in this order.")
    _TIME_LIMIT = flags.DEFINE_string("time_limit", "", "Stop cleanly after this long (e.g. 9m); rerun to continue.")
    _FINAL_EVAL_TIME = flags.DEFINE_string(
        "final_eval_time", "0", "Start a run's final linear probe only if this much time is left (e.g. 3m).")
    _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite <workdir>/RESULTS.md from the finished runs.")




def _percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _minutes(seconds: Sequence[float]) -> str:
    return f"{sum(seconds) / 60:.1f}"


def _finished(workdir: str, strategy: str) -> bool:
    return os.path.exists(os.path.join(workdir, strategy, "results.json"))


def table(workdir: str, strategies: Sequence[str]) -> str:
    """The Markdown table of the finished runs in ``workdir``; unfinished ones are marked so."""
    lines = [
        "| method | LA | WP | TP | kNN top-1 | paper LA / WP / TP (500 epochs) | train min | eval min "
        "| img/s (task 1, 2) | device, jax, date |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for strategy in strategies:
        paper = " / ".join(f"{v:.2f}" for v in PAPER_TABLE2.get(strategy, ())) or "–"
        label = strategies_lib.REGISTRY.get(strategy).label
        if not _finished(workdir, strategy):
            lines.append(f"| {label} | not finished | | | | {paper} | | | | |")
            continue
        results = evaluation.read_results(os.path.join(workdir, strategy))
        linear: dict[str, Any] = results["final"].get("linear", {})
        knn: dict[str, Any] = results["final"].get("knn", {})
        timings = results["timings"]
        rates = ", ".join(f"{r:,.0f}" for r in timings["images_per_second"])
        run = results["run"]
        lines.append(
            f"| {label} | {_percent(linear.get('la'))} | {_percent(linear.get('wp'))} | {_percent(linear.get('tp'))} "
            f"| {_percent(knn.get('top1'))} | {paper} | {_minutes(timings['train_seconds'])} "
            f"| {_minutes(timings['eval_seconds'])} | {rates} "
            f"| {run['devices']['kind']}, {run['jax_version']}, {run['date'][:10]} |"
        )
    return "\n".join(lines)


def write_report(workdir: str, strategies: Sequence[str], config) -> str:
    """``<workdir>/RESULTS.md``: the budget (of the first finished run, else of ``config``), then the table."""
    budget = config.to_dict()
    for strategy in strategies:
        if _finished(workdir, strategy):
            budget = evaluation.read_results(os.path.join(workdir, strategy))["config"]
            break
    header = (
        f"CIFAR10-Split2 (CIFAR-10 JPEG), Barlow Twins, {budget['train']['epochs']} epochs per task, "
        f"linear probe {budget['eval']['linear_epochs']} epochs, {budget['model']['dtype']} "
        "(`python experiments/reduced_budget_cifar10.py`)."
    )
    report = header + "\n\n" + table(workdir, strategies) + "\n"
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(report)
    return report


def run_all(config, workdir: str, strategies: Sequence[str], stop: preemption.StopRequest) -> None:
    """Train (or resume, or skip when finished) every strategy in turn; raises ``RunStopped``."""
    for strategy in strategies:
        run_dir = os.path.join(workdir, strategy)
        if _finished(workdir, strategy):
            logging.info("%s: finished earlier, reading %s", strategy, run_dir)
            continue
        run_config = config.copy_and_resolve_references()
        run_config.strategy.name = strategy
        logging.info("%s: training in %s", strategy, run_dir)
        engine.run(run_config, run_dir, stop=stop)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    config, workdir, strategies = _CONFIG.value, _WORKDIR.value, _STRATEGIES.value
    if _REPORT_ONLY.value:
        print(write_report(workdir, strategies, config), flush=True)
        return
    try:
        with preemption.StopRequest.from_flags(_TIME_LIMIT.value, _FINAL_EVAL_TIME.value) as stop:
            run_all(config, workdir, strategies, stop)
    except preemption.RunStopped as stopped:
        print(write_report(workdir, strategies, config), flush=True)
        print(f"reduced_budget_cifar10: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"reduced_budget_cifar10: error: {error}")
    print(write_report(workdir, strategies, config), flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
