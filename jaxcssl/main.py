r"""Command line: ``python -m jaxcssl.main --config=configs/cromo_cifar100.py --workdir=W``.

Any config value can be overridden, e.g. ``--config.optim.base_lr=0.2`` or
``--config.strategy.mixup.lam=batch``; an unknown key is an error. Restarting with the same
workdir resumes from its latest checkpoint. ``--time_limit=9m`` (or SIGTERM, a scheduler's or a
preemptible TPU's notice) stops the run at the next step with a checkpoint and exit status 75; the
same command resumes it. Errors in the config, the data or the workdir end the run with one line
naming the culprit (``--traceback`` shows the full trace).
"""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcssl import checkpointing, preemption, train
from jaxcssl import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config()).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run: checkpoints, logs, results.json.")
_TIME_LIMIT = flags.DEFINE_string(
    "time_limit", "", "Stop with a checkpoint after this long (e.g. 3600, 55m, 2h) and exit with status 75.")
_FINAL_EVAL_TIME = flags.DEFINE_string(
    "final_eval_time", "0", "With --time_limit: start the final evaluation only if this much time is left.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of errors instead of one line.")

# Errors that are about the user's input, reported as one line.
USER_ERRORS = (
    config_lib.ConfigError, checkpointing.WorkdirConfigError, train.NonFiniteLossError, FileNotFoundError, ValueError,
)


def summary_line(results: dict) -> str:
    """``LA/WP/TP`` of the final linear probe (or kNN) for the console."""
    final = results.get("final", {})
    for protocol in ("linear", "linear_fast", "knn"):
        if protocol in final:
            m = final[protocol]
            parts = [f"{k.upper()} {100 * m[k]:.2f}" for k in ("la", "wp", "tp") if m.get(k) is not None]
            return f"final {protocol}: " + "  ".join(parts)
    return "no final evaluation configured"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    # Orbax reports every checkpoint step at INFO; keep the console to the run's own lines.
    logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
    try:
        with preemption.StopRequest.from_flags(_TIME_LIMIT.value, _FINAL_EVAL_TIME.value) as stop:
            results = train.train(_CONFIG.value, _WORKDIR.value, stop=stop)
    except preemption.RunStopped as stopped:
        print(f"jaxcssl: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except USER_ERRORS as error:
        if _TRACEBACK.value:
            raise
        sys.exit(f"jaxcssl: error: {error}")
    print(summary_line(results), flush=True)


def run() -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
