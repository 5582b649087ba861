r"""Throughput of the compiled training step (GitHub issue "GPU performance", item 1).

For one strategy x SSL objective x batch x precision, build the run exactly as the engine does
(:func:`jaxcssl.engine.prepare` -> the continual learner's ``init_state``, ``end_phase`` for a
later-task step, ``step_fn`` compiled by :func:`jaxcssl.engine.compile.compile_step`) on a synthetic
dataset of CIFAR shape, then measure:

* compile time: ``lower()`` (trace + StableHLO) and ``compile()`` of the jitted step, and the first
  call (lower + compile + first execution); the timed program is that compiled executable;
* step time: ``--repeats`` rounds of ``--steps`` calls dispatched back to back, one
  ``jax.block_until_ready`` at the end of each round (the engine's loop also never waits per step);
  the median round gives ``step_ms``, min and max show the spread;
* images/s: current-task images only, ``batch x steps_per_call / call time`` (replay images and the
  old model's forward are cost, not throughput); for the online learner (``--learner online``) the
  stream and memory images of a step, ``(batch + replay) x steps_per_call / call time``, with RALS
  (``--rals 1``: the scoring forwards of the current and the anchor model, the training forward of the
  selected samples) or without (``--rals 0``);
* peak device memory: ``device.memory_stats()["peak_bytes_in_use"]`` (``n/a`` on CPU), and XLA's
  static estimate (arguments + outputs - aliased + temporaries) from ``compiled.memory_analysis()``;
* FLOP utilisation: FLOPs of one step from XLA's cost analysis of the one-step program (XLA counts
  a ``lax.scan`` body once whatever the trip count, so a fused program is not used for this), over
  the step time, against the chip's dense peak in :data:`PEAK_TFLOPS`.

Every record carries the device kind, platform, jax version and UTC date. Records are printed and
appended to ``<out>/throughput.jsonl`` (one JSON object per line) and ``<out>/throughput.md``
(a Markdown table). With several configurations each one runs in its own process, so that peak
memory and compile times are not shared between them.

``--preset fussl`` (``fussl-cpu-smoke`` on a CPU) times FUSSL's phase-1 ensemble step instead, for
m = 1 and 3 members (``--ensemble M``): images/s per member, each member seeing the whole batch.

Usage (see benchmarks/README.md)::

    python benchmarks/throughput.py --preset cpu-smoke
    python benchmarks/throughput.py --preset targets            # the issue's H100 targets
    python benchmarks/throughput.py --preset online             # the online learner's step, with and without RALS
    python benchmarks/throughput.py --preset none --strategy cromo --batch 256 --replay 64 \
        --dtype bfloat16 --task later --steps_per_call 4
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

_REPO = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcssl import engine, replay, sharding, strategies  # noqa: E402
from jaxcssl.config import PAPER_SETTINGS, paper_config, validate  # noqa: E402
from jaxcssl.data.augment import augment  # noqa: E402
from jaxcssl.engine import memory as engine_memory  # noqa: E402
from jaxcssl.engine.compile import compile_step  # noqa: E402
from jaxcssl.learners.continual import ContinualLearner, batch_indices  # noqa: E402
from jaxcssl.learners.online_presets import table1_config  # noqa: E402
from jaxcssl.methods import REGISTRY as METHODS  # noqa: E402

# Dense (no structured sparsity) peak TFLOP/s per chip: (substring of jax's device_kind, bfloat16,
# tf32, float32 without tensor cores). Sources: NVIDIA H100 Tensor Core GPU datasheet (2023; SXM5,
# NVL and PCIe columns), NVIDIA H200 Tensor Core GPU datasheet (2024), NVIDIA A100 datasheet (2021).
# The datasheets quote tensor-core rates "with sparsity"; dense is half of that (H100 SXM bf16:
# 1,979 -> 989.5). First match wins, so the specific H100 variants precede "H100" (the SXM5 board,
# device_kind "NVIDIA H100 80GB HBM3"). Measured here for comparison: an 8192^3 bf16 matmul ran at
# 798 TFLOP/s on the lent H100 (/work/.library/device/KINDS.md, 2026-11-13).
PEAK_TFLOPS: tuple[tuple[str, float, float, float], ...] = (
    ("H200", 989.5, 494.5, 67.0),
    ("H100 PCIe", 756.0, 378.0, 51.0),
    ("H100 NVL", 835.5, 417.5, 60.0),
    ("H100", 989.5, 494.5, 67.0),
    ("A100", 312.0, 156.0, 19.5),
)

METHOD_NOTE = "step time: median of rounds; img/s: current-task images; FLOPs: XLA cost analysis of one step"
MARKDOWN_HEADER = (
    "| device | platform | jax | date (UTC) | strategy | method | task | batch | replay | dtype | width "
    "| steps/call | step ms | img/s | compile s | peak MiB | TFLOP/s | % of peak |\n"
    "|---|---|---|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclasses.dataclass(frozen=True)
class Bench:
    """One configuration to measure (the CLI flags of the same names)."""

    strategy: str = "finetune"
    method: str = "barlow_twins"
    batch: int = 512
    replay: int = 64  # replay samples per step (strategy.replay_batch); used by replay strategies in later tasks
    dtype: str = "bfloat16"
    width: int = 64  # ResNet base width (64 = ResNet-18/50 proper)
    head_scale: float = 1.0  # multiplies every head width (tiny CPU models)
    task: str = "first"  # first: the task-0 program (plain SSL); later: old model + replay + distillation
    steps: int = 20  # timed calls per round
    warmup: int = 3  # calls before timing (the first one compiles)
    repeats: int = 3  # timing rounds
    steps_per_call: int = 1  # training steps fused per call with lax.scan (1: no loop)
    setting: str = "cifar10_split2"  # paper setting: classes per task, backbone, samples per task
    image_size: int = 32
    samples_per_class: int = 5000  # synthetic training images per class (5000 = CIFAR-10's 50,000)
    num_devices: int = 1
    # XLA options for this program's compile() (e.g. ("xla_backend_optimization_level", "0")); recorded
    compiler_options: tuple[tuple[str, str], ...] = ()
    ensemble: int = 0  # > 0: the FUSSL learner's phase-1 step with this many members (strategy "fussl")
    learner: str = "continual"  # continual | online (the stream step: batch = stream batch, replay = memory batch)
    rals: int = 1  # online: 1 with RALS, 0 without


# -O0 LLVM code generation on CPU: compiles the two smoke programs in about half the time, runs the
# (tiny) steps about 4x slower. The smoke numbers check the harness, they do not rate a CPU.
_FAST_CPU_COMPILE = (("xla_backend_optimization_level", "0"),)

PRESETS: dict[str, tuple[Bench, ...]] = {
    # The H100 targets: plain Barlow Twins fine-tune, task-0 step, batch 512 (>= 60,000 img/s);
    # CroMo-Mixup Barlow Twins later-task step, batch 256 + replay 64 (>= 30,000 current img/s).
    "targets": (
        Bench(strategy="finetune", batch=512, task="first"),
        Bench(strategy="cromo", batch=256, replay=64, task="later"),
    ),
    # A width-8 ResNet-18 with 1/64 heads on 32x32 inputs, float32: checks the harness on 2 CPU cores.
    # Kaizen with MoCo v2+, later-task step: batch 256 + replay 32 through the current and the old model,
    # EMA target, queue, distillation predictor and classifier.
    "kaizen": (Bench(strategy="kaizen", method="mocov2", batch=256, replay=32, task="later"),),
    "cpu-smoke": (
        Bench(strategy="finetune", batch=32, dtype="float32", width=8, head_scale=1 / 64, task="first",
              steps=3, warmup=1, repeats=2, samples_per_class=64, compiler_options=_FAST_CPU_COMPILE),
        Bench(strategy="cromo", batch=32, replay=8, dtype="float32", width=8, head_scale=1 / 64, task="later",
              steps=3, warmup=1, repeats=2, samples_per_class=64, compiler_options=_FAST_CPU_COMPILE),
    ),
    # FUSSL's ensemble step (phase 1, FUSSL's 1000-d projector): images/s per member, m = 1 vs 3.
    "fussl": (
        Bench(strategy="fussl", ensemble=1, batch=256),
        Bench(strategy="fussl", ensemble=3, batch=256),
    ),
    "fussl-cpu-smoke": tuple(
        Bench(strategy="fussl", ensemble=m, batch=32, dtype="float32", width=8, head_scale=1 / 64, steps=3, warmup=1,
              repeats=2, samples_per_class=64, compiler_options=_FAST_CPU_COMPILE) for m in (1, 3)
    ),
    # The online learner's stream step (Online-SSL Sec. 5.3): 128 new + 256 memory images with RALS
    # (k = 256, Barlow Twins in groups of 16), 128 + 128 without; one compiled call per stream batch of
    # N = 20 local steps.
    "online": (
        Bench(learner="online", rals=1, batch=128, replay=256, task="later", steps_per_call=20, steps=5),
        Bench(learner="online", rals=0, batch=128, replay=128, task="later", steps_per_call=20, steps=5),
    ),
    "online-cpu-smoke": (
        Bench(learner="online", rals=1, batch=16, replay=32, dtype="float32", width=8, head_scale=1 / 64,
              task="later", steps=3, warmup=1, repeats=2, samples_per_class=64, compiler_options=_FAST_CPU_COMPILE),
    ),
}


def peak_tflops(device_kind: str, dtype: str) -> Optional[float]:
    """The chip's dense peak for ``dtype`` (float32 counts TF32: XLA's default matmul and convolution
    precision on Ampere and Hopper GPUs), or None for a chip not in :data:`PEAK_TFLOPS` (CPUs)."""
    for name, bf16, tf32, _ in PEAK_TFLOPS:
        if name in device_kind:
            return bf16 if dtype == "bfloat16" else tf32
    return None


def fp32_vector_peak(device_kind: str) -> Optional[float]:
    for name, _, _, fp32 in PEAK_TFLOPS:
        if name in device_kind:
            return fp32
    return None


def _cost(analysis: Any) -> dict[str, float]:
    """``cost_analysis()`` returns a dict (jax >= 0.4.30) or a list with one dict per program (older)."""
    if analysis is None:
        return {}
    if isinstance(analysis, (list, tuple)):
        return dict(analysis[0]) if analysis else {}
    return dict(analysis)


def _step_flops(one_step_lowered, compiled_cost: dict[str, float], steps_per_call: int) -> tuple[Optional[float], str]:
    """FLOPs of one training step and where they come from.

    First choice: XLA's cost analysis of the lowered one-step HLO (before fusion; every convolution
    and dot appears as such on any backend). PJRT C-API clients (the CUDA plugin) cannot analyse
    lowered HLO (``Lowered.cost_analysis()`` gives ``None``); then the compiled one-step program's
    count (after fusion): the timed program's when it is one step, else the one-step program
    compiled for the purpose (a scan body would be counted once for all its steps).
    """
    try:
        flops = _cost(one_step_lowered.cost_analysis()).get("flops")
    except Exception:  # the analysis is optional: the compiled count below is the fallback
        flops = None
    if flops:
        return flops, "lowered one-step HLO"
    if steps_per_call > 1:
        compiled_cost = _cost(one_step_lowered.compile().cost_analysis())
    if compiled_cost.get("flops"):
        return compiled_cost["flops"], "compiled one-step program"
    return None, "n/a"


def make_online_config(bench: Bench):
    """The online learner's CIFAR config (5 tasks of 2 classes, N = 20) of ``bench`` on synthetic data of
    CIFAR shape; its memory is filled with the first task at the stream's start."""
    config = table1_config("cifar10", bench.method, 20, "ours" if bench.rals else "norals")
    config.dataset.name = config.dataset.source = "synthetic"
    config.dataset.synthetic.update(num_classes=10, train_per_class=bench.samples_per_class, test_per_class=1,
                                    image_size=bench.image_size, seed=0)
    config.model.update(dtype=bench.dtype, width=bench.width, head_scale=bench.head_scale)
    config.online.update(stream_batch=bench.batch, memory_batch=bench.replay, pretrain_epochs=1,
                         memory_size=min(config.online.memory_size, bench.samples_per_class * 2))
    if bench.rals and bench.head_scale < 1:  # tiny CPU models: groups of 8 fit their batches
        config.online.rals_group_size = 8
    config.train.update(batch_size=min(256, bench.samples_per_class * 2), steps_per_call=bench.steps_per_call,
                        num_devices=bench.num_devices)
    return validate(config)


def make_config(bench: Bench):
    """The engine config of ``bench``: a paper setting on synthetic data of CIFAR shape."""
    if bench.setting not in PAPER_SETTINGS:
        raise ValueError(f"--setting {bench.setting!r} is not one of {', '.join(PAPER_SETTINGS)}")
    if bench.task not in ("first", "later"):
        raise ValueError(f"--task {bench.task!r} must be 'first' or 'later'")
    config = paper_config(bench.setting, bench.method, bench.strategy)
    classes_per_task = tuple(config.split.classes_per_task)
    config.dataset.name = "synthetic"
    config.dataset.source = "synthetic"
    config.dataset.synthetic.update(
        num_classes=sum(classes_per_task), train_per_class=bench.samples_per_class, test_per_class=1,
        image_size=bench.image_size, seed=0,
    )
    config.model.dtype = bench.dtype
    config.model.width = bench.width
    config.model.head_scale = bench.head_scale
    config.train.batch_size = bench.batch
    config.train.steps_per_call = bench.steps_per_call
    config.train.num_devices = bench.num_devices
    config.strategy.replay_batch = bench.replay
    config.strategy.kaizen.replay_batch = bench.replay
    first_task_samples = classes_per_task[0] * bench.samples_per_class
    config.strategy.samples_per_task = min(config.strategy.samples_per_task, first_task_samples)
    if bench.ensemble:  # FUSSL: one task of every class, the phase-1 program
        if bench.task != "first":
            raise ValueError("--ensemble: the FUSSL ensemble step is a first-task program (--task first)")
        config.learner.name, config.strategy.name = "fussl", "finetune"
        config.split.classes_per_task = (sum(classes_per_task),)
        config.model.norm = "batch"
        config.fussl.ensemble_size = bench.ensemble
    return validate(config)


def _perturbed(tree: Any, key: jax.Array, scale: float = 0.05) -> Any:
    """``x + scale * std(x) * N(0, 1)`` per leaf: an old model that differs from the current one."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + scale * (jnp.std(x) + 1e-3) * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _input_program(learner: ContinualLearner, bench: Bench, sample_memory: bool):
    """The input half of the engine's step alone (batch indices, gather, two augmented views, replay
    sample and its two views), to weigh augmentation against the model (``--breakdown``)."""
    views = learner.views

    def inputs(state, data):
        key = jax.random.fold_in(data.step_key, state.step)
        k_view1, k_view2, k_memory, k_mem1, k_mem2, _ = jax.random.split(key, 6)
        images = data.images[batch_indices(state.phase_step, data, bench.batch)]
        out = [augment(k_view1, images, views[0]), augment(k_view2, images, views[1])]
        if sample_memory:
            memory = replay.sample(state.replay, k_memory, bench.replay)["images"]
            out += [augment(k_mem1, memory, views[0]), augment(k_mem2, memory, views[1])]
        return out

    return jax.jit(inputs)


def _time_rounds(call, state, data, steps: int, repeats: int) -> tuple[list[float], Any, Any]:
    """Seconds per call of each round of ``steps`` back-to-back calls; the last state and metrics."""
    rounds, metrics = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = call(state, data)
        jax.block_until_ready((state, metrics))
        rounds.append((time.perf_counter() - start) / steps)
    return rounds, state, metrics


def _compile_and_warm(step, state, data, bench: Bench):
    """Lower, compile and run ``step`` ``bench.warmup`` times: ``(lowered, compiled, state, metrics, times)``
    with ``times`` = lower, compile and first-call (lower + compile + run) seconds."""
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    lowered = step.lower(state, data)
    t1 = time.perf_counter()
    compiled = lowered.compile(dict(bench.compiler_options))
    t2 = time.perf_counter()
    state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    t3 = time.perf_counter()
    for _ in range(bench.warmup - 1):
        state, metrics = compiled(state, data)
    jax.block_until_ready((state, metrics))
    return lowered, compiled, state, metrics, {"lower_s": t1 - t0, "compile_s": t2 - t1, "first_call_s": t3 - t0}


def _xla_mib(memory) -> Optional[float]:
    """XLA's static estimate: arguments + outputs - donated (aliased) + temporaries, in MiB."""
    if memory is None:
        return None
    return (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes) / 2**20


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "n/a"
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def measure(bench: Bench, *, breakdown: bool = False, profile_dir: str = "") -> dict[str, Any]:
    """Build the engine's step for ``bench``, compile it, time it; the JSON record."""
    online = bench.learner == "online"
    config = make_online_config(bench) if online else make_config(bench)
    learner = engine.prepare(config)
    if bench.ensemble:
        return _measure_ensemble(bench, learner)
    later = bench.task == "later"
    phases = learner.plan()
    if later and len(phases) < 2:
        raise ValueError(f"--task later: strategy {bench.strategy!r} trains a single joint task")
    state = learner.init_state()
    if online:  # the stream's start: a fresh optimiser state, the memory filled with the first task
        state = learner.start_phase(state, phases[1])
    elif later:  # the engine's task end: old model snapshot, replay memory filled, strategy consolidation
        state = learner.end_phase(state, phases[0])
        old = _perturbed(state.old, jax.random.PRNGKey(1))
        state = state.replace(old=sharding.replicate(old, learner.data.mesh),
                              phase_step=jnp.zeros_like(state.phase_step))
    phase = phases[1] if later else phases[0]
    data = learner.inputs(phase)
    sample_memory = online or (learner.memory_spec is not None and later)
    step_fn = learner.step_fn(phase.program)

    def program(steps_per_call: int):
        return compile_step(step_fn, learner.data.mesh, steps_per_call)

    lowered, compiled, state, metrics, times = _compile_and_warm(program(bench.steps_per_call), state, data, bench)
    rounds, state, metrics = _time_rounds(compiled, state, data, bench.steps, bench.repeats)
    loss = float(np.asarray(metrics["loss"])[-1])
    if not math.isfinite(loss):  # timings stand, but the program is suspect: say so, keep the record
        print(f"WARNING: non-finite loss {loss} after the timed steps of {bench}", file=sys.stderr, flush=True)

    compiled_cost = _cost(compiled.cost_analysis())
    one_step = lowered if bench.steps_per_call == 1 else program(1).lower(state, data)
    flops, flops_source = _step_flops(one_step, compiled_cost, bench.steps_per_call)
    device = learner.data.mesh.devices.flat[0]
    stats = device.memory_stats() or {}

    call_s = statistics.median(rounds)
    step_s = call_s / bench.steps_per_call
    tflops = flops / step_s / 1e12 if flops else None
    peak = peak_tflops(device.device_kind, bench.dtype)
    record: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "mesh_devices": int(learner.data.mesh.devices.size),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "git": _git_revision(),
        "compilation_cache": bool(getattr(jax.config, "jax_compilation_cache_dir", None)),  # compile_s ~ 0 on a hit
        **{k: v for k, v in dataclasses.asdict(bench).items() if k != "replay"},
        "replay": bench.replay if sample_memory else 0,
        **({"strategy": "online+rals" if bench.rals else "online"} if online else {}),
        "compiler_options": dict(bench.compiler_options),
        "dataset_size": int(learner.data.device_images.shape[0]),
        "task_size": len(learner.stream) if online else int(learner.phase_rows[phase.index][1].shape[1]),
        **times,
        "step_ms": step_s * 1e3,
        "step_ms_min": min(rounds) / bench.steps_per_call * 1e3,
        "step_ms_max": max(rounds) / bench.steps_per_call * 1e3,
        "images_per_s": (bench.batch + bench.replay if online else bench.batch) / step_s,
        "flops_per_step": flops,
        "flops_source": flops_source,
        "xla_flops_per_call": compiled_cost.get("flops"),
        "xla_bytes_accessed_per_call": compiled_cost.get("bytes accessed"),
        "tflops": tflops,
        "peak_tflops": peak,
        "fp32_vector_peak_tflops": fp32_vector_peak(device.device_kind),
        "pct_of_peak": 100 * tflops / peak if (tflops and peak) else None,
        "peak_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
        "xla_mib": _xla_mib(compiled.memory_analysis()),
        "loss": loss if math.isfinite(loss) else str(loss),
        "method_note": METHOD_NOTE,
    }
    if breakdown and not online:
        inputs = _input_program(learner, bench, sample_memory)
        jax.block_until_ready(inputs(state, data))
        start = time.perf_counter()
        for _ in range(bench.steps):
            out = inputs(state, data)
        jax.block_until_ready(out)
        record["input_ms"] = (time.perf_counter() - start) / bench.steps * 1e3
        record["input_share"] = record["input_ms"] / record["step_ms"]
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            _time_rounds(compiled, state, data, min(bench.steps, 5), 1)
    return record


def _measure_ensemble(bench: Bench, learner) -> dict[str, Any]:
    """FUSSL's phase-1 step: ``m`` members vmapped in one program; ``images_per_s`` is per member (each
    member sees the whole batch, as two views of its own)."""
    phase = learner.plan()[0]
    state, data = learner.init_state(), learner.inputs(phase)
    step = compile_step(learner.step_fn(phase.program), learner.data.mesh)
    _, compiled, state, metrics, times = _compile_and_warm(step, state, data, bench)
    rounds, state, metrics = _time_rounds(compiled, state, data, bench.steps, bench.repeats)
    step_s = statistics.median(rounds)
    device = learner.data.mesh.devices.flat[0]
    stats = device.memory_stats() or {}
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_kind": device.device_kind, "platform": device.platform, "jax": jax.__version__,
        "mesh_devices": int(learner.data.mesh.devices.size), "git": _git_revision(),
        **{k: v for k, v in dataclasses.asdict(bench).items()}, "replay": 0,
        "compiler_options": dict(bench.compiler_options),
        **times,
        "step_ms": step_s * 1e3, "step_ms_min": min(rounds) * 1e3, "step_ms_max": max(rounds) * 1e3,
        "images_per_s": bench.batch / step_s, "all_members_images_per_s": bench.ensemble * bench.batch / step_s,
        "plan_mib": engine_memory.plan(state, data, compiled).total / 2**20,  # what the loop checks
        "peak_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
        "xla_mib": _xla_mib(compiled.memory_analysis()),
        "tflops": None, "pct_of_peak": None, "loss": float(np.asarray(metrics["loss"])[-1]),
        "method_note": "FUSSL phase-1 step; img/s per member (x ensemble for all members)",
    }


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_row(r: dict[str, Any]) -> str:
    """One row under :data:`MARKDOWN_HEADER`."""
    strategy = r["strategy"] + (f" m={r['ensemble']}" if r.get("ensemble") else "")
    cells = [
        r["device_kind"], r["platform"], r["jax"], r["date_utc"].replace("+00:00", ""), strategy, r["method"],
        r["task"], str(r["batch"]), str(r["replay"]), r["dtype"], str(r["width"]), str(r["steps_per_call"]),
        _fmt(r["step_ms"], ".2f"), _fmt(r["images_per_s"], ",.0f"), _fmt(r["lower_s"] + r["compile_s"], ".1f"),
        _fmt(r["peak_mib"], ",.0f"), _fmt(r["tflops"], ".3g"), _fmt(r["pct_of_peak"], ".1f"),
    ]
    return "| " + " | ".join(cells) + " |"


def append_results(records: Sequence[dict[str, Any]], out_dir: str) -> tuple[str, str]:
    """Append to ``out_dir/throughput.jsonl`` and ``out_dir/throughput.md`` (header when new)."""
    os.makedirs(out_dir, exist_ok=True)
    jsonl, md = os.path.join(out_dir, "throughput.jsonl"), os.path.join(out_dir, "throughput.md")
    with open(jsonl, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    new = not os.path.exists(md) or os.path.getsize(md) == 0
    with open(md, "a", encoding="utf-8") as f:
        if new:
            f.write(MARKDOWN_HEADER + "\n")
        for r in records:
            f.write(markdown_row(r) + "\n")
    return jsonl, md


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="auto", choices=("auto", "none", *PRESETS),
                   help="configurations to run; flags given explicitly override every one of them.\n"
                        "auto: 'targets' on an accelerator, 'cpu-smoke' on CPU; none: one configuration from the flags")
    for field in dataclasses.fields(Bench):
        if field.name == "compiler_options":
            continue
        kind = {"int": int, "float": float, "str": str}[field.type]
        choices = {"dtype": ("float32", "bfloat16"), "task": ("first", "later"),
                   "strategy": (*strategies.REGISTRY.names(), "fussl"), "method": METHODS.names(),
                   "setting": tuple(PAPER_SETTINGS), "learner": ("continual", "online"), "rals": (0, 1)}.get(field.name)
        p.add_argument(f"--{field.name}", type=kind, default=None, choices=choices,
                       help=f"the preset's value; with --preset none: {field.default!r}")
    p.add_argument("--compiler_option", action="append", default=None, metavar="KEY=VALUE",
                   help="an XLA option for compile(), repeatable; replaces the preset's options ('none': no options)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the input half of the step alone (indices, gather, augmentation, replay)")
    p.add_argument("--profile", default="", help="write a jax.profiler trace of 5 timed calls to this folder")
    p.add_argument("--out", default=os.environ.get("OUT") or str(pathlib.Path(__file__).parent),
                   help="folder of throughput.jsonl and throughput.md (default $OUT if set, else benchmarks/)")
    p.add_argument("--in_process", action="store_true",
                   help="run several configurations in this process (peak memory is then shared)")
    p.add_argument("--bench_json", default="", help=argparse.SUPPRESS)  # one Bench, from the parent process
    return p


def configurations(args: argparse.Namespace) -> list[Bench]:
    """The preset's benches with the explicitly given flags applied to each."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Bench)
                 if f.name != "compiler_options" and getattr(args, f.name) is not None}
    if args.compiler_option is not None:
        pairs = [option.partition("=") for option in args.compiler_option if option != "none"]
        bad = [key for key, sep, _ in pairs if not sep]
        if bad:
            raise SystemExit(f"--compiler_option {bad[0]!r}: expected KEY=VALUE")
        overrides["compiler_options"] = tuple((key, value) for key, _, value in pairs)
    preset = args.preset
    if preset == "auto":
        preset = "cpu-smoke" if jax.default_backend() == "cpu" else "targets"
    benches = (Bench(),) if preset == "none" else PRESETS[preset]
    return [dataclasses.replace(b, **overrides) for b in benches]


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    args = _parser().parse_args(argv)
    child_env = dict(os.environ)
    if args.preset == "auto" and not args.in_process and not args.bench_json:
        # Presets run each configuration in a child process; asking jax for the default backend here
        # must not preallocate the GPU's memory under them.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.bench_json:
        fields = json.loads(args.bench_json)
        fields["compiler_options"] = tuple(map(tuple, fields["compiler_options"]))
        benches = [Bench(**fields)]
    else:
        benches = configurations(args)
    records, failed = [], 0
    for bench in benches:
        if len(benches) > 1 and not args.in_process:
            command = [sys.executable, __file__, "--bench_json", json.dumps(dataclasses.asdict(bench)),
                       "--out", args.out] + (["--breakdown"] if args.breakdown else [])
            if args.profile:
                command += ["--profile", os.path.join(args.profile, f"{bench.strategy}_{bench.task}")]
            done = subprocess.run(command, check=False, env=child_env)
            if done.returncode:
                print(f"FAILED ({done.returncode}): {bench}", file=sys.stderr, flush=True)
                failed += 1
            continue
        record = measure(bench, breakdown=args.breakdown, profile_dir=args.profile)
        jsonl, md = append_results([record], args.out)
        print(json.dumps(record), flush=True)
        print(MARKDOWN_HEADER + "\n" + markdown_row(record), flush=True)
        print(f"appended to {jsonl} and {md}", flush=True)
        records.append(record)
    if failed:
        raise SystemExit(f"{failed} of {len(benches)} configurations failed")
    return records


if __name__ == "__main__":
    main()
