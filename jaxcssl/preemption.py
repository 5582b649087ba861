"""Stopping a run early and cleanly: a wall-clock limit and SIGTERM.

A run given a time limit (``--time_limit=9m``) or sent SIGTERM (the notice a batch scheduler or a
preemptible Cloud TPU gives before it kills a job) stops at the next step boundary, saves a
checkpoint and raises :class:`RunStopped`; ``python -m jaxcssl.main`` then exits with status
:data:`EXIT_RESUMABLE`, and the same command resumes the run. A loop in a job script::

    until python -m jaxcssl.main --config=... --workdir=W --time_limit=55m; do [ $? -eq 75 ] || break; done

With several processes (``train.distributed``), the processes must stop at the same step:
:class:`AgreedStop` takes JAX's preemption sync point (``multihost_utils.reached_preemption_sync_point``:
SIGTERM to any process, which JAX's preemption notifier catches, stops all of them at one step) and
process 0's clock for the time limit (broadcast at log and checkpoint steps).
"""
from __future__ import annotations

import re
import signal
import threading
import time
from typing import Optional

import jax
import jax.numpy as jnp

EXIT_RESUMABLE = 75  # EX_TEMPFAIL (sysexits.h): stopped early, try again
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$")
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


class RunStopped(Exception):
    """The run stopped on request after saving a checkpoint; rerunning the same command resumes it."""


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"9m"`` or ``"1.5h"``; ``name`` (the flag) for the error."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{name}={text!r} is not a duration like 90, 90s, 9m or 1.5h")
    return float(match.group(1)) * _SECONDS[match.group(2)]


class StopRequest:
    """Whether the run should stop now: a time limit has passed or SIGTERM arrived.

    Used as a context manager, it handles SIGTERM (in the main thread) for its duration and then
    restores the previous handler. The time limit counts from construction. ``final_eval_s``: the
    final evaluation (which cannot be resumed half-way) starts only if that many seconds are left;
    otherwise the run stops after its last task and the rerun evaluates.
    """

    def __init__(self, time_limit_s: Optional[float] = None, *, final_eval_s: float = 0.0):
        if time_limit_s is not None and time_limit_s < 0:
            raise ValueError(f"time limit {time_limit_s} s is negative")
        self.time_limit_s = time_limit_s
        self.final_eval_s = final_eval_s
        self._deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        self._signal: Optional[str] = None
        self._previous_handler = None

    @classmethod
    def from_flags(cls, time_limit: str, final_eval_time: str) -> "StopRequest":
        """From the ``--time_limit`` ("" = none) and ``--final_eval_time`` flag values."""
        limit = parse_duration(time_limit, "--time_limit") if time_limit else None
        reserve = parse_duration(final_eval_time, "--final_eval_time")
        if limit is not None and 0 < reserve and limit <= reserve:
            raise ValueError(f"--final_eval_time={final_eval_time} leaves no time to train within "
                             f"--time_limit={time_limit}: make it shorter than the limit")
        return cls(limit, final_eval_s=reserve)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _on_signal(self, signum: int, frame) -> None:
        self._signal = signal.Signals(signum).name

    def remaining_s(self) -> float:
        """Seconds left before the time limit (infinite without one)."""
        return float("inf") if self._deadline is None else self._deadline - time.monotonic()

    def reason(self, reserve_s: float = 0.0) -> Optional[str]:
        """Why the run should stop now, or ``None``; ``reserve_s``: seconds the next stage needs."""
        if self._signal is not None:
            return f"received {self._signal}"
        remaining = self.remaining_s()
        if remaining <= 0:
            return f"time limit of {self.time_limit_s:g} s reached"
        if remaining <= reserve_s:
            return f"{remaining:.0f} s left of the time limit of {self.time_limit_s:g} s, less than the {reserve_s:g} s reserved"
        return None


class AgreedStop:
    """The stop decisions of a run, the same on every process.

    ``at_step`` is called after every compiled call with the global step reached (``boundary``: a log
    or checkpoint step, where the clock is consulted across processes); ``at_phase_end`` after a
    phase's checkpoint, with the time the next stage needs. A preemption noticed at a phase's last
    step is acted on at its end.
    """

    def __init__(self, stop: Optional[StopRequest]):
        self.stop = stop
        self.distributed = jax.distributed.is_initialized()
        self.pending: Optional[str] = None

    def _clock(self, reserve_s: float) -> Optional[str]:
        if self.stop is None:
            return None
        reason = self.stop.reason(reserve_s)
        if not self.distributed:
            return reason
        from jax.experimental import multihost_utils

        if int(multihost_utils.broadcast_one_to_all(jnp.int32(reason is not None))):  # process 0 decides
            return reason or "process 0 reached its time limit"
        return None

    def at_step(self, step: int, boundary: bool) -> Optional[str]:
        if self.distributed:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.pending = "preempted: a process received SIGTERM"
                return self.pending
            return self._clock(0.0) if boundary else None
        return self._clock(0.0)

    def at_phase_end(self, reserve_s: float) -> Optional[str]:
        return self.pending or self._clock(reserve_s)
