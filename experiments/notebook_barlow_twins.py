# %% [markdown]
# # Barlow Twins by hand with jaxcssl's pure pieces
#
# The training engine (`python -m jaxcssl.main`) wires everything together; this notebook shows
# that its pieces are ordinary JAX functions you can compose yourself:
#
# * data: `jaxcssl.data.datasets.load_dataset` (here the 6,000-image CIFAR-10 JPEG subset shipped with the
#   package, or `--data=synthetic`),
# * model: `jaxcssl.models.resnet18` + `jaxcssl.methods.projector_for("barlow_twins", ...)`,
# * views: `jaxcssl.methods.ssl_views` + `jaxcssl.data.augment.augment` (on-device, per-sample, jittable),
# * objective: `jaxcssl.losses.barlow_twins`, a pure function of two `[N, D]` embeddings,
# * optimiser: `jaxcssl.optim.lars` (an optax transformation),
# * evaluation: `jaxcssl.evaluation.extract_features` + `knn_accuracy`.
#
# Run it as a script (`python experiments/notebook_barlow_twins.py`, about a minute on a laptop
# CPU) or cell by cell in Jupyter / VS Code. Flags: `--steps`, `--data=cifar10|synthetic`,
# `--summary=PATH` (writes the losses and accuracies as JSON).

# %%
from __future__ import annotations

import argparse
import functools
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcssl import evaluation, losses, optim
from jaxcssl.data import augment as aug
from jaxcssl.data.datasets import DEMO_CIFAR10_SUBSET, load_dataset
from jaxcssl.methods import method_defaults, projector_for, ssl_views
from jaxcssl.models import resnet18

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10")
parser.add_argument("--summary", default="")
args, _ = parser.parse_known_args()  # known args only: Jupyter passes its own

# %% [markdown]
# ## Data: uint8 images, kept on the device
# The demo subset has 500 training and 100 test images per CIFAR-10 class. Images stay uint8 on
# the device; augmentation turns them into normalised float32 views inside the compiled step.

# %%
if args.data == "cifar10":
    data = load_dataset("cifar10", "image_folder", path=DEMO_CIFAR10_SUBSET)
else:
    data = load_dataset("synthetic", "synthetic", synthetic=dict(
        num_classes=10, train_per_class=200, test_per_class=40, image_size=32, noise=0.3))
print(data)
train_images = jax.device_put(data.x_train)
image_size = data.image_shape[0]
mean, std = aug.DATASET_STATS[data.name]

# %% [markdown]
# ## Model: backbone f and projector g
# A narrow ResNet-18 (width 8 instead of 64, 64 features) with the CIFAR stem, and the reference
# Barlow Twins projector (Linear-BN-ReLU twice, then Linear-BN; 2048 wide) at 1/32 of its width.

# %%
class BarlowTwinsNet(nn.Module):
    """x -> (h = f(x), z = g(h))."""

    width: int = 8
    head_scale: float = 1 / 32

    def setup(self):
        self.backbone = resnet18(width=self.width)
        self.projector = projector_for("barlow_twins", "cifar10", scale=self.head_scale)

    def __call__(self, x, train: bool = True):
        h = self.backbone(x, train=train)
        return h, self.projector(h, train=train)


model = BarlowTwinsNet()
variables = model.init(jax.random.key(0), jnp.zeros((2, image_size, image_size, 3)), train=True)
params, batch_stats = variables["params"], variables["batch_stats"]
print("parameters:", sum(x.size for x in jax.tree_util.tree_leaves(params)))

# %% [markdown]
# ## The objective is a pure, jittable function
# With the reference arguments (λ = 5e-3, loss scale 0.1, unbiased std) it reproduces the official
# CroMo-Mixup `BarlowTwinsLoss`. Identical views give a small loss, independent ones a large one.

# %%
defaults = method_defaults("barlow_twins", "cifar10")  # Table 5: LARS, lr 0.3 x batch/256, wd 1e-4
barlow_twins = jax.jit(functools.partial(losses.barlow_twins, **defaults["loss"]))
z = jax.random.normal(jax.random.key(1), (256, 32))
print("identical views:", float(barlow_twins(z, z)),
      " independent views:", float(barlow_twins(z, jax.random.normal(jax.random.key(2), (256, 32)))))

# %% [markdown]
# ## Two augmented views and one compiled training step
# `ssl_views("barlow_twins", ...)` is the reference recipe: random resized crop, flip, colour jitter,
# grayscale, and solarisation on the second view. Each view passes through the network separately
# (its own BatchNorm statistics), as in the reference code.

# %%
view1, view2 = ssl_views("barlow_twins", image_size, mean, std)
peak_lr = defaults["base_lr"] * args.batch / 256
schedule = optax.warmup_cosine_decay_schedule(0.0, peak_lr, max(args.steps // 10, 1), args.steps)
tx = optim.lars(schedule, weight_decay=defaults["weight_decay"])
opt_state = tx.init(params)


@jax.jit
def train_step(params, batch_stats, opt_state, all_images, key):
    """Sample a batch, augment two views, forward both, Barlow Twins loss, LARS update."""
    k_batch, k1, k2 = jax.random.split(key, 3)
    images = all_images[jax.random.choice(k_batch, all_images.shape[0], (args.batch,), replace=False)]
    x1, x2 = aug.augment(k1, images, view1), aug.augment(k2, images, view2)

    def loss_fn(params):
        (_, z1), updates = model.apply({"params": params, "batch_stats": batch_stats}, x1, train=True,
                                       mutable=["batch_stats"])
        (_, z2), updates = model.apply({"params": params, "batch_stats": updates["batch_stats"]}, x2, train=True,
                                       mutable=["batch_stats"])
        return barlow_twins(z1, z2), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss


# %% [markdown]
# ## kNN accuracy of frozen features (before training)
# Eval-mode backbone features, L2-normalised, 200 nearest neighbours weighted by exp(cos / 0.5).

# %%
@jax.jit
def embed(params, batch_stats, images):
    """uint8 images -> eval-mode backbone features h (running BatchNorm statistics)."""
    h, _ = model.apply({"params": params, "batch_stats": batch_stats},
                       aug.preprocess(images, image_size, mean, std), train=False)
    return h


def knn_top1(params, batch_stats) -> float:
    embed_fn = functools.partial(embed, params, batch_stats)
    bank = evaluation.extract_features(embed_fn, data.x_train, batch_size=500)
    queries = evaluation.extract_features(embed_fn, data.x_test, batch_size=500)
    return evaluation.knn_accuracy(bank, data.y_train, queries, data.y_test, data.num_classes, k=200, temperature=0.5)


knn_before = knn_top1(params, batch_stats)
print(f"kNN top-1 at initialisation: {100 * knn_before:.1f}% (chance {100 / data.num_classes:.0f}%)")

# %% [markdown]
# ## Train

# %%
key = jax.random.key(42)
history = []
start = time.time()
for step in range(args.steps):
    params, batch_stats, opt_state, loss = train_step(
        params, batch_stats, opt_state, train_images, jax.random.fold_in(key, step))
    history.append(float(loss))
    if step % 5 == 0 or step == args.steps - 1:
        print(f"step {step:3d}  loss {history[-1]:.3f}  lr {float(schedule(step)):.3f}  ({time.time() - start:.0f}s)")

# %% [markdown]
# ## kNN accuracy after training

# %%
knn_after = knn_top1(params, batch_stats)
print(f"kNN top-1 after {args.steps} steps: {100 * knn_after:.1f}% (at initialisation {100 * knn_before:.1f}%)")
if args.summary:
    with open(args.summary, "w") as f:
        json.dump(dict(losses=history, knn_top1=knn_after, knn_top1_init=knn_before,
                       chance=1 / data.num_classes), f)
