"""The settings of the online-SSL paper's Table 1 as configs: the stream runs and their baselines.

``table1_config(dataset, method, steps, run)`` with ``run`` one of :data:`RUNS`:

* ``ours`` / ``norals``: the online learner (Sec. 5.3): stream batch 128, N = ``steps`` local steps per
  batch, the memory of 10,000 (ImageNet-100: 20,000) samples, 128 memory samples per step (256 with
  RALS, which keeps 256 of 384; Barlow Twins in groups of 16), SLCLRS with the paper's maximum rate,
  the rate's rise over half the steps (a quarter for N = 50); pre-training on the first task first.
* ``cassle`` / ``offline``: the continual learner at the same budget (Sec. 5.2, Table 1): each later
  task, or all the data at once (the first task included), for ``steps`` epochs at batch 128, as many
  steps as the stream spends on that data.

All four start from the same pre-trained model when given its checkpoint
(``--config.online.init_from`` / ``--config.continual.init_from``, what ``experiments/online_ssl.py``
does); without it ``ours`` and ``norals`` pre-train themselves and ``cassle`` trains the first task
for the pre-training's epochs. The SSL settings the paper does not give are those of the CaSSLe
scripts it builds on ("we build upon the implementation provided by [10]", Sec. 5.3): :data:`CASSLE`.
"""
from __future__ import annotations

import ml_collections

from jaxcssl.config import apply_method, base_config
from jaxcssl.errors import ConfigError
from jaxcssl.learners.online import PAPER_MAX_LR

RUNS = ("ours", "norals", "cassle", "offline")
STEP_BUDGETS = (10, 20, 50, 100)
# CaSSLe's bash_files/continual/{cifar,imagenet-100/class}/{barlow,simclr}.sh: LARS (eta 0.02, clipped,
# biases and norms excluded), warm-up cosine, lr x batch/256, batch 256 (ImageNet-100: 128 on 2 GPUs).
BARLOW_LOSS = dict(lambda_offdiag=5e-3, scale=0.1, eps=1e-5, unbiased_std=False)  # solo-learn, --scale_loss 0.1
CASSLE = {
    ("cifar100", "barlow_twins"): dict(base_lr=0.3, weight_decay=1e-4, loss=BARLOW_LOSS),
    ("cifar100", "simclr"): dict(base_lr=0.4, weight_decay=1e-5, loss=dict(temperature=0.2)),
    ("imagenet100", "barlow_twins"): dict(base_lr=0.4, weight_decay=1e-4, loss=BARLOW_LOSS),
    ("imagenet100", "simclr"): dict(base_lr=0.4, weight_decay=1e-4, loss=dict(temperature=0.2)),
}
DATASETS = {
    "cifar100": dict(classes_per_task=(20,) * 5, class_order="cassle", memory=10_000, pretrain_epochs=500),
    "imagenet100": dict(classes_per_task=(20,) * 5, class_order="cassle", memory=20_000, pretrain_epochs=400,
                        image_size=224, stem="imagenet"),
    # Not in the paper: CIFAR-10 in 5 tasks of 2 classes with CIFAR-100's recipe (runnable here).
    "cifar10": dict(classes_per_task=(2,) * 5, class_order="natural", memory=10_000, pretrain_epochs=500),
}


def table1_config(dataset: str, method: str, steps: int, run: str = "ours") -> ml_collections.ConfigDict:
    """One cell of Table 1: ``run`` of ``method`` on ``dataset`` with ``steps`` local steps per batch."""
    if dataset not in DATASETS:
        raise ConfigError(f"online preset: dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    if run not in RUNS:
        raise ConfigError(f"online preset: run {run!r} is not one of {', '.join(RUNS)}")
    if steps <= 0:
        raise ConfigError(f"online preset: steps={steps} must be > 0")
    d = DATASETS[dataset]
    c = base_config()
    c.dataset.name = dataset
    c.dataset.image_size = d.get("image_size", 0)
    c.model.stem = d.get("stem", "cifar")
    c.split.classes_per_task = d["classes_per_task"]
    c.split.class_order = d["class_order"]
    apply_method(c, method)
    recipe = CASSLE.get(("cifar100" if dataset == "cifar10" else dataset, method))
    if recipe is not None:
        c.optim.base_lr = recipe["base_lr"]
        c.optim.weight_decay = recipe["weight_decay"]
        c.ssl.loss = ml_collections.ConfigDict(recipe["loss"])
        c.train.batch_size = 256
        c.optim.base_batch = 256
        c.optim.warmup_epochs = 10  # solo-learn's warmup_cosine default
        if method == "simclr":
            c.ssl.options.distill_temperature = 0.2  # CaSSLe's contrastive distiller
    c.eval.after_task = ("knn", "linear_fast")
    c.eval.final = ("knn", "linear")
    c.train.log_every_steps = steps
    if run in ("ours", "norals"):
        c.learner.name = "online"
        c.online.update(steps_per_batch=steps, pct_start=0.25 if steps == 50 else 0.5, memory_size=d["memory"],
                        pretrain_epochs=d["pretrain_epochs"], rals=run == "ours", eval_every_batches=50,
                        max_lr=PAPER_MAX_LR.get(("cifar100" if dataset == "cifar10" else dataset, method), 0.0))
        c.train.steps_per_call = steps  # one compiled call per stream batch (accelerators)
        c.train.checkpoint_every_steps = 20 * steps
    else:
        c.learner.name = "continual"
        c.strategy.name = "cassle" if run == "cassle" else "offline"
        c.train.batch_size = 128
        c.train.epochs = steps
        c.train.first_task_epochs = d["pretrain_epochs"]  # used only without continual.init_from
        c.optim.warmup_epochs = 0  # a 10-epoch warm-up would fill the smaller budgets
        c.train.checkpoint_every_steps = 2000
    return c


def from_arg(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """Config-file helper: ``arg`` is ``"<objective>,<steps>[,<run>]"``, e.g. ``"simclr,20,norals"``."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    if not 1 <= len(parts) <= 3 or (len(parts) > 1 and not parts[1].isdigit()):
        raise ConfigError(f"config argument {arg!r}: expected '<ssl method>[,<steps>[,<run>]]' with run one of "
                          f"{', '.join(RUNS)}")
    return table1_config(dataset, parts[0], int(parts[1]) if len(parts) > 1 else 20,
                         parts[2] if len(parts) > 2 else "ours")
