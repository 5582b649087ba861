r"""Command line: ``python -m jaxcssl.main --config=configs/cromo_cifar100.py --workdir=W``.

Any config value can be overridden, e.g. ``--config.optim.base_lr=0.2`` or
``--config.strategy.cromo.mixup.lam=batch``; an unknown key is an error. Restarting with the same
workdir resumes from its latest checkpoint. ``--time_limit=9m`` (or SIGTERM, a scheduler's or a
preemptible TPU's notice) stops the run at the next step with a checkpoint and exit status 75; the
same command resumes it. Errors in the config, the data or the workdir end the run with one line
naming the culprit (``--traceback`` shows the full trace).
"""
from __future__ import annotations

import difflib
import importlib.util
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxcssl import checkpointing, engine, preemption
from jaxcssl import config as config_lib
from jaxcssl.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config()).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run: checkpoints, logs, results.json.")
_TIME_LIMIT = flags.DEFINE_string(
    "time_limit", "", "Stop with a checkpoint after this long (e.g. 3600, 55m, 2h) and exit with status 75.")
_FINAL_EVAL_TIME = flags.DEFINE_string(
    "final_eval_time", "0", "With --time_limit: start the final evaluation only if this much time is left.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of errors instead of one line.")

# Errors that are about the user's input, reported as one line.
USER_ERRORS = (
    ConfigError, checkpointing.WorkdirConfigError, engine.NonFiniteLossError, OSError, ValueError,
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


def _quiet(record) -> bool:
    """False for the library chatter the console does not need (absl logging filter)."""
    return "orbax" not in record.pathname and "Unable to initialize backend" not in record.getMessage()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.INFO)
    # Orbax reports every checkpoint step at INFO, and jax that a machine has no TPU (not an error):
    # keep the console to the run's own lines unless --verbosity asks for more.
    if not flags.FLAGS["verbosity"].present:
        logging.get_absl_handler().addFilter(_quiet)
    try:
        with preemption.StopRequest.from_flags(_TIME_LIMIT.value, _FINAL_EVAL_TIME.value) as stop:
            results = engine.run(_config_value(), _WORKDIR.value, stop=stop)
    except preemption.RunStopped as stopped:
        print(f"jaxcssl: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_RESUMABLE)
    except USER_ERRORS as error:
        if _TRACEBACK.value:
            raise
        sys.exit(f"jaxcssl: error: {error}")
    print(summary_line(results), flush=True)


def _config_file(argv: list[str]) -> tuple[str, list[str]]:
    """The ``--config`` path and its argument words from the command line."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg[len("--config="):]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        path, *args = value.split(":", 1)
        return path, args
    return "", []


def _load_config(path: str, args: list[str]) -> ml_collections.ConfigDict:
    """Load ``path`` as config_flags does; raises ConfigError naming the file and what is wrong."""
    spec = importlib.util.spec_from_file_location("jaxcssl_user_config", path)
    if spec is None:
        raise ConfigError(f"config file {path!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except SyntaxError as error:
        raise ConfigError(f"config file {path!r}: {error.msg} at line {error.lineno}") from None
    except Exception as error:  # noqa: BLE001 -- whatever the file raises is the user's to see
        raise ConfigError(f"config file {path!r} raised {type(error).__name__}: {error}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config()")
    try:
        return module.get_config(*args)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"config file {path!r}: get_config({', '.join(map(repr, args))}) raised "
                          f"{type(error).__name__}: {error}") from None


def _unknown_override(config: ml_collections.ConfigDict, argv: list[str]) -> str | None:
    """The first ``--config.<key>=...`` whose key the config lacks, as one message, or ``None``."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config."):].split("=", 1)[0]
        node, walked = config, []
        for part in dotted.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                name = ".".join(walked + [part])
                if name in config_lib.RENAMED:
                    return f"config key {name!r} is now {config_lib.RENAMED[name]!r}"
                known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                hint = difflib.get_close_matches(part, known, n=1)
                where = ".".join(walked) or "the top level"
                return (f"unknown config key {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; {where} has: {', '.join(sorted(known))}")
            node, walked = node[part], walked + [part]
    return None


def _explain(error: Exception, argv: list[str]) -> str:
    """One line for an error raised while the config file and its overrides were read."""
    message = f"{error}".splitlines()[0] if f"{error}" else type(error).__name__
    path, args = _config_file(argv)
    if path:
        try:
            message = _unknown_override(_load_config(path, args), argv) or message
        except ConfigError as config_error:
            message = str(config_error)
    return message


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one line naming the culprit for a bad config file, key or value."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 -- reported as one line
        if "--traceback" in argv:
            raise
        sys.exit(f"jaxcssl: error: {_explain(error, argv)}")


def _config_value() -> ml_collections.ConfigDict:
    """The ``--config`` value; config_flags loads the file lazily, on this first access."""
    try:
        config = _CONFIG.value
        config.keys()  # a file that failed to load gives a placeholder that raises on first use
        return config
    except Exception as error:  # noqa: BLE001 -- reported as one line
        if _TRACEBACK.value:
            raise
        sys.exit(f"jaxcssl: error: {_explain(error, sys.argv)}")


def run() -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
