"""Orbax checkpoints of a run, verified on restore; the workdir's config record and its lock.

Layout of a workdir ``W``::

    W/config.json          the run's configuration (a restart with another config is refused)
    W/.lock                held (fcntl) by the process running in W; names its host and pid
    W/checkpoints/tasks/   <phase>/{state, meta}: the state after each phase, kept for evaluation
    W/checkpoints/latest/  <global step>/{state, meta}: periodic, the last two kept
    W/checkpoints/damaged/ checkpoints that failed verification, moved aside (never deleted)

``state`` is the learner's whole state; ``meta`` a JSON dict with the position, the evaluation
history, the config's fingerprint and a digest of every array of ``state``. On restore each
candidate, newest first, is read and its arrays checked against the digests: one that does not
restore or does not match (a truncated file, a flipped bit) is moved to ``damaged/`` with one log
line saying why, and the next older one is tried. A checkpoint written by a different config is
refused, never trained on. Orbax writes into a temporary directory and renames it when complete, so
an interrupted save never replaces a good checkpoint; leftover temporary folders of a killed save
are removed when the managers open.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jaxcssl.config import flatten

Pytree = Any
_ITEMS = ("state", "meta")
# Keys that may change between a run and its restart: they do not change what is trained.
RESTART_MAY_CHANGE = ("eval.", "train.log_every_steps", "train.checkpoint_every_steps", "train.distributed_timeout")
DAMAGED = "damaged"


class WorkdirConfigError(ValueError):
    """The workdir holds a run made with a different configuration."""


class CheckpointError(ValueError):
    """No checkpoint of the workdir can be used; the message names the folder and what to do."""


class WorkdirError(ValueError):
    """The workdir cannot hold a run (not a directory, not writable, in use by another run)."""


# --- the workdir ----------------------------------------------------------------------------------
def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise WorkdirConfigError(f"{path} is damaged ({error.msg} at line {error.lineno}); move it away to "
                                 "start a new run there, or restore it") from None


def check_workdir(workdir: str) -> None:
    """Refuse a workdir that cannot hold a run, before anything is written into it."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir!r} is a file, not a directory")
    parent = os.path.dirname(os.path.abspath(workdir))
    target = workdir if os.path.isdir(workdir) else parent
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.access(target, os.W_OK | os.X_OK):
        raise WorkdirError(f"--workdir {workdir!r}: {target!r} is not writable")
    for name in ("checkpoints", "tensorboard", "plots", "eval"):
        path = os.path.join(workdir, name)
        if os.path.exists(path) and not os.path.isdir(path):
            raise WorkdirError(f"{path} is a file; the run needs it as a directory")
    for name in ("config.json", "results.json", "metrics.jsonl", "parameters.txt"):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            raise WorkdirError(f"{path} is a directory; the run writes it as a file")


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Hold ``W/.lock`` (an fcntl lock, released when the process ends) for the duration of a run."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, ".lock")
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise WorkdirError(f"workdir {workdir!r} is in use by {holder}; wait for it to end or use another "
                               "--workdir") from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on host {socket.gethostname()} (since {started})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def config_fingerprint(config_dict: Mapping[str, Any]) -> str:
    """A digest of the config's keys that decide what is trained (all but :data:`RESTART_MAY_CHANGE`)."""
    flat = flatten(json.loads(json.dumps(config_dict, default=list)))
    kept = {k: v for k, v in sorted(flat.items()) if not k.startswith(RESTART_MAY_CHANGE)}
    return hashlib.blake2b(json.dumps(kept, sort_keys=True).encode(), digest_size=12).hexdigest()


def check_workdir_config(workdir: str, config_dict: Mapping[str, Any], *, write: bool = True) -> dict[str, Any]:
    """Write ``W/config.json`` on the first start (unless ``write`` is False); on a restart refuse a
    different config.

    Raises :class:`WorkdirConfigError` naming the first key that differs (keys under
    :data:`RESTART_MAY_CHANGE` may differ). Nothing in the workdir is touched in that case.
    Returns the config the workdir was started with.
    """
    path = os.path.join(workdir, "config.json")
    config_json = json.loads(json.dumps(config_dict, default=list))
    if os.path.exists(path):
        saved = _read_json(path)
        old, new = flatten(saved), flatten(config_json)
        for key in sorted(set(old) | set(new)):
            if key.startswith(RESTART_MAY_CHANGE) or old.get(key) == new.get(key):
                continue
            raise WorkdirConfigError(
                f"workdir {workdir!r} holds a run with a different config: {key} is "
                f"{old.get(key, '<unset>')!r} there and {new.get(key, '<unset>')!r} now; "
                "use a new --workdir (nothing was changed)"
            )
        return saved
    if not write:
        return config_json
    os.makedirs(workdir, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(config_json, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return config_json


# --- integrity --------------------------------------------------------------------------------
def tree_digests(tree: Pytree) -> dict[str, str]:
    """``{leaf path: digest of its dtype, shape and bytes}`` of a (host or device) pytree; with several
    processes each digests its own copy of the (replicated) arrays."""
    digests = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)  # the run's state is replicated: this process's copy
        array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        h = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=12)
        h.update(array.tobytes())
        digests[jax.tree_util.keystr(path)] = h.hexdigest()
    return digests


def first_mismatch(expected: Mapping[str, str], actual: Mapping[str, str]) -> Optional[str]:
    """The first leaf whose digest differs (or is missing), or ``None`` when all match."""
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            return key
    return None


# --- checkpoints ------------------------------------------------------------------------------
def _manager(directory: str, max_to_keep: Optional[int]) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=_ITEMS)


def _unfinished_writes(root: str) -> list[str]:
    found = []
    for kind in ("tasks", "latest"):
        directory = os.path.join(root, kind)
        if os.path.isdir(directory):
            found += [os.path.join(kind, n) for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n]
    return sorted(found)


class RunCheckpoints:
    """The phase-end and periodic checkpoint managers of one workdir.

    ``fingerprint`` (:func:`config_fingerprint`) is stored in every checkpoint and, when given,
    required of every checkpoint restored.
    """

    def __init__(self, workdir: str, fingerprint: str = "", keep_periodic: int = 2):
        self.root = os.path.join(workdir, "checkpoints")
        self.fingerprint = fingerprint
        leftovers = _unfinished_writes(self.root)
        if leftovers:
            logging.warning("removing %d unfinished checkpoint write(s) of an interrupted save: %s",
                            len(leftovers), ", ".join(leftovers))
        self.tasks = _manager(os.path.join(self.root, "tasks"), None)
        self.latest = _manager(os.path.join(self.root, "latest"), keep_periodic)

    def _save(self, manager: ocp.CheckpointManager, step: int, state: Pytree, meta: Mapping[str, Any]) -> None:
        meta = {**meta, "digests": tree_digests(state), "config_fingerprint": self.fingerprint}
        try:
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 -- a failed write is reported as one line
            text = str(error)
            reason = "no space left on the device" if "No space left on device" in text else _first_line(error)
            raise WorkdirError(f"cannot write checkpoint {self._where(manager, step)}: {reason}; the checkpoints "
                               "before it are kept") from None

    def save_periodic(self, global_step: int, state: Pytree, meta: Mapping[str, Any]) -> None:
        self._save(self.latest, global_step, state, meta)

    def save_task_end(self, task_id: int, state: Pytree, meta: Mapping[str, Any]) -> None:
        self._save(self.tasks, task_id, state, meta)

    def _where(self, manager: ocp.CheckpointManager, step: int) -> str:
        return os.path.join(self.root, "tasks" if manager is self.tasks else "latest", str(step))

    def _meta(self, manager: ocp.CheckpointManager, step: int) -> dict:
        return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def _restore_verified(self, manager: ocp.CheckpointManager, step: int, target: Pytree) -> tuple[Pytree, dict]:
        """Restore and verify one checkpoint; raises WorkdirConfigError for another config's checkpoint
        and CheckpointError (with the reason) for a damaged one."""
        where = self._where(manager, step)
        try:
            meta = self._meta(manager, step)
        except Exception as error:  # noqa: BLE001 -- any failure to read makes the checkpoint unusable
            raise CheckpointError(f"{where}: its meta does not read ({_first_line(error)})") from None
        digests = meta.get("digests")
        if not isinstance(digests, dict):
            raise CheckpointError(f"{where}: it has no array digests to verify")
        layout = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(target)]
        if sorted(layout) != sorted(digests):
            other = first_mismatch(dict.fromkeys(layout, ""), dict.fromkeys(digests, ""))
            raise WorkdirConfigError(f"{where} holds a state of another layout than this version of jaxcssl builds "
                                     f"(first difference: {other}); evaluate it with the version that wrote it")
        if self.fingerprint and meta.get("config_fingerprint") != self.fingerprint:
            raise WorkdirConfigError(f"{where} was written by a different config than this run's (fingerprint "
                                     f"{meta.get('config_fingerprint')!r}, now {self.fingerprint!r}); use a new "
                                     "--workdir (nothing was changed)")
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"{where}: its arrays do not read ({_first_line(error)})") from None
        state = restored["state"]
        bad = first_mismatch(digests, tree_digests(state))
        if bad is not None:
            raise CheckpointError(f"{where}: array {bad} does not match the digest saved with it")
        return state, meta

    def _quarantine(self, manager: ocp.CheckpointManager, step: int, reason: str) -> None:
        source = self._where(manager, step)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        destination = os.path.join(self.root, DAMAGED, f"{os.path.basename(os.path.dirname(source))}-{step}-{stamp}")
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
        manager.reload()
        logging.warning("skipped damaged checkpoint %s (%s); moved it to %s", source, reason, destination)

    def restore_latest(self, target: Pytree) -> Optional[tuple[Pytree, dict]]:
        """The most advanced checkpoint that restores and verifies, or ``None`` for a fresh run.

        Candidates are ordered by the global step they reached; damaged ones are moved aside. Raises
        :class:`CheckpointError` when checkpoints exist and none is usable.
        """
        candidates = []
        for manager in (self.tasks, self.latest):
            for step in manager.all_steps():
                try:
                    progress = int(self._meta(manager, step)["global_step"]) if manager is self.tasks else step
                except Exception:  # noqa: BLE001 -- an unreadable meta sorts first and is reported below
                    progress = float("inf")
                candidates.append((progress, manager is self.tasks, manager, step))
        candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
        skipped = []
        for _, _, manager, step in candidates:
            try:
                return self._restore_verified(manager, step, target)
            except CheckpointError as error:
                reason = str(error).split(": ", 1)[-1]
                skipped.append(self._where(manager, step))
                self._quarantine(manager, step, reason)
        if skipped:
            raise CheckpointError(f"no checkpoint in {self.root} restores (damaged: {', '.join(skipped)}, moved to "
                                  f"{os.path.join(self.root, DAMAGED)}); the run starts over if you rerun it")
        return None

    def task_ids(self) -> list[int]:
        return list(self.tasks.all_steps())

    def restore_task(self, task_id: int, target: Pytree) -> tuple[Pytree, dict]:
        """The verified checkpoint of ``task_id``; raises CheckpointError if it is missing or damaged."""
        if task_id not in self.tasks.all_steps():
            raise FileNotFoundError(f"no checkpoint for task {task_id}; available: {self.task_ids()}")
        return self._restore_verified(self.tasks, task_id, target)

    def close(self) -> None:
        self.tasks.close()
        self.latest.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
