"""The FUSSL learner: one ensemble step against m single-model steps, the frozen stages of phase 2, the
pseudo-labelling at the end of phase 1, the engine's memory plan of the ensemble, the cross-class split and the configs.

Model: the smoke config (width-8 ResNet-18, heads at 1/64: 16 pseudo-classes, 16x16 synthetic images,
batch 32) with BYOL, whose LARS trust ratios, BatchNorm statistics and EMA target are per member;
four fake CPU devices, so the ensemble step runs with its batch sharded on the data axis.
"""
from __future__ import annotations

import functools
import importlib.util
import pathlib
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcssl import engine, optim, sharding
from jaxcssl.config import validate
from jaxcssl.engine import memory as engine_memory
from jaxcssl.engine.compile import compile_step
from jaxcssl.errors import ConfigError
from jaxcssl.fussl import ensemble
from jaxcssl.fussl import pseudo_labels as pl
from jaxcssl.learners import continual
from jaxcssl.learners import fussl as fussl_learner
from jaxcssl.methods.base import ema_momentum, ema_update
from jaxcssl.strategies.base import ssl_only

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = {"rtol": 2e-4, "atol": 2e-6}


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = _load(ROOT / "configs" / "smoke.py", "smoke").get_config
paper = _load(ROOT / "configs" / "fussl.py", "fussl_config")


def lars_byol():
    """The smoke config with BYOL's reference optimiser (LARS) and warm-up + cosine schedule in phase 1."""
    config = smoke("fussl,byol")
    config.optim.update(name="lars", base_lr=1.0, weight_decay=1e-5)
    config.fussl.phase1.schedule = "cosine"
    return config


@pytest.fixture(scope="module")
def learner():
    return engine.prepare(lars_byol())


def _perturbed(tree, seed: int, scale: float = 0.05):
    """Float leaves plus Gaussian noise of ``scale`` times their spread, drawn on the host."""
    rng = np.random.default_rng(seed)

    def noisy(x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            return x
        return x + scale * (x.std() + 1e-3) * rng.standard_normal(x.shape).astype(x.dtype)

    return jax.tree_util.tree_map(noisy, tree)


def _differing_members(learner, state):
    """The state with members that differ from each other (parameters and EMA targets perturbed)."""
    host = jax.device_get(state)
    members = host.members
    model_state = members.model_state.replace(
        target={**members.model_state.target, "params": _perturbed(members.model_state.target["params"], 2)})
    members = members.replace(params=_perturbed(members.params, 1), model_state=model_state)
    return state.replace(members=sharding.replicate(members, learner.data.mesh))


def _paths(tree) -> dict[str, np.ndarray]:
    return {optim.param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# --- phase 1: the vmapped ensemble step -------------------------------------------------------------------
def test_one_ensemble_step_equals_m_single_model_steps_with_the_same_views(learner):
    m, method, tx = learner.m, learner.method, learner.tx
    assert learner.data.mesh.devices.size == 4 and m == 3 and method.uses_target
    assert learner.config.optim.name == "lars"
    state = _differing_members(learner, learner.init_state())
    phase = learner.plan()[0]
    inputs = learner.inputs(phase)
    before = jax.device_get(state.members)
    after, metrics = compile_step(learner.step_fn(phase.program), learner.data.mesh)(state, inputs)
    after, metrics = jax.device_get((after.members, metrics))

    # The same batch and views, then m plain single-model steps on one device.
    rows = continual.TaskInputs(None, None, inputs.indices, None, inputs.order_key, None, None)
    images = learner.data.device_images[continual.batch_indices(jnp.int32(0), rows, learner.batch_size)]
    views = jax.jit(ensemble.member_views, static_argnums=(2, 3))
    x1, x2 = views(jax.random.fold_in(inputs.step_key, 0), images, learner.views, m)
    hyperparams = inputs.schedule(jnp.int32(0))
    momentum = ema_momentum(jnp.float32(0.0), 1, learner.config.ssl.ema_base)

    @jax.jit
    def single_step(params, model_state, opt_state, v1, v2):
        loss_fn = lambda p: ssl_only(method, p, model_state, v1, v2)
        (loss, (_, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        target = model_state.target
        target = {**target, "params": ema_update(target["params"], params["model"], momentum)}
        return loss, params, model_state.replace(target=target), opt_state

    for i in range(m):
        one = functools.partial(ensemble.member, i=i)
        loss, params, model_state, opt_state = jax.device_get(single_step(
            one(before.params), one(before.model_state), one(before.opt_state), x1[i], x2[i]))
        np.testing.assert_allclose(metrics[f"ssl_{i}"][0], loss, rtol=1e-5)
        for name, want, got in (("params", params, one(after.params)),
                                ("batch_stats", model_state.batch_stats, one(after.model_state.batch_stats)),
                                ("target", model_state.target, one(after.model_state.target)),
                                ("opt_state", opt_state, one(after.opt_state))):
            for path, a in _paths(want).items():
                np.testing.assert_allclose(_paths(got)[path], a, **TOL, err_msg=f"member {i} {name} {path}")
    # The members really are different models.
    kernel = "model/backbone/stage4_block2/conv2/kernel"
    assert not np.allclose(_paths(after.params)[kernel][0], _paths(after.params)[kernel][1])


# --- phase 2: the frozen stages ------------------------------------------------------------------------------
def _labelled(learner, state, chosen: int):
    """Random hard pseudo-labels on the task's samples and ``chosen`` as the chosen member."""
    host = jax.device_get(state)
    n, m = host.labels.classes.shape
    rng = np.random.default_rng(0)
    classes = rng.integers(0, learner.num_classes, (n, m)).astype(np.int32)
    weights = np.zeros((n, m), np.float32)
    weights[:, 0] = 1.0
    stats = host.stats.replace(chosen=np.full_like(host.stats.chosen, chosen))
    return state.replace(labels=sharding.replicate(pl.PseudoLabels(classes, weights), learner.data.mesh),
                         stats=sharding.replicate(stats, learner.data.mesh))


def _frozen(path: str) -> bool:
    return bool(re.fullmatch(r"model/backbone/(stem_[a-z]+|stage[123]_block\d+)/.*", path))


def test_phase_2_copies_the_chosen_member_and_its_frozen_part_leaves_the_first_stages_untouched(learner):
    phases = learner.plan()
    assert [p.program for p in phases] == ["ensemble", "phase2", "phase2_frozen"]
    state = _labelled(learner, _differing_members(learner, learner.init_state()), chosen=1)
    state = jax.device_get(learner.start_phase(state, phases[1]))  # a host copy: every step donates its state
    member = ensemble.member(state.members.params, 1)
    for path, value in _paths(member).items():
        np.testing.assert_array_equal(_paths(state.classifier.params)[path], value, err_msg=path)

    frozen_state = learner.start_phase(sharding.replicate(state, learner.data.mesh), phases[2])
    before = jax.device_get(frozen_state.classifier)
    after, metrics = compile_step(learner.step_fn("phase2_frozen"), learner.data.mesh)(
        frozen_state, learner.inputs(phases[2]))
    after = jax.device_get(after.classifier)
    assert np.isfinite(metrics["ce"]).all()
    params0, params1 = _paths(before.params), _paths(after.params)
    stats0, stats1 = _paths(before.batch_stats), _paths(after.batch_stats)
    assert any(_frozen(p) for p in params0) and any(p.startswith("model/backbone/stage4") for p in params0)
    for path in params0:
        if _frozen(path) or path.startswith("model/predictor/"):
            np.testing.assert_array_equal(params1[path], params0[path], err_msg=path)
        elif path.endswith("kernel"):  # the last stage and the projector learn
            assert not np.array_equal(params1[path], params0[path]), path
    for path in stats0:
        if _frozen(path):
            np.testing.assert_array_equal(stats1[path], stats0[path], err_msg=path)  # BatchNorm in inference mode
        elif path.startswith(("model/backbone/stage4", "model/projector")):
            assert not np.array_equal(stats1[path], stats0[path]), path

    # The first part of phase 2 trains every layer, statistics included.
    before = state.classifier
    after, _ = compile_step(learner.step_fn("phase2"), learner.data.mesh)(
        sharding.replicate(state, learner.data.mesh), learner.inputs(phases[1]))
    after = jax.device_get(after.classifier)
    kernel, mean = "model/backbone/stage1_block1/conv1/kernel", "model/backbone/stage1_block1/norm1/mean"
    assert not np.array_equal(_paths(after.params)[kernel], _paths(before.params)[kernel])
    assert not np.array_equal(_paths(after.batch_stats)[mean], _paths(before.batch_stats)[mean])


# --- pseudo-labelling at the end of phase 1 --------------------------------------------------------------------
def test_the_end_of_phase_1_labels_the_task_from_every_member_and_chooses_the_lowest_error(learner, monkeypatch):
    images = np.asarray(learner.data.device_images)
    row_of = {img.tobytes(): i for i, img in enumerate(images)}
    n, m, k = len(images), learner.m, learner.num_classes
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, k))
    # Members 0 and 1 mostly agree, member 2 votes at random: member 2 must not be chosen.
    table = np.stack([base, base + 0.3 * rng.standard_normal((n, k)), rng.standard_normal((n, k))]).astype(np.float32)

    def outputs(model, params, batch_stats, batch, *, image_size, stats):  # hand-made member outputs
        return jnp.asarray(table[:, [row_of[img.tobytes()] for img in np.asarray(batch)]])

    monkeypatch.setattr(fussl_learner, "_member_outputs", outputs)
    monkeypatch.setattr(learner.config.eval, "batch_size", 60)  # does not divide the 256 samples: padding
    state = learner.end_phase(learner.init_state(), learner.plan()[0])

    task = np.asarray(learner.task_rows[0][1][0])
    want = pl.fuzzy_labels(pl.member_votes(jnp.asarray(table[:, task])), "fuzzy", "score")
    labels = jax.device_get(state.labels)
    np.testing.assert_array_equal(labels.classes[task], want.classes)
    np.testing.assert_allclose(labels.weights[task], want.weights, atol=1e-6)
    # Statistics from the dense labels, in NumPy.
    target = np.zeros((len(task), k))
    for i in range(len(task)):
        np.add.at(target[i], np.asarray(want.classes[i]), np.asarray(want.weights[i]))
    winners = table[:, task].argmax(-1)  # [m, n]
    errors = np.array([np.mean(1.0 - target[np.arange(len(task)), winners[j]]) for j in range(m)])
    hard = (target.max(-1) > 1 - 1e-6).mean()
    results = learner.results(state)["pseudo_labels"]
    assert len(results) == 1
    row = results[0]
    np.testing.assert_allclose(row["member_errors"], errors, rtol=1e-5, atol=1e-6)
    assert row["chosen_member"] == int(np.argmin(errors)) != 2 and int(state.evaluated) == row["chosen_member"]
    assert row["hard_fraction"] == pytest.approx(hard) and row["soft_fraction"] == pytest.approx(1 - hard)
    assert row["dropped_fraction"] == 0 and row["samples"] == len(task) == n
    assert row["distinct_classes"] == int((target.sum(0) > 0).sum())
    assert 0 < hard < 1


# --- memory ----------------------------------------------------------------------------------------------------
def test_the_engine_plan_counts_every_member_and_refuses_with_one_line_before_the_workdir(learner, tmp_path,
                                                                                          monkeypatch):
    state = learner.init_state()
    plan = engine_memory.plan(state, learner.inputs(learner.plan()[0]))
    single_config = lars_byol()
    single_config.fussl.ensemble_size = 1
    single = engine.prepare(single_config)
    single_plan = engine_memory.plan(single.init_state(), single.inputs(single.plan()[0]))
    assert plan.items["members"] == 3 * single_plan.items["members"] > 0  # every member whole on every device
    assert plan.items["classifier"] == single_plan.items["classifier"]  # one phase-2 model whatever m
    assert plan.items["members"] > max(v for k, v in plan.items.items() if k != "members")
    monkeypatch.setattr(engine_memory, "device_capacity", lambda: plan.items["members"])  # a device too small
    with pytest.raises(ConfigError, match=r"^the 'first' step needs .* per device but the device has .*; the largest "
                                          r"item is members \(.*\): use a smaller fussl.ensemble_size, model.width"):
        engine.run(lars_byol(), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


# --- cross-class -----------------------------------------------------------------------------------------------
def _write_cifar100(root: pathlib.Path, coarse_of: np.ndarray, per_class: int = 2) -> pathlib.Path:
    """A CIFAR-100 python folder with ``per_class`` train and one test image per class."""
    rng = np.random.default_rng(0)

    def batch(labels):
        images = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
        return pickle.dumps({b"data": images, b"fine_labels": labels.tolist(),
                             b"coarse_labels": coarse_of[labels].tolist()}, protocol=2)

    folder = root / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(batch(np.repeat(np.arange(100), per_class)))
    (folder / "test").write_bytes(batch(np.arange(100)))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{i:02d}".encode() for i in range(100)],
                                                b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    return folder


def test_cross_class_pretrains_on_half_of_every_cifar100_superclass_and_evaluates_on_the_rest(tmp_path):
    coarse_of = np.random.default_rng(1).permutation(np.repeat(np.arange(20), 5))  # not contiguous
    config = smoke("fussl,barlow_twins")
    config.dataset.update(name="cifar100", source="cifar_archive", path=str(_write_cifar100(tmp_path, coarse_of)))
    config.split.classes_per_task = (100,)
    config.fussl.cross_class.enabled = True
    learner = engine.prepare(config)
    y_train, y_test = learner.data.dataset.y_train, learner.data.dataset.y_test
    pretrain = np.unique(y_train[learner.task_rows[0][1][0]])
    held_out = learner.data.split.task_classes[0]
    assert len(pretrain) == len(held_out) == 50 and not set(pretrain) & set(held_out)
    for s in range(20):
        assert np.isin(np.flatnonzero(coarse_of == s), pretrain).sum() in (2, 3)
    assert set(y_train[learner.data.split.train_indices[0]]) == set(held_out)  # the probe's training data
    assert set(y_test[learner.data.split.test_indices[0]]) == set(held_out)
    assert learner.plan()[-1].seen_tasks == (0,)


def test_cross_class_on_synthetic_classes_grouped_in_blocks():
    config = smoke("fussl,barlow_twins")
    config.fussl.cross_class.enabled = True
    config.fussl.cross_class.classes_per_superclass = 2
    learner = engine.prepare(config)
    labels = learner.data.dataset.y_train
    assert set(labels[learner.task_rows[0][1][0]]) == {0, 2}
    np.testing.assert_array_equal(learner.data.split.task_classes[0], [1, 3])
    config.fussl.cross_class.classes_per_superclass = 0
    with pytest.raises(ConfigError, match="dataset 'synthetic' from 'synthetic' has no coarse labels"):
        engine.prepare(config)


# --- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("fussl.ensemble_size", 0, "fussl.ensemble_size=0 must be an integer >= 1"),
    ("fussl.labels", "fuzz", "fussl.labels='fuzz' is not one of: fuzzy, hard, hard_all, soft"),
    ("fussl.cycles", 3, "fussl.cycles=3 does not divide train.epochs=4"),
    ("fussl.phase2.unfrozen_fraction", 1.5, r"fussl.phase2.unfrozen_fraction=1.5 must lie in \[0, 1\]"),
    ("strategy.name", "cromo", "strategy.name='cromo' with learner.name='fussl': FUSSL trains each task alone"),
    ("fussl.variant", "continued_x", "fussl.variant='continued_x' is not one of: fussl, continued"),
])
def test_bad_settings_are_one_line_before_any_data_is_read(key, value, message):
    config = smoke("fussl,barlow_twins")
    config.update_from_flattened_dict({key: value})
    config.dataset.update(source="npz", name="mine", path="/nonexistent.npz")  # never read
    with pytest.raises(ConfigError, match=f"^{message}"):
        engine.prepare(config)


def test_wmse_whitening_must_exceed_the_latents():
    config = smoke("fussl,wmse")
    config.ssl.loss.whitening_size = 16
    with pytest.raises(ConfigError, match="whitening_size=16 must exceed the 16 latents"):
        engine.prepare(config)


@pytest.mark.parametrize("setting", [s for s in paper.SETTINGS if s != "cifar10_subset"])
def test_the_paper_recipe_for_every_setting_and_objective(setting):
    for objective in ("simclr", "byol", "simsiam", "swav", "wmse", "barlow_twins"):
        c = validate(paper.get_config(f"{setting},{objective}"))
        assert (c.learner.name, c.train.epochs, c.train.batch_size, c.fussl.phase2.epochs) == ("fussl", 800, 1024, 400)
        assert (c.optim.name, c.optim.base_lr, c.optim.base_batch, c.optim.weight_decay) == ("adam", 0.2, 1024, 1e-6)
        assert (c.fussl.phase1.schedule, c.fussl.phase1.drop_epochs, c.fussl.phase1.late_lr) == ("step", 10, 0.001)
        assert (c.fussl.phase2.lr, c.fussl.phase2.unfrozen_fraction, c.fussl.ensemble_size) == (0.001, 0.25, 3)
        assert (c.fussl.projector, c.fussl.projector_dim, c.augment.preset) == ("paper", 1000, "simclr")
        assert c.model.backbone == "resnet50" and c.fussl.cross_class.enabled == (setting == "cifar100_cross_class")
    assert validate(paper.get_config(f"{setting},byol,progressive")).fussl.cycles == 4
    assert validate(paper.get_config(f"{setting},swav,m5")).fussl.ensemble_size == 5
    continued = validate(paper.get_config(f"{setting},barlow_twins,continued"))
    assert (continued.fussl.variant, continued.fussl.ensemble_size) == ("continued", 1)
    method = validate(paper.get_config(f"{setting},byol,method_recipe"))
    assert (method.optim.name, method.fussl.phase1.schedule) == ("lars", "cosine")


def test_the_cpu_setting_is_the_paper_recipe_at_a_fiftieth_of_the_epochs():
    c, full = validate(paper.get_config("cifar10_subset,barlow_twins")), paper.get_config("cifar10,barlow_twins")
    assert (c.train.epochs * 50, c.fussl.phase2.epochs * 50, c.fussl.phase1.drop_epochs) == (800, 400, 1)
    assert (c.dataset.source, c.dataset.image_size, c.model.width, c.train.batch_size) == ("image_folder", 16, 8, 128)
    for group in ("optim", "ssl", "augment"):
        assert c[group].to_dict() == full[group].to_dict(), group
    assert c.fussl.phase2.to_dict() == {**full.fussl.phase2.to_dict(), "epochs": 8}
