"""From a validated config to what every learner shares: the data, its split, the mesh, the model.

:func:`prepare_data` does every check that needs the data (a split that does not fit the dataset,
a batch that does not divide over the devices) before anything compiles. Learners build their own
pieces (SSL method, strategy, views, state) from these.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from jaxcssl import sharding
from jaxcssl.data import augment, datasets, splits
from jaxcssl.errors import ConfigError
from jaxcssl.methods import REGISTRY as METHODS
from jaxcssl.methods import SSLMethod, build_method, method_defaults
from jaxcssl.models import resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Data:
    """The dataset of a run, split into tasks, and where it lives."""

    dataset: datasets.Dataset
    split: splits.TaskSplit
    image_size: int  # the size the model sees (``augment.image_size`` or the dataset's)
    stats: tuple[tuple[float, ...], tuple[float, ...]]  # normalisation mean, std
    mesh: Mesh
    placement: str  # "device" | "host" (data.placement resolved)
    device_images: Optional[jax.Array]  # uint8 training images, replicated (placement "device"; else None)
    device_labels: Optional[jax.Array]  # int32 training labels, replicated (placement "device"; else None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the model's input."""
        return (self.image_size, self.image_size, self.dataset.image_shape[-1])


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


def build_backbone(config) -> resnet.ResNet:
    m = config.model
    norm = m.norm or method_defaults(config.ssl.method, config.dataset.name).get("norm", "batch")
    factory = resnet.resnet18 if m.backbone == "resnet18" else resnet.resnet50
    return factory(width=m.width, stem=m.stem, norm=norm, dtype=DTYPES[m.dtype])


def build_ssl_method(config, num_classes: int | None = None) -> SSLMethod:
    """``config.ssl.method`` around the config's backbone; ``num_classes`` sizes a classifier (supervised)."""
    projector = None
    if config.ssl.projector_dims:  # the reference projector's layout with other widths (hidden..., output)
        dims = tuple(int(d) for d in config.ssl.projector_dims)
        layout = METHODS.get(config.ssl.method).projector_spec(config.dataset.name)
        projector = dataclasses.replace(layout, hidden_dims=dims[:-1], out_dim=dims[-1])
    return build_method(
        config.ssl.method, dataset=config.dataset.name, backbone=build_backbone(config),
        head_scale=config.model.head_scale, dtype=DTYPES[config.model.dtype],
        loss_kwargs=config.ssl.loss.to_dict() or None, projector=projector, num_classes=num_classes,
        **config.ssl.options.to_dict(),
    )


def make_mesh(config) -> Mesh:
    """The ``data`` mesh; refuses a batch that does not divide over it and bf16 on CPUs."""
    mesh = sharding.make_mesh(config.train.num_devices)
    sharding.check_batch_divisible(config.train.batch_size, mesh)
    if config.model.dtype == "bfloat16" and mesh.devices.flat[0].platform == "cpu":
        raise ConfigError(
            "model.dtype='bfloat16' on CPU devices: XLA:CPU (jaxlib 0.11) computes NaN in bfloat16 "
            "inference-mode convolutions and gains no speed; use model.dtype=float32 on CPUs, bfloat16 on GPUs/TPUs"
        )
    return mesh


def resolve_placement(requested: str, dataset_bytes: int, device_fraction: float, host_supported: bool,
                      capacity: Optional[int]) -> tuple[str, str]:
    """``data.placement`` -> ``("device" | "host", why)``: ``auto`` keeps the training set on the
    device when, replicated, it takes at most ``device_fraction`` of the device's ``capacity``."""
    size = f"{dataset_bytes / 2**30:.2f} GiB" if dataset_bytes >= 2**30 else f"{dataset_bytes / 2**20:.1f} MiB"
    if requested != "auto":
        return requested, f"data.placement={requested!r}"
    if not host_supported:
        return "device", "the learner reads the training set on the device only"
    if capacity is None:
        return "device", f"the backend reports no device memory (the training set takes {size})"
    budget = device_fraction * capacity
    if dataset_bytes <= budget:
        return "device", f"the training set ({size}) fits data.device_fraction={device_fraction} of the device"
    return "host", (f"the training set ({size}) exceeds data.device_fraction={device_fraction} of the device's "
                    f"{capacity / 2**30:.2f} GiB")


def prepare_data(config, mesh: Mesh, host_supported: bool = False) -> Data:
    """Load the data and build the split; raise on anything that cannot work.

    ``host_supported``: the learner can read its batches from host memory (``data.placement``)."""
    dataset = load_dataset(config)
    counts = np.bincount(dataset.y_train, minlength=dataset.num_classes)
    empty = [dataset.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise ConfigError(f"dataset {dataset.name!r}: class(es) {', '.join(map(repr, empty[:5]))} have no training "
                          f"images{' (and more)' if len(empty) > 5 else ''}; drop them with dataset.classes")
    split = make_split(config, dataset)
    image_size = config.augment.image_size or dataset.image_shape[0]
    mean, std = augment.DATASET_STATS.get(config.dataset.name, augment.DATASET_STATS["synthetic"])
    if config.data.placement == "host" and not host_supported:
        raise ConfigError(f"data.placement='host' is not supported by learner {config.learner.name!r} "
                          "(it reads the training set on the device); use 'device' or 'auto'")
    placement, why = resolve_placement(config.data.placement, dataset.x_train.nbytes + dataset.y_train.nbytes,
                                       config.data.device_fraction, host_supported, sharding.device_capacity())
    logging.info("data placement: %s (%s)", placement, why)
    on_device = placement == "device"
    return Data(
        dataset=dataset, split=split, image_size=image_size, stats=(tuple(mean), tuple(std)), mesh=mesh,
        placement=placement,
        device_images=sharding.replicate(dataset.x_train, mesh) if on_device else None,
        device_labels=sharding.replicate(dataset.y_train.astype(np.int32), mesh) if on_device else None,
    )
