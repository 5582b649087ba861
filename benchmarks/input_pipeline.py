"""Input-pipeline throughput of ``data.placement="host"``: images per second the host delivers to the step.

Times exactly what the continual learner does per compiled call with the host placement: the call's
``[k, B]`` indices (:func:`jaxcssl.learners.continual.call_indices`, on the host CPU), the gather of
this process's rows from host memory and the transfer (:class:`jaxcssl.data.host_feed.HostFeed`),
one call prepared ahead while the previous one is consumed. The consumer only waits for the arrays
(no training step), so the rate is the pipeline's ceiling. Host cores used = process CPU time / wall.

    .venv/bin/python benchmarks/input_pipeline.py --data cifar10_jpeg --path '../shared/data/cifar10-jpeg-*.tar.gz'
    .venv/bin/python benchmarks/input_pipeline.py --data synthetic --image_size 224

Prints one JSON line per measurement (device, date, command, numbers); ``--markdown`` adds a table row.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import jax
import numpy as np

from jaxcssl import sharding
from jaxcssl.data import datasets
from jaxcssl.data.host_feed import HostFeed
from jaxcssl.engine import rng
from jaxcssl.learners.continual import call_indices


def load_images(args) -> np.ndarray:
    if args.data == "cifar10_jpeg":
        return datasets.load_dataset("cifar10", "image_folder", path=args.path, cache_dir=args.cache_dir).x_train
    generator = np.random.default_rng(0)
    return generator.integers(0, 256, (args.num_images, args.image_size, args.image_size, 3), dtype=np.uint8)


def measure(images: np.ndarray, batch: int, steps_per_call: int, calls: int, num_devices: int) -> dict:
    mesh = sharding.make_mesh(num_devices)
    feed = HostFeed(images, np.zeros(len(images), np.int32), mesh)
    cpu = jax.local_devices(backend="cpu")[0]
    rows = jax.device_put(np.arange(len(images), dtype=np.int32)[None], cpu)
    order_key = jax.device_put(rng.phase_key(0, "epoch_order", 0), cpu)

    def indices(call: int):
        return lambda: np.asarray(call_indices(call * steps_per_call, rows, order_key, batch_size=batch,
                                               steps=steps_per_call))

    jax.block_until_ready(feed.get(-1, indices(0)))  # compile call_indices once
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for call in range(calls):
        arrays = feed.get(call, indices(call), call + 1 if call + 1 < calls else None, indices(call + 1))
        jax.block_until_ready(arrays)
    wall, cpu_s = time.perf_counter() - start_wall, time.process_time() - start_cpu
    delivered = calls * steps_per_call * batch
    return {"images_per_s": round(delivered / wall, 1), "host_cores_used": round(cpu_s / wall, 2),
            "images_per_s_per_core": round(delivered / max(cpu_s, 1e-9), 1), "wall_s": round(wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("cifar10_jpeg", "synthetic"), default="synthetic")
    parser.add_argument("--path", default="../shared/data/cifar10-jpeg-*.tar.gz")
    parser.add_argument("--cache_dir", default="")
    parser.add_argument("--image_size", type=int, default=224, help="synthetic images' side")
    parser.add_argument("--num_images", type=int, default=4096, help="synthetic images held in host memory")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps_per_call", type=int, default=1)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--num_devices", type=int, default=0, help="0: every local device")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    images = load_images(args)
    device = jax.devices()[0]
    for batch in args.batch:
        row = {
            "device": getattr(device, "device_kind", device.platform), "platform": device.platform,
            "devices": args.num_devices or jax.device_count(), "jax": jax.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv), "data": args.data, "image_shape": list(images.shape[1:]),
            "batch": batch, "steps_per_call": args.steps_per_call, "calls": args.calls,
            **measure(images, batch, args.steps_per_call, args.calls, args.num_devices),
        }
        print(json.dumps(row), flush=True)
        if args.markdown:
            print(f"| {row['device']} | {row['date']} | {row['data']} | {'x'.join(map(str, row['image_shape']))} | "
                  f"{batch} | {row['images_per_s']:,.0f} | {row['host_cores_used']} | "
                  f"{row['images_per_s_per_core']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
