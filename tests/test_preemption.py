"""Stopping early: durations, the SIGTERM handler, and the CLI's resumable exit status.

The train loop's side (checkpoint at the stop, identical numbers after resuming) is tested in
test_engine.py beside the other resume test.
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from jaxcssl import preemption

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("9m", 540.0), ("1.5h", 5400.0),
                                           (" 0 ", 0.0), (".5m", 30.0)])
def test_durations(text, seconds):
    assert preemption.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "9 min", "-5", "1h30m"])
def test_a_bad_duration_names_the_flag(text):
    with pytest.raises(ValueError, match=f"--time_limit={text!r} is not a duration"):
        preemption.parse_duration(text, "--time_limit")


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="negative"):
        preemption.StopRequest(-1.0)


def test_from_flags_parses_both_durations():
    assert preemption.StopRequest.from_flags("", "0").remaining_s() == float("inf")
    stop = preemption.StopRequest.from_flags("1h", "5m")
    assert stop.time_limit_s == 3600.0 and stop.final_eval_s == 300.0
    with pytest.raises(ValueError, match="--final_eval_time='later' is not a duration"):
        preemption.StopRequest.from_flags("1h", "later")
    # A reserve as long as the limit would stop the run at once, saying the time was up.
    with pytest.raises(ValueError, match="--final_eval_time=2h leaves no time to train within --time_limit=1h"):
        preemption.StopRequest.from_flags("1h", "2h")


def test_the_time_limit_and_the_final_evaluation_reserve():
    assert preemption.StopRequest().reason(reserve_s=1e9) is None
    assert preemption.StopRequest().remaining_s() == float("inf")
    stop = preemption.StopRequest(3600.0, final_eval_s=600.0)
    assert stop.reason() is None
    assert stop.reason(stop.final_eval_s) is None
    assert stop.reason(3600.0).endswith("s left of the time limit of 3600 s, less than the 3600 s reserved")
    assert preemption.StopRequest(0.0).reason() == "time limit of 0 s reached"


def test_sigterm_is_caught_inside_the_context_and_the_old_handler_restored():
    caught = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    try:
        with preemption.StopRequest() as stop:
            assert stop.reason() is None
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.reason() == "received SIGTERM"
        assert caught == []
        os.kill(os.getpid(), signal.SIGTERM)
        assert caught == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxcssl.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_cli_stops_with_status_75_and_the_same_command_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["--config=configs/smoke.py:finetune", f"--workdir={workdir}", "--config.train.epochs=1",
            "--config.eval.after_task=knn", "--config.eval.final=knn"]
    stopped = _main(*args, "--time_limit=0")
    assert stopped.returncode == preemption.EXIT_RESUMABLE, stopped.stderr[-2000:]
    last_line = stopped.stderr.strip().splitlines()[-1]
    assert last_line.startswith("jaxcssl: stopped in task 1/2 at step 1/4 (time limit of 0 s reached)"), last_line
    assert "the same command resumes" in last_line
    finished = _main(*args, "--time_limit=1h")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resuming" in finished.stderr and "final knn:" in finished.stdout


def test_the_cli_names_a_bad_time_limit(tmp_path):
    result = _main("--config=configs/smoke.py:finetune", f"--workdir={tmp_path / 'run'}", "--time_limit=soon")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "jaxcssl: error: --time_limit='soon' is not a duration like 90, 90s, 9m or 1.5h")
    assert not (tmp_path / "run").exists()
