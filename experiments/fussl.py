r"""FUSSL's tables: Base / "1200 ep" / FUSSL for each SSL objective, and the ablations, beside the paper.

Each table trains the runs it needs with ``configs/fussl.py:<setting>,<objective>,<case>`` in
``<workdir>/<objective>/<case>`` (a finished run, with its ``results.json``, is read, not retrained;
an interrupted one resumes), evaluates what the table shows, and writes ``<workdir>/RESULTS.md``:

* ``--table=1`` (linear evaluation, Table 1): Base (the chosen member after phase 1: the FUSSL run's
  checkpoint after phase 0), 1200 ep (``continued``: one model, phase 1 continued for the phase-2
  epochs), FUSSL (after phase 2) and the gain;
* ``--table=2`` (transfer, Table 2): the same three models scored on ``--transfer`` datasets
  (``name:source:path``, e.g. ``cifar10:image_folder:../shared/data/cifar10-jpeg-*.tar.gz``);
* ``--table=3`` (ablations, Table 3): Base, FUSSL, Case 1 (``hard``), Case 2 (``soft``), Case 3
  (``progressive``);
* ``--table=4`` (cross-class, Table 4; ``--setting=cifar100_cross_class``): Base, FUSSL, Case 4
  (``hard``), Case 5 (``soft``).

Accuracies are top-1 of the first of ``linear``, ``linear_fast``, ``knn`` in the run's
``eval.final``. ``--time_limit`` stops cleanly (exit status 75) and the same command continues;
``--config.<key>=<value>`` overrides apply to every run (e.g. a reduced budget).

    python experiments/fussl.py --table=1 --setting=cifar10_subset --objectives=barlow_twins --time_limit=50m
    python experiments/fussl.py --table=3 --setting=tiny_imagenet --config.dataset.path=/data/tiny-imagenet-200.zip
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from absl import app, flags, logging

from jaxcssl import engine, evaluate, evaluation, preemption

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OBJECTIVES = ("simclr", "byol", "swav", "simsiam", "wmse", "barlow_twins")
# The paper's numbers (top-1 %): Table 1 (ImageNet: Base, 1200 ep, FUSSL), Table 2 (transfer from
# ImageNet to CIFAR-10 and CIFAR-100: Base, 1200 ep, FUSSL each), Table 3 (Tiny-ImageNet: Base, FUSSL,
# Cases 1-3), Table 4 (CIFAR-100 cross-class: Base, FUSSL, Cases 4-5).
PAPER = {
    1: {"simclr": (69.3, 69.4, 70.4), "byol": (73.9, 74.1, 74.7), "swav": (75.1, 75.2, 75.4),
        "simsiam": (70.9, 70.8, 72.1), "wmse": (73.1, 73.4, 74.4), "barlow_twins": (73.3, 73.4, 74.7)},
    2: {"simclr": {"cifar10": (89.97, 90.11, 90.83), "cifar100": (75.91, 75.99, 76.59)},
        "byol": {"cifar10": (91.28, 91.42, 92.11), "cifar100": (78.49, 78.75, 79.53)},
        "swav": {"cifar10": (94.33, 94.41, 94.78), "cifar100": (81.01, 81.11, 81.33)},
        "simsiam": {"cifar10": (92.75, 92.97, 94.02), "cifar100": (78.36, 78.48, 79.21)},
        "wmse": {"cifar10": (94.88, 95.12, 96.15), "cifar100": (79.01, 79.23, 80.15)},
        "barlow_twins": {"cifar10": (95.12, 95.40, 96.33), "cifar100": (80.18, 80.35, 81.40)}},
    3: {"byol": (51.45, 52.54, 51.86, 52.16, 51.84), "swav": (51.60, 51.93, 51.66, 51.80, 51.81),
        "barlow_twins": (50.89, 52.21, 51.61, 51.91, 51.39)},
    4: {"byol": (62.93, 63.97, 63.20, 63.81), "swav": (63.15, 63.47, 63.27, 63.32),
        "barlow_twins": (62.89, 64.19, 63.11, 64.02)},
}
# Per table: the runs (cases of configs/fussl.py) and the columns: (header, run, which checkpoint).
COLUMNS = {
    1: (("Base", "fussl", "base"), ("1200 ep", "continued", "final"), ("FUSSL", "fussl", "final")),
    3: (("Base", "fussl", "base"), ("FUSSL", "fussl", "final"), ("Case 1", "hard", "final"),
        ("Case 2", "soft", "final"), ("Case 3", "progressive", "final")),
    4: (("Base", "fussl", "base"), ("FUSSL", "fussl", "final"), ("Case 4", "hard", "final"),
        ("Case 5", "soft", "final")),
}
COLUMNS[2] = COLUMNS[1]
DEFAULT_SETTING = {1: "imagenet", 2: "imagenet", 3: "tiny_imagenet", 4: "cifar100_cross_class"}

def _define_flags() -> None:
    """The command line's flags, defined only when the module runs as a program (it imports cleanly)."""
    global _TABLE, _SETTING, _OBJECTIVES, _TRANSFER, _WORKDIR, _TIME_LIMIT, _FINAL_EVAL_TIME, _REPORT_ONLY
    _TABLE = flags.DEFINE_enum("table", "1", ["1", "2", "3", "4"], "The paper's table to reproduce.")
    _SETTING = flags.DEFINE_string("setting", "", "configs/fussl.py setting (default: the table's own).")
    _OBJECTIVES = flags.DEFINE_list("objectives", [], "SSL objectives (default: the table's).")
    _TRANSFER = flags.DEFINE_list("transfer", ["cifar10:tfds:", "cifar100:tfds:"],
                                  "Table 2: transfer datasets as name:source:path.")
    _WORKDIR = flags.DEFINE_string("workdir", "workdirs/fussl", "One sub-folder per objective and case.")
    _TIME_LIMIT = flags.DEFINE_string("time_limit", "", "Stop cleanly after this long (e.g. 9m); rerun to continue.")
    _FINAL_EVAL_TIME = flags.DEFINE_string("final_eval_time", "0", "Start a final evaluation only with this much left.")
    _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rewrite <workdir>/RESULTS.md from what is there.")




def fussl_config(setting: str, objective: str, case: str, overrides: Mapping[str, Any]):
    """``configs/fussl.py:<setting>,<objective>,<case>`` with ``overrides`` (dotted keys)."""
    spec = importlib.util.spec_from_file_location("fussl_config", os.path.join(ROOT, "configs", "fussl.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(f"{setting},{objective},{case}")
    config.update_from_flattened_dict(dict(overrides))
    return config


def run_dir(workdir: str, objective: str, case: str) -> str:
    return os.path.join(workdir, objective, case)


def finished(path: str) -> bool:
    return os.path.exists(os.path.join(path, "results.json"))


def protocol_of(results: Mapping[str, Any]) -> str:
    final = results["final"]
    return next(p for p in ("linear", "linear_fast", "knn") if p in final)


def eval_name(which: str, transfer: Optional[str]) -> str:
    return f"fussl_{which}" + (f"_transfer_{transfer}" if transfer else "")


def accuracy(path: str, which: str, transfer: Optional[str] = None) -> Optional[float]:
    """Top-1 of a finished run: its final model or ``which="base"`` (after phase 1), optionally on a
    transfer dataset; ``None`` while not trained or evaluated."""
    if not finished(path):
        return None
    results = evaluation.read_results(path)
    protocol = protocol_of(results)
    if which == "final" and transfer is None:
        return results["final"][protocol]["top1"]
    record = os.path.join(path, evaluate.EVAL_DIR, f"{eval_name(which, transfer)}.json")
    if not os.path.exists(record):
        return None
    with open(record, encoding="utf-8") as f:
        return json.load(f)["protocols"][protocol]["top1"]


def parse_transfer(spec: str) -> dict[str, str]:
    name, source, path = (spec.split(":", 2) + ["", ""])[:3]
    return {"name": name, "source": source or "tfds", "path": path}


def evaluate_runs(path: str, table: int, transfers: Sequence[str], stop: preemption.StopRequest) -> None:
    """The evaluations a table needs beside the run's own: Base (the checkpoint after phase 0) and transfers."""
    results = evaluation.read_results(path)
    protocol = protocol_of(results)
    models = (["base"] if results["learner"]["variant"] == "fussl" else []) + (["final"] if table == 2 else [])
    targets = [parse_transfer(t)["name"] for t in transfers] if table == 2 else [None]
    for which, transfer in [(w, t) for w in models for t in targets]:
        name = eval_name(which, transfer)
        if os.path.exists(os.path.join(path, evaluate.EVAL_DIR, f"{name}.json")):
            continue
        reason = stop.reason(stop.final_eval_s)
        if reason:
            raise preemption.RunStopped(f"stopped before evaluating {path} ({reason}); rerun to continue")
        spec = next((parse_transfer(t) for t in transfers if parse_transfer(t)["name"] == transfer), None)
        record = evaluate.evaluate_run(path, task=0 if which == "base" else None, protocols=[protocol], transfer=spec)
        evaluate.write_eval(path, record, name)


def run_table(table: int, setting: str, objectives: Sequence[str], workdir: str, overrides: Mapping[str, Any],
              transfers: Sequence[str], stop: preemption.StopRequest) -> None:
    """Train (or resume, or skip) every run of ``table`` and evaluate it; raises ``RunStopped``."""
    cases = list(dict.fromkeys(case for _, case, _ in COLUMNS[table]))
    for objective in objectives:
        for case in cases:
            path = run_dir(workdir, objective, case)
            if not finished(path):
                logging.info("fussl %s/%s: training in %s", objective, case, path)
                engine.run(fussl_config(setting, objective, case, overrides), path, stop=stop)
            evaluate_runs(path, table, transfers, stop)


def _cell(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def table_markdown(table: int, workdir: str, objectives: Sequence[str], transfers: Sequence[str] = ()) -> str:
    """The table's layout with this workdir's numbers, the paper's beside them."""
    columns = COLUMNS[table]
    datasets = [parse_transfer(t)["name"] for t in transfers] if table == 2 else [None]
    header, rule = ["Framework"], ["---"]
    for dataset in datasets:
        for name, _, _ in columns:
            header.append(f"{dataset} {name}" if dataset else name)
            rule.append("---:")
        header.append("paper " + (f"{dataset} " if dataset else "") + " / ".join(n for n, _, _ in columns))
        rule.append("---")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for objective in objectives:
        cells = [objective]
        for dataset in datasets:
            values = [accuracy(run_dir(workdir, objective, case), which, dataset) for _, case, which in columns]
            base, fussl = values[0], values[[n for n, _, _ in columns].index("FUSSL")]
            for (name, _, _), value in zip(columns, values):
                gain = f" ({100 * (fussl - base):+.2f})" if name == "FUSSL" and None not in (base, fussl) else ""
                cells.append(_cell(value) + gain)
            paper = PAPER[table].get(objective)
            paper = paper.get(dataset) if isinstance(paper, dict) else paper
            cells.append(" / ".join(f"{v:.2f}" for v in paper) if paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(table: int, setting: str, workdir: str, objectives: Sequence[str], transfers: Sequence[str]) -> str:
    """``<workdir>/RESULTS.md``: what was run, then the table."""
    header = (f"FUSSL Table {table} layout, configs/fussl.py setting `{setting}` "
              f"(`python experiments/fussl.py --table={table} --setting={setting}`); top-1 %, the paper's "
              "numbers beside (ImageNet / Tiny-ImageNet / CIFAR-100 at the paper's budget).")
    report = header + "\n\n" + table_markdown(table, workdir, objectives, transfers) + "\n"
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "RESULTS.md"), "w", encoding="utf-8") as f:
        f.write(report)
    return report


def _overrides(argv: Sequence[str]) -> dict[str, Any]:
    """``--config.<key>=<value>`` words as dotted keys with Python literal values (strings otherwise)."""
    out = {}
    for arg in argv:
        key, _, value = arg[len("--config."):].partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: list[str]) -> None:
    config_args = [a for a in argv[1:] if a.startswith("--config.")]
    if len(config_args) != len(argv) - 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(a for a in argv[1:] if a not in config_args)}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    table = int(_TABLE.value)
    setting = _SETTING.value or DEFAULT_SETTING[table]
    objectives = _OBJECTIVES.value or (list(OBJECTIVES) if table in (1, 2) else ["byol", "swav", "barlow_twins"])
    workdir, transfers = _WORKDIR.value, _TRANSFER.value
    if not _REPORT_ONLY.value:
        try:
            with preemption.StopRequest.from_flags(_TIME_LIMIT.value, _FINAL_EVAL_TIME.value) as stop:
                run_table(table, setting, objectives, workdir, _overrides(config_args), transfers, stop)
        except preemption.RunStopped as stopped:
            print(write_report(table, setting, workdir, objectives, transfers), flush=True)
            print(f"fussl: {stopped}", file=sys.stderr, flush=True)
            sys.exit(preemption.EXIT_RESUMABLE)
        except (ValueError, FileNotFoundError) as error:
            sys.exit(f"fussl: error: {error}")
    print(write_report(table, setting, workdir, objectives, transfers), flush=True)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags; the ``--config.*`` overrides are passed through to :func:`main`."""
    overrides = [a for a in argv if a.startswith("--config.")]
    return flags.FLAGS([a for a in argv if a not in overrides]) + overrides


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=parse_flags)
