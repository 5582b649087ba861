"""The online learner (Online-SSL: SLCLRS, memory, RALS) and ``init_from``.

Numerics against independent NumPy computations (PyTorch's OneCycleLR written out, SimCLR's l_ij + l_ji
and Barlow Twins per group, top-k), the memory against the reservoir's invariants, a stream killed
mid-batch resumed to identical parameters, a run from a checkpoint against the run that pre-trains
itself, the continual learner from the same checkpoint, and the CLI end to end.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcssl import checkpointing, engine, methods
from jaxcssl.config import validate
from jaxcssl.engine.compile import compile_step
from jaxcssl.engine.schedules import OneCycle
from jaxcssl.errors import ConfigError
from jaxcssl.learners import online
from jaxcssl.models import resnet

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_config(method: str = "barlow_twins") -> ml_collections.ConfigDict:
    config = _load(ROOT / "configs" / "smoke.py").get_config(f"online,{method}")
    config.eval.after_task = ("knn",)
    config.eval.final = ("knn",)
    return config


def run_cli(config: str, workdir: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jaxcssl.main", f"--config={config}", f"--workdir={workdir}", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=900)


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# --- SLCLRS ----------------------------------------------------------------------------------------
def torch_one_cycle(total: int, max_lr: float, pct: float, div: float, final_div: float, base_m: float,
                    max_m: float) -> np.ndarray:
    """PyTorch's ``OneCycleLR.get_lr`` (anneal_strategy="cos", three_phase=False), written out step by step."""
    initial = max_lr / div
    phases = [(float(pct * total) - 1, (initial, max_lr), (max_m, base_m)),
              (total - 1, (max_lr, initial / final_div), (base_m, max_m))]

    def cos(start, end, p):
        return end + (start - end) / 2.0 * (math.cos(math.pi * p) + 1)

    out = []
    for step in range(total):
        start = 0.0
        for i, (end, lrs, moms) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                p = (step - start) / (end - start)
                out.append((cos(*lrs, p), cos(*moms, p)))
                break
            start = end
    return np.array(out)


@pytest.mark.parametrize("steps,pct", [(10, 0.5), (20, 0.5), (50, 0.25), (100, 0.5), (7, 0.3), (1, 0.5)])
def test_slclrs_is_pytorch_one_cycle_in_every_batch(steps, pct):
    schedule = OneCycle.create(steps, 0.05, pct_start=pct, div_factor=10.0)
    values = jax.jit(jax.vmap(schedule))(jnp.arange(3 * steps))  # three stream batches
    got = np.stack([values["learning_rate"], values["momentum"]], axis=1)
    want = np.tile(torch_one_cycle(steps, 0.05, pct, 10.0, 1e4, 0.85, 0.95), (3, 1))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    if steps == 50:  # the fractional end of the rise: step 12 is past e = 11.5, the first step of the fall
        assert got[11, 0] < 0.05 and got[12, 0] < 0.05 and got[12, 0] > got[13, 0]
    assert got[0, 0] == pytest.approx(0.005 if steps > 1 else 0.005 / 1e4, rel=1e-6)


# --- per-sample forms -------------------------------------------------------------------------------
def _method(name: str):
    options = {"queue_size": 32} if name == "mocov2" else {}
    return methods.build_method(name, dataset="cifar100", backbone=resnet.resnet18(width=8), head_scale=1 / 64,
                                **options)


@pytest.mark.parametrize("name,factor", [("simclr", 2.0), ("byol", 1.0), ("simsiam", 1.0), ("mocov2", 1.0),
                                         ("barlow_twins", 1.0), ("vicreg", 1.0)])
def test_per_image_and_per_group_losses_average_to_the_objective(name, factor):
    """One group holding the batch is the objective; per-image losses average to it (SimCLR's l_ij + l_ji
    to twice the NT-Xent mean, Eq. 10)."""
    method = _method(name)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    dim = method.model.projector.out_dim
    emb = [methods.Embedding(features=None, projection=jax.random.normal(k, (16, dim)),
                             prediction=jax.random.normal(jax.random.fold_in(k, 1), (16, dim))) for k in keys[:2]]
    k1, k2 = (method.key_embedding(e, e) for e in emb)
    state = method.init_loss_state()
    objective, _ = method.ssl_loss(emb[0], emb[1], k1, k2, state)
    unit = method.rals_units[0]
    if unit == "sample":
        losses = method.per_sample_loss(emb[0], emb[1], k1, k2, state)
        assert losses.shape == (16,)
        np.testing.assert_allclose(np.mean(losses), factor * objective, rtol=1e-5)
    else:
        np.testing.assert_allclose(method.grouped_loss(emb[0], emb[1], k1, k2, state, 16), [objective], rtol=1e-5)
        groups = method.grouped_loss(emb[0], emb[1], k1, k2, state, 8)
        assert groups.shape == (2,)
        first = methods.Embedding(None, emb[0].projection[:8]), methods.Embedding(None, emb[1].projection[:8])
        np.testing.assert_allclose(groups[0], method.ssl_loss(*first, first[0].projection, first[1].projection,
                                                              state)[0], rtol=1e-5)


def numpy_mocov2_per_image(q1, q2, k1, k2, queues, t: float) -> np.ndarray:
    """MoCo v2+ per image, float64: ``½ (ℓ(q¹_i, k²_i; Q²) + ℓ(q²_i, k¹_i; Q¹))``, the negatives of a query
    being past keys of its positive's view."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def one(q, k, queue):
        q, k, queue = unit(q), unit(k), unit(queue)
        positive = np.exp(np.sum(q * k, 1) / t)
        return -np.log(positive / (positive + np.exp(q @ queue.T / t).sum(1)))

    return 0.5 * (one(q1, k2, queues[1]) + one(q2, k1, queues[0]))


def test_mocov2_per_image_loss_contrasts_each_direction_with_its_keys_view_queue():
    method = _method("mocov2")
    dim = method.model.projector.out_dim
    q1, q2, k1, k2 = (np.asarray(jax.random.normal(k, (12, dim))) for k in jax.random.split(jax.random.PRNGKey(5), 4))
    state = method.init_loss_state()
    queues = np.asarray(state["queue"])
    assert queues.shape == (2, 32, dim)
    queues = np.stack([queues[0], queues[1] + 2.0 * q1[:1]])  # Q² leans towards q¹: the two queues differ a lot
    state = {**state, "queue": jnp.asarray(queues / np.linalg.norm(queues, axis=-1, keepdims=True))}
    emb1, emb2 = methods.Embedding(None, jnp.asarray(q1)), methods.Embedding(None, jnp.asarray(q2))
    got = np.asarray(method.per_sample_loss(emb1, emb2, jnp.asarray(k1), jnp.asarray(k2), state))
    t = method.loss_kwargs["temperature"]
    np.testing.assert_allclose(got, numpy_mocov2_per_image(q1, q2, k1, k2, np.asarray(state["queue"]), t), rtol=1e-5)
    swapped = numpy_mocov2_per_image(q1, q2, k1, k2, np.asarray(state["queue"])[::-1], t)
    assert np.abs(got - swapped).max() > 0.1  # the queue of the other view would be a different loss
    objective, _ = method.ssl_loss(emb1, emb2, jnp.asarray(k1), jnp.asarray(k2), state)
    np.testing.assert_allclose(got.mean(), objective, rtol=1e-5)


# --- RALS selection ---------------------------------------------------------------------------------
def numpy_simclr_per_sample(z1: np.ndarray, z2: np.ndarray, t: float) -> np.ndarray:
    """Eq. 10: l_ij + l_ji over the 2N L2-normalised views, float64."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    sim = np.exp(z @ z.T / t)
    np.fill_diagonal(sim, 0.0)
    loss = -np.log(sim[np.arange(2 * n), (np.arange(2 * n) + n) % (2 * n)] / sim.sum(1))
    return loss[:n] + loss[n:]


def numpy_barlow_twins(z1: np.ndarray, z2: np.ndarray, lam: float, scale: float, eps: float, unbiased: bool) -> float:
    n = len(z1)

    def standardise(z):
        z = z.astype(np.float64) - z.mean(0)
        return z / np.sqrt((z ** 2).sum(0) / (n - 1 if unbiased else n) + eps)

    c = standardise(z1).T @ standardise(z2) / n
    off = c - np.diag(np.diag(c))
    return scale * (((1 - np.diag(c)) ** 2).sum() + lam * (off ** 2).sum())


@pytest.fixture(scope="module")
def rals_setup():
    """The smoke models of SimCLR and Barlow Twins, a current model and a perturbed anchor, two views."""
    out = {}
    for name in ("simclr", "barlow_twins"):
        config = validate(smoke_config(name))
        learner = engine.prepare(config)
        state = jax.device_get(jax.jit(learner.init_state)())  # one program, not op by op
        model = learner._model(state.params, state.model_state)
        anchor = jax.tree_util.tree_map(
            lambda x: x + 0.3 * (np.std(x) + 1e-3) * np.random.default_rng(x.size).standard_normal(x.shape)
            .astype(x.dtype), model)
        images = learner.data.dataset.x_train[:48].astype(np.float32) / 255 - 0.5
        views = [images, images[:, :, ::-1] + 0.1 * np.random.default_rng(0).standard_normal(images.shape)
                 .astype(np.float32)]  # two views: the images, and flipped with noise
        out[name] = (learner, model, anchor, views)
    return out


def _embed(learner, model, view):
    e, _ = learner.method.embed(model["params"], model["batch_stats"], view, train=True)
    return np.asarray(e.projection)


@pytest.mark.parametrize("name", ["simclr", "barlow_twins"])
def test_rals_keeps_the_top_k_reducible_anchor_losses(rals_setup, name):
    learner, model, anchor, (v1, v2) = rals_setup[name]
    rals = learner.rals
    rows, scores = jax.jit(lambda m, a, x, y, k: rals.select(learner.method, m, a, x, y, {}, k))(
        model, anchor, v1, v2, jax.random.PRNGKey(0))
    cur, anc = [(_embed(learner, m, v1), _embed(learner, m, v2)) for m in (model, anchor)]
    if name == "simclr":
        t = learner.method.loss_kwargs["temperature"]
        reducible = numpy_simclr_per_sample(*cur, t) - numpy_simclr_per_sample(*anc, t)
        unit_size = 1
    else:
        kw = learner.method.loss_kwargs
        g = rals.group_size
        assert rals.unit == "group" and g == 8

        def per_group(z1, z2):
            return np.array([numpy_barlow_twins(z1[i:i + g], z2[i:i + g], kw["lambda_offdiag"], kw["scale"],
                                                kw["eps"], kw["unbiased_std"]) for i in range(0, len(z1), g)])

        reducible = per_group(*cur) - per_group(*anc)
        unit_size = g
    np.testing.assert_allclose(scores, reducible, rtol=2e-3, atol=2e-4)
    kept = rals.keep // unit_size
    ranked = np.argsort(-reducible)
    assert reducible[ranked[kept - 1]] - reducible[ranked[kept]] > 1e-3  # a clear boundary: the test can fail
    expected_rows = np.sort((ranked[:kept, None] * unit_size + np.arange(unit_size)).ravel())
    np.testing.assert_array_equal(np.sort(np.asarray(rows)), expected_rows)
    assert len(rows) == rals.keep == 32


def test_ties_are_broken_uniformly_at_random():
    """At a batch's first step the anchor is the current model: every score is 0 and the choice is random."""
    picks = jax.vmap(lambda k: online.select_units(jnp.zeros(12), 4, k))(jax.random.split(jax.random.PRNGKey(0), 3000))
    counts = np.bincount(np.asarray(picks).ravel(), minlength=12)
    assert all(len(set(p)) == 4 for p in np.asarray(picks[:50]))
    np.testing.assert_allclose(counts / 3000, 4 / 12, atol=0.04)
    # Distinct scores: exactly the top k.
    top = online.select_units(jnp.array([0.1, 3.0, -1.0, 2.0, 0.5]), 2, jax.random.PRNGKey(1))
    assert sorted(np.asarray(top).tolist()) == [1, 3]


# --- settings refused before anything loads --------------------------------------------------------
@pytest.mark.parametrize("overrides,culprit", [
    (dict(ssl__method="corinfomax"), "online.rals=True needs a per-sample or grouped loss, which ssl.method='corinfomax'"),
    (dict(online__rals_group_size=5), "online.rals_group_size=5 must be >= 2 and divide"),
    (dict(online__rals_keep=100), "online.rals_keep=100 exceeds the 48 samples"),
    (dict(online__steps_per_batch=2), "online.pct_start=0.5 x online.steps_per_batch=2 = 1"),
    (dict(online__rals_unit="sample"), "online.rals_unit='sample': ssl.method='barlow_twins' scores by group"),
    (dict(online__pretrain_epochs=0, online__init_from="/nonexistent/checkpoints/tasks/0"),
     "online.init_from='/nonexistent/checkpoints/tasks/0' does not exist"),
    (dict(online__pretrain_epochs=0, online__init_from="/tmp"), "is not a task checkpoint W/checkpoints/tasks/<task>"),
    (dict(online__init_from="/tmp"), "online.pretrain_epochs and online.init_from are both set"),
    (dict(online__order="random"), "online.order='random' is not one of"),
    (dict(ssl__method="vicreg", online__rals_unit="sample"), "trains VICReg's invariance term alone"),
])
def test_bad_settings_are_one_config_error(overrides, culprit):
    overrides = dict(overrides)
    config = smoke_config(overrides.pop("ssl__method", "barlow_twins"))  # the objective's own loss arguments
    for key, value in overrides.items():
        config.update_from_flattened_dict({key.replace("__", "."): value})
    with pytest.raises(ConfigError) as error:
        validate(config)
    assert culprit in str(error.value) and "\n" not in str(error.value)


def test_without_rals_any_objective_streams():
    config = smoke_config("corinfomax")
    config.online.rals = False
    assert validate(config).online.rals is False


@pytest.mark.parametrize("method,overrides", [
    ("barlow_twins", dict(momentum_persists=False, rals_bn="running", rals_shuffle_groups=True)),
    ("barlow_twins", dict(rals_loss="objective", memory_init="empty", cycle_momentum=False)),
    ("barlow_twins", dict(rals=False)),
    ("byol", {}), ("mocov2", {}), ("simsiam", {}),
    ("vicreg", {}), ("vicreg", dict(rals_unit="sample", rals_loss="objective")),
])
def test_every_option_and_objective_traces_the_stream_step(method, overrides):
    """The stream step of every RALS form and option, traced (shapes and types; no compilation)."""
    config = smoke_config(method)
    config.online.update(overrides)
    learner = engine.prepare(config)
    phase = learner.plan()[-1]
    state = jax.eval_shape(learner.init_state)
    new_state, metrics = jax.eval_shape(learner.step_fn(phase.program), state, learner.inputs(phase))
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
    assert all(a.shape == b.shape and a.dtype == b.dtype for a, b in
               zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state)))
    assert ("rals_new_fraction" in metrics) == config.online.rals and ("momentum" in metrics) == config.online.cycle_momentum


def test_the_memory_plan_counts_the_stream_state_and_refuses_a_memory_too_large(tmp_path, monkeypatch):
    """The engine's per-device plan sees the reservoir, the anchor and the dataset; a memory that does not
    fit is refused before the workdir is touched, naming online.memory_size."""
    from jaxcssl.engine import memory

    config = smoke_config()
    config.online.memory_size = 4096
    learner = engine.prepare(config)
    state = learner.init_state()
    plan = memory.plan(state, learner.inputs(learner.plan()[-1]))
    assert plan.items["replay"] == 4096 * 16 * 16 * 3 + 3 * 4096 * 4 + 8  # uint8 images, int32 labels/tasks/count
    assert plan.items["anchor"] == memory._device_bytes(learner._model(state.params, state.model_state)) > 0
    assert plan.items["dataset"] == learner.data.device_images.nbytes + learner.data.device_labels.nbytes
    monkeypatch.setattr(memory, "device_capacity", lambda: plan.items["params"])  # a tiny device
    with pytest.raises(ConfigError, match=r"^the 'first' step needs .*; the largest item is replay \(3\.\d MiB\): "
                                          r"use a smaller strategy.samples_per_task \(the online learner: "
                                          r"online.memory_size\)$"):
        engine.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


# --- end to end ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``configs/smoke.py:online,barlow_twins`` through the CLI: pre-training, then the stream with RALS."""
    workdir = tmp_path_factory.mktemp("online_bt")
    result = run_cli("configs/smoke.py:online,barlow_twins", workdir, "--config.eval.after_task=('knn',)",
                     "--config.eval.final=('knn','linear_fast')")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, workdir, json.loads((workdir / "results.json").read_text())


@pytest.mark.slow
def test_the_smoke_stream_runs_end_to_end_and_beats_chance(smoke_run):
    result, workdir, results = smoke_run
    assert "final linear_fast: LA" in result.stdout
    assert results["final"]["knn"]["top1"] > 0.5 and results["final"]["linear_fast"]["top1"] > 0.5  # chance 0.25
    assert results["run"]["learner"] == "online" and results["run"]["label"] == "SLCLRS + RALS"
    learner = results["learner"]
    assert learner["stream"]["batches"] == 8 and learner["stream"]["tasks"] == [1]
    assert learner["stream"]["pretrained_tasks"] == [0] and learner["stream"]["max_lr"] == 0.05
    rals = learner["rals"]
    assert rals["batches_averaged"] == 8 and len(rals["new_fraction_mean"]) == 3
    assert all(0.0 <= f <= 1.0 for f in rals["new_fraction_mean"] + rals["new_fraction_last_batch"])
    assert (workdir / "plots" / "rals_selection.png").stat().st_size > 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    stream = [r for r in rows if "train/rals_new_fraction" in r]
    assert [r["step"] for r in stream] == list(range(8 + 3, 8 + 25, 3))  # every logged step of the stream
    # Stream evaluations every 4 batches (history rows within the phase), then after each phase.
    assert [(h["task"], h.get("phase_step")) for h in results["history"]] == [(0, None), (1, 12), (1, None)]
    # The memory: the pre-trained task filled it (128 samples into 64 slots), then every stream batch.
    assert learner["memory"] == {"size": 64, "filled": 64, "offered": 256, "per_task": learner["memory"]["per_task"]}
    assert sum(learner["memory"]["per_task"]) == 64 and 16 <= learner["memory"]["per_task"][1] <= 48


@pytest.mark.slow
def test_a_batch_fused_into_one_call_trains_as_its_steps_one_by_one():
    """``train.steps_per_call = N``: one ``lax.scan`` call per stream batch, as on accelerators. The first
    step's reducible losses are 0 by definition, so the selection there does not hang on rounding."""
    learner = engine.prepare(smoke_config())
    phase = learner.plan()[1]
    start = learner.start_phase(learner.init_state(), phase)
    inputs, step = learner.inputs(phase), learner.step_fn("stream")
    ends = []
    for k in (1, 3):
        call, state = compile_step(step, learner.data.mesh, k), jax.tree_util.tree_map(jnp.copy, start)
        for _ in range(6 // k):  # two stream batches
            state, metrics = call(state, inputs)
        ends.append(jax.device_get(state))
    one, fused = ends
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(fused.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert leaves_equal(one.memory, fused.memory) and leaves_equal(one.selection, fused.selection)
    assert int(fused.memory.num_seen) == 128 + 2 * 16


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def from_checkpoint(tmp_path_factory, smoke_run):
    """The smoke stream started from the smoke run's pre-training checkpoint, killed right after a
    checkpoint in the middle of a stream batch, then resumed: the result, workdir, config, killed state."""
    workdir = tmp_path_factory.mktemp("online_from_checkpoint")
    config = smoke_config()
    config.online.pretrain_epochs = 0
    config.online.init_from = str(smoke_run[1] / "checkpoints" / "tasks" / "0")
    config.train.checkpoint_every_steps = 4  # the stream's step 4 is its second batch's second step
    killed = {}
    original = checkpointing.RunCheckpoints.save_periodic

    def save_then_die(self, step, state, meta):
        original(self, step, state, meta)
        killed.update(step=step, state=jax.device_get(state))
        raise Interrupt(step)

    mp = pytest.MonkeyPatch()
    mp.setattr(checkpointing.RunCheckpoints, "save_periodic", save_then_die)
    with pytest.raises(Interrupt):
        engine.run(config, str(workdir))
    mp.undo()
    return engine.run(config, str(workdir)), workdir, config, killed


def _final_state(workdir, phase: int, config):
    target = jax.device_get(engine.prepare(config).init_state())
    state, _ = checkpointing.RunCheckpoints(str(workdir)).restore_task(phase, target)
    return state


@pytest.mark.slow
def test_a_stream_from_the_checkpoint_killed_mid_batch_ends_as_the_run_that_pretrains(smoke_run, from_checkpoint):
    """Resumed from step 4 of 24 (within the second batch), the stream from the pre-training checkpoint
    ends with exactly the parameters, optimiser state, anchor, memory and statistics of the run that
    pre-trained itself: every method of Table 1 can start from one checkpoint."""
    _, straight_dir, straight = smoke_run
    resumed, resumed_dir, config, killed = from_checkpoint
    assert killed["step"] == 4 and int(killed["state"].phase_step) == 4
    assert [p.label for p in engine.prepare(config).plan()] == ["stream"]
    a, b = _final_state(straight_dir, 1, smoke_config()), _final_state(resumed_dir, 0, config)
    assert int(a.step) == int(b.step) == 8 + 24  # the stream continues the checkpoint's step count
    for field in ("params", "model_state", "opt_state", "anchor", "memory", "selection"):
        assert leaves_equal(getattr(a, field), getattr(b, field)), field
    assert resumed["final"]["knn"] == straight["final"]["knn"]
    assert resumed["learner"]["rals"] == straight["learner"]["rals"]


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused_before_anything_is_written(tmp_path, from_checkpoint):
    config = from_checkpoint[2].copy_and_resolve_references()
    config.model.width = 16
    with pytest.raises(ConfigError, match=r"online.init_from: the checkpoint's run has model.width=8, this run 16"):
        engine.run(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_before_anything_is_written(tmp_path, smoke_run, from_checkpoint):
    """``init_from`` verifies the arrays it reads against the digests saved with them."""
    import shutil

    source = tmp_path / "source"
    shutil.copytree(smoke_run[1] / "checkpoints" / "tasks" / "0", source / "checkpoints" / "tasks" / "0")
    shutil.copy(smoke_run[1] / "config.json", source / "config.json")
    meta_path = source / "checkpoints" / "tasks" / "0" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    damaged = next(k for k in sorted(meta["digests"]) if k.startswith(".params['model']['backbone']"))
    meta["digests"][damaged] = "0" * 24
    meta_path.write_text(json.dumps(meta))
    config = from_checkpoint[2].copy_and_resolve_references()
    config.online.init_from = str(source / "checkpoints" / "tasks" / "0")
    with pytest.raises(ConfigError, match=r"^online.init_from=.* is damaged: array \['params'\]\['model'\]"
                                          r"\['backbone'\].* does not match the digest saved with it$"):
        engine.run(config, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_the_memory_keeps_the_reservoir_invariants(smoke_run, from_checkpoint):
    _, workdir, results = smoke_run
    config = smoke_config()
    learner = engine.prepare(config)
    memory = _final_state(workdir, 1, config).memory
    x, y = learner.data.dataset.x_train, learner.data.dataset.y_train
    task_of = learner._task_of()
    # Every slot holds a distinct training image of the stated label and task (each image is offered once).
    where = {x[i].tobytes(): i for i in range(len(x))}
    index = [where[image.tobytes()] for image in np.asarray(memory.images)]
    assert len(set(index)) == memory.capacity == int(memory.count) == 64
    np.testing.assert_array_equal(np.asarray(memory.labels), y[index])
    np.testing.assert_array_equal(np.asarray(memory.task_ids), task_of[index])
    assert int(memory.num_seen) == 128 + 8 * 16
    # A batch is offered after its last local step only: mid-batch, the memory holds the completed batches.
    mid = from_checkpoint[3]["state"]
    assert int(mid.memory.num_seen) == 128 + (int(mid.phase_step) // 3) * 16
    # The fill at the stream's start: the first task's samples, offered as a stream of their own.
    state = learner.start_phase(learner.init_state(), learner.plan()[1])
    assert int(state.memory.num_seen) == 128 and int(state.memory.count) == 64
    assert set(np.asarray(state.memory.task_ids).tolist()) == {0}


@pytest.mark.slow
def test_the_continual_learner_starts_from_the_same_checkpoint(tmp_path, smoke_run):
    """Table 1's baselines: task 0 is the checkpoint's (no steps), then the later tasks train."""
    _, straight_dir, _ = smoke_run
    config = _load(ROOT / "configs" / "smoke.py").get_config("finetune,barlow_twins")
    config.train.epochs = 1
    config.eval.after_task, config.eval.final = ("knn",), ("knn",)
    config.continual.init_from = str(straight_dir / "checkpoints" / "tasks" / "0")
    learner = engine.prepare(config)
    assert [p.num_steps for p in learner.plan()] == [0, 4]
    results = engine.run(config, str(tmp_path))
    source = _final_state(straight_dir, 0, smoke_config())
    after_first = _final_state(tmp_path, 0, config)
    assert leaves_equal(after_first.params["model"], source.params["model"])
    assert leaves_equal(after_first.old["params"], source.params["model"])  # the old model of task 1
    assert len(results["matrices"]["knn"]) == 2 and results["matrices"]["knn"][0][0] > 0.5
    assert not leaves_equal(_final_state(tmp_path, 1, config).params["model"], source.params["model"])


@pytest.mark.slow
def test_simclr_streams_a_shuffled_stream_without_pretraining(tmp_path):
    """No pre-training: the stream holds every task, here in one shuffled order, and its first batch draws
    its memory samples from itself."""
    # One device: on four fake CPU devices of a 2-core machine, this run's stream step loaded from the
    # persistent compilation cache stalls in XLA:CPU's all-gather rendezvous (a thread-pool stall, not
    # this program's logic: compiled fresh it passes); the other runs here cover four devices.
    result = run_cli("configs/smoke.py:online,simclr", tmp_path, "--config.online.pretrain_epochs=0",
                     "--config.online.order=shuffled", "--config.online.max_batches=8", "--config.eval.after_task=()",
                     "--config.eval.final=('knn','linear_fast')", "--config.train.num_devices=1")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    stream, memory = results["learner"]["stream"], results["learner"]["memory"]
    assert stream["tasks"] == [0, 1] and stream["pretrained_tasks"] == [] and stream["batches"] == 8
    assert memory["offered"] == 8 * 16 and memory["filled"] == 64 and min(memory["per_task"]) > 0
    assert results["final"]["knn"]["top1"] > 0.5  # chance 0.25


@pytest.mark.slow
def test_the_embedded_cifar10_subset_streams_through_the_cli(tmp_path):
    result = run_cli("configs/online_cifar10.py:barlow_twins,3", tmp_path, "--config.model.width=8",
                     "--config.model.head_scale=0.015625", "--config.online.pretrain_epochs=0",
                     "--config.online.stream_batch=32", "--config.online.max_batches=3",
                     "--config.online.eval_every_batches=0", "--config.eval.after_task=()",
                     "--config.eval.final=('knn',)")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["dataset"] == "cifar10" and results["learner"]["stream"]["batches"] == 3
    assert results["learner"]["rals"]["keep"] == 64 and results["learner"]["rals"]["group_size"] == 16
    assert results["final"]["knn"]["top1"] > 0.15  # ten classes: chance 0.10


def test_a_bad_setting_on_the_command_line_is_one_line(tmp_path):
    result = run_cli("configs/smoke.py:online,corinfomax", tmp_path / "w")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "jaxcssl: error: online.rals=True needs a per-sample or grouped loss, which ssl.method='corinfomax'")
    assert not (tmp_path / "w").exists()


# --- the Table 1 driver (no training) -------------------------------------------------------------
driver = _load(ROOT / "experiments" / "online_ssl.py")


def test_the_table1_configs_are_the_papers_settings():
    get_config = driver.load_config_file(str(ROOT / "configs" / "online_cifar100.py"))
    ours = validate(get_config("barlow_twins,50"))
    assert (ours.learner.name, ours.online.stream_batch, ours.online.steps_per_batch) == ("online", 128, 50)
    assert ours.online.pct_start == 0.25 and ours.online.max_lr == 0.05 and ours.online.memory_size == 10_000
    assert online.memory_batch(ours.online) == 256 and online.rals_keep(ours.online) == 256
    assert ours.online.rals_group_size == 16 and ours.split.class_order == "cassle"
    norals = validate(get_config("simclr,20,norals"))
    assert norals.online.pct_start == 0.5 and norals.online.max_lr == 1.0 and online.memory_batch(norals.online) == 128
    cassle = validate(get_config("simclr,20,cassle"))
    assert (cassle.learner.name, cassle.strategy.name, cassle.train.batch_size, cassle.train.epochs) == (
        "continual", "cassle", 128, 20)
    in100 = validate(driver.load_config_file(str(ROOT / "configs" / "online_imagenet100.py"))("simclr,10"))
    assert in100.online.max_lr == 0.1 and in100.online.memory_size == 20_000 and in100.dataset.image_size == 224


def test_the_driver_pretrains_first_then_starts_every_run_from_that_checkpoint(tmp_path, monkeypatch):
    get_config = driver.load_config_file(str(ROOT / "configs" / "online_cifar10.py"))
    (tmp_path / "simclr" / "cassle_4").mkdir(parents=True)
    (tmp_path / "simclr" / "cassle_4" / "results.json").write_text("{}")
    trained = []
    monkeypatch.setattr(driver.engine, "run", lambda config, workdir, stop: trained.append((workdir, config)))
    driver.run_all(get_config, str(tmp_path), ["simclr"], [8, 4], ["cassle", "ours"], {"online.memory_size": 500},
                   "", None)
    start = str(tmp_path / "simclr" / "ours_4" / "checkpoints" / "tasks" / "0")
    names = [pathlib.Path(w).name for w, _ in trained]
    assert names == ["ours_4", "cassle_8", "ours_8"]  # cassle_4 finished earlier
    first, cassle, ours = (c for _, c in trained)
    assert first.online.pretrain_epochs == 20 and not first.online.init_from
    assert cassle.continual.init_from == start and ours.online.init_from == start and ours.online.pretrain_epochs == 0
    assert all(c.online.memory_size == 500 for c in (first, ours))


def test_the_report_is_table1_beside_the_paper(tmp_path):
    from jaxcssl import evaluation

    run = evaluation.run_info(strategy="online", ssl_method="barlow_twins", dataset="cifar100",
                              split_kind="class_incremental", task_classes=[[0]], seed=0)
    results = evaluation.build_results(config={}, run=run, final={"linear": {"top1": 0.5612, "la": 0.5612}})
    evaluation.write_results(str(tmp_path / "barlow_twins" / "ours_20"), results)
    report = driver.write_report(str(tmp_path), "cifar100", ["barlow_twins"], [20], ["cassle", "ours"])
    lines = report.splitlines()
    assert "| 20 | CaSSLe | not run | 54.35 |" in lines and "| 20 | Ours | 56.12 | 56.64 |" in lines
    assert (tmp_path / "accuracy_vs_steps.png").stat().st_size > 0


def test_the_throughput_presets_build_the_online_stream_step_configs():
    spec = importlib.util.spec_from_file_location("online_throughput", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = throughput  # dataclasses look their module up by name
    spec.loader.exec_module(throughput)
    with_rals, without = (throughput.make_online_config(b) for b in throughput.PRESETS["online"])
    assert (with_rals.online.rals, without.online.rals) == (True, False)
    assert online.memory_batch(with_rals.online) == 256 and online.memory_batch(without.online) == 128
    assert with_rals.train.steps_per_call == with_rals.online.steps_per_batch == 20
    assert throughput.make_online_config(throughput.PRESETS["online-cpu-smoke"][0]).online.rals_group_size == 8
