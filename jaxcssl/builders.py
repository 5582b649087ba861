"""From a validated config to the pieces of a run: data, split, model, method, strategy, state.

:func:`prepare` does every check that needs the data (a split that does not fit the dataset, a
batch larger than a task, a batch that does not divide over the devices) before anything compiles.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxcssl import replay, sharding
from jaxcssl.config import ConfigError
from jaxcssl.data import augment, datasets, splits
from jaxcssl.methods import SSLMethod, build_method, method_defaults
from jaxcssl.models import heads, resnet
from jaxcssl.strategies import Strategy, build_strategy
from jaxcssl.strategies.base import ModelState
from jaxcssl.train_step import TrainState

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Run:
    """Everything fixed for the whole run."""

    dataset: datasets.Dataset
    split: splits.TaskSplit
    phase_indices: list[np.ndarray]  # per phase: int32 [S, n] (S > 1 for the interleaved schedule)
    phase_tasks: list[tuple[int, ...]]  # per phase: the split tasks it trains
    method: SSLMethod
    strategy: Strategy
    views: tuple[augment.ViewConfig, augment.ViewConfig]
    image_size: int
    batch_size: int
    stats: tuple[tuple[float, ...], tuple[float, ...]]  # normalisation mean, std
    mesh: Mesh
    device_images: jax.Array  # uint8 training images, replicated
    device_labels: jax.Array  # int32 training labels (memory bookkeeping only)

    @property
    def num_tasks(self) -> int:
        return len(self.phase_indices)


def load_dataset(config) -> datasets.Dataset:
    d = config.dataset
    return datasets.load_dataset(
        d.name, d.source, path=d.path, data_dir=d.data_dir, cache_dir=d.cache_dir, label_mode=d.label_mode,
        classes=tuple(d.classes), image_size=d.image_size, synthetic=d.synthetic.to_dict(),
    )


def make_split(config, dataset: datasets.Dataset) -> splits.TaskSplit:
    s = config.split
    try:
        return splits.make_split(
            dataset, s.kind, classes_per_task=tuple(s.classes_per_task), num_tasks=s.num_tasks,
            class_order=s.class_order, seed=s.order_seed,
        )
    except ValueError as error:
        raise ConfigError(f"split: {error}") from None


def _phases(config, split: splits.TaskSplit, joint: bool) -> tuple[list[np.ndarray], list[tuple[int, ...]]]:
    tasks = [np.asarray(t, np.int32) for t in split.train_indices]
    if joint:
        return [np.concatenate(tasks)[None, :]], [tuple(range(len(tasks)))]
    if config.split.schedule == "interleaved":
        n = min(len(t) for t in tasks)
        return [np.stack([t[:n] for t in tasks])], [tuple(range(len(tasks)))]
    return [t[None, :] for t in tasks], [(i,) for i in range(len(tasks))]


def build_backbone(config) -> resnet.ResNet:
    m = config.model
    norm = m.norm or method_defaults(config.ssl.method, config.dataset.name).get("norm", "batch")
    factory = resnet.resnet18 if m.backbone == "resnet18" else resnet.resnet50
    return factory(width=m.width, stem=m.stem, norm=norm, dtype=_DTYPES[m.dtype])


def build_ssl_method(config, dataset_name: str) -> SSLMethod:
    return build_method(
        config.ssl.method, dataset=dataset_name, backbone=build_backbone(config),
        head_scale=config.model.head_scale, dtype=_DTYPES[config.model.dtype],
        loss_kwargs=config.ssl.loss.to_dict() or None, **config.ssl.options.to_dict(),
    )


def prepare(config) -> Run:
    """Load the data, build the split, method, strategy and mesh; raise on anything that cannot work."""
    mesh = sharding.make_mesh(config.train.num_devices)
    sharding.check_batch_divisible(config.train.batch_size, mesh)
    if config.model.dtype == "bfloat16" and mesh.devices.flat[0].platform == "cpu":
        raise ConfigError(
            "model.dtype='bfloat16' on CPU devices: XLA:CPU (jaxlib 0.11) computes NaN in bfloat16 "
            "inference-mode convolutions and gains no speed; use model.dtype=float32 on CPUs, bfloat16 on GPUs/TPUs"
        )
    dataset = load_dataset(config)
    split = make_split(config, dataset)
    method = build_ssl_method(config, config.dataset.name)
    distill_predictor = heads.DistillPredictor(
        hidden_dim=max(8, round(config.strategy.distill_hidden_dim * config.model.head_scale)),
        out_dim=method.model.projector.out_dim,
        dtype=_DTYPES[config.model.dtype],
    )
    strategy = build_strategy(config, distill_predictor)
    if strategy.uses_replay:
        sharding.check_batch_divisible(config.strategy.replay_batch, mesh, "strategy.replay_batch")
    phase_indices, phase_tasks = _phases(config, split, strategy.joint)
    image_size = config.augment.image_size or dataset.image_shape[0]
    mean, std = augment.DATASET_STATS.get(config.dataset.name, augment.DATASET_STATS["synthetic"])
    views = augment.ssl_views(config.augment.preset or config.ssl.method, image_size, mean, std)
    return Run(
        dataset=dataset, split=split, phase_indices=phase_indices, phase_tasks=phase_tasks, method=method,
        strategy=strategy, views=views, image_size=image_size, batch_size=config.train.batch_size,
        stats=(tuple(mean), tuple(std)), mesh=mesh,
        device_images=sharding.replicate(dataset.x_train, mesh),
        device_labels=sharding.replicate(dataset.y_train.astype(np.int32), mesh),
    )


def _copy(tree: Any) -> Any:
    return jax.tree_util.tree_map(jnp.array, tree)


def init_train_state(config, run: Run, tx) -> TrainState:
    """The state before the first step, replicated over the mesh."""
    key = jax.random.PRNGKey(config.seed)
    k_model, k_distill = jax.random.split(jax.random.fold_in(key, 7))
    model = run.method.init_variables(k_model, (run.image_size, run.image_size, run.dataset.image_shape[-1]))
    params, batch_stats = {"model": model["params"]}, {"model": model["batch_stats"]}
    if run.strategy.uses_distill_predictor:
        dim = run.method.model.projector.out_dim
        distill = run.strategy.distill_predictor.init(k_distill, jnp.zeros((2, dim)), train=True)
        params["distill"], batch_stats["distill"] = distill["params"], distill["batch_stats"]
    loss_state = {slot: run.method.init_loss_state() for slot in ("ssl", "distill", "mixup")}
    target = None
    if run.method.uses_target:
        target = {"params": _copy(model["params"]), "batch_stats": _copy(model["batch_stats"])}
    capacity = config.strategy.samples_per_task * max(run.num_tasks - 1, 1) if run.strategy.uses_replay else 1
    # Orbax cannot save zero-size arrays: an unused feature column is one float per slot.
    feature_dim = run.method.model.projector.out_dim if run.strategy.stores_features else 1
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        task_step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=ModelState(batch_stats=batch_stats, loss_state=loss_state, target=target),
        opt_state=tx.init(params),
        old={"params": _copy(model["params"]), "batch_stats": _copy(model["batch_stats"])},
        replay=replay.create(capacity, run.dataset.image_shape, feature_dim),
        strategy_state=run.strategy.init_state(params),
        key=key,
    )
    return sharding.replicate(state, run.mesh)
