"""data.placement: the host input pipeline gives the device placement's batches and results, bit for bit;
``auto`` chooses by size; a learner without a host pipeline refuses ``host`` in one line."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from support import smoke_config

from jaxcssl import builders, engine, sharding
from jaxcssl.config import ConfigError, validate
from jaxcssl.data.host_feed import HostFeed
from jaxcssl.learners import continual


def _results(workdir) -> dict:
    results = json.loads((workdir / "results.json").read_text())
    return {k: results[k] for k in ("final", "matrices", "history")}


def _losses(workdir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["train/loss"]) for row in rows if "train/loss" in row]


@pytest.mark.parametrize("arg,steps_per_call", [("cromo", 3), ("kaizen,simclr", 1)])
def test_host_and_device_placements_train_identically(tmp_path, arg, steps_per_call):
    """CroMo (replay memory filled at the task end from the task's images, 3 fused steps per call and a
    1-step remainder) and Kaizen (its own memory selection, training labels in the batch)."""
    runs = {}
    for placement in ("device", "host"):
        config = smoke_config(arg)
        config.train.epochs = 1  # 4 steps per task: a call of 3 fused steps, then one of 1
        config.train.steps_per_call = steps_per_call
        config.train.log_every_steps = 1
        config.data.placement = placement
        engine.run(config, str(tmp_path / placement))
        runs[placement] = tmp_path / placement
    assert _losses(runs["host"]) == _losses(runs["device"]) and len(_losses(runs["host"])) >= 4
    assert _results(runs["host"]) == _results(runs["device"])


def test_the_host_feed_gathers_the_indices_the_step_draws():
    config = validate(smoke_config("finetune"))
    mesh = builders.make_mesh(config)
    data = builders.prepare_data(config, mesh, host_supported=True)
    learner = continual.ContinualLearner(config, data)
    phase = learner.plan()[1]
    inputs = learner.inputs(phase)
    expected = np.stack([np.asarray(continual.batch_indices(jax.numpy.int32(s), inputs, learner.batch_size))
                         for s in range(5, 8)])
    host = HostFeed(data.dataset.x_train, data.dataset.y_train, mesh)
    rows = np.asarray(continual.call_indices(5, inputs.indices, inputs.order_key, batch_size=learner.batch_size,
                                             steps=3))
    np.testing.assert_array_equal(rows, expected)
    images, labels = host.gather(rows)
    assert images.shape == (3, learner.batch_size, *data.dataset.x_train.shape[1:])
    assert images.sharding.spec == sharding.steps_batch_sharded(mesh).spec
    np.testing.assert_array_equal(np.asarray(images), data.dataset.x_train[expected])
    np.testing.assert_array_equal(np.asarray(labels), data.dataset.y_train[expected])


def test_the_host_feed_prepares_the_next_call_while_one_runs():
    images, labels = np.arange(40, dtype=np.uint8).reshape(10, 2, 2, 1), np.arange(10)
    mesh = sharding.make_mesh(4)
    feed = HostFeed(images, labels, mesh)
    asked = []

    def rows(start):
        return lambda: asked.append(start) or np.arange(start, start + 8).reshape(2, 4) % 10

    first = feed.get("a", rows(0), "b", rows(8))
    second = feed.get("b", rows(99), None, None)  # prepared ahead: its own index function is not called again
    assert asked == [0, 8]
    np.testing.assert_array_equal(np.asarray(first[1]), np.arange(8).reshape(2, 4))
    np.testing.assert_array_equal(np.asarray(second[1]), np.arange(8, 16).reshape(2, 4) % 10)
    third = feed.get("c", rows(3), None, None)  # not the one prepared: gathered now
    np.testing.assert_array_equal(np.asarray(third[1]), np.arange(3, 11).reshape(2, 4) % 10)


GIB = 2**30


@pytest.mark.parametrize("requested,size,capacity,host_ok,expected", [
    ("auto", 4 * GIB, 16 * GIB, True, "device"),   # a quarter of the device: fits the half allowed
    ("auto", 10 * GIB, 16 * GIB, True, "host"),    # ImageNet-100-like on a 16 GB TPU core
    ("auto", 10 * GIB, None, True, "device"),      # CPU: the backend reports no capacity
    ("auto", 10 * GIB, 16 * GIB, False, "device"),  # the learner has no host pipeline
    ("host", 1, 16 * GIB, True, "host"),
    ("device", 10 * GIB, 16 * GIB, True, "device"),
])
def test_auto_placement_by_size(requested, size, capacity, host_ok, expected):
    placement, why = builders.resolve_placement(requested, size, 0.5, host_ok, capacity)
    assert placement == expected and why


def test_bad_placements_are_one_line():
    config = smoke_config("finetune")
    config.data.placement = "disk"
    with pytest.raises(ConfigError, match="data.placement='disk' is not one of"):
        validate(config)
    config = validate(smoke_config("finetune"))
    config.data.placement = "host"
    with pytest.raises(ConfigError, match="data.placement='host' is not supported by learner 'continual'"):
        builders.prepare_data(config, builders.make_mesh(config), host_supported=False)
