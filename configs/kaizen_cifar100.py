r"""Kaizen on CIFAR-100, 5 tasks of 20 classes: ``--config=configs/kaizen_cifar100.py:<objective>[,<variant>]``.

Objectives: ``byol``, ``simclr``, ``mocov2`` (MoCo v2+), ``vicreg``. Variants, the poster's baselines
and replay ablation:

* ``kaizen`` (default): SSL + feature KD + classifier CE + classifier KD, 1% replay;
* ``cassle``: CaSSLe with the same classifier, trained by CE only (no classifier KD, no replay);
* ``no_distill``: Kaizen without both distillation terms (SSL + CE, with replay);
* ``replay0``, ``replay5``: Kaizen with 0% or 5% of each earlier class replayed;
* ``reference``: every task trained alone from the initial model (SSL + CE), the specialised models of
  forward transfer: pass its workdir as ``--config.eval.reference_workdir`` to the others.

The recipe is the authors' scripts': ResNet-18 with the CIFAR stem and BatchNorm, batch 256, 500
epochs per task, LARS (η 0.02, clipped, biases and norms excluded) with a 10-epoch warm-up from 0.003
then a cosine to 0, restarted every task with a fresh optimiser; lr 1.0, classifier lr 0.1 (weight
decay 0), weight decay 1e-5 (VICReg: 0.3, 0.05, 1e-4); a replay batch of 32; CaSSLe's class order;
EMA targets restarted every task (BYOL 0.99 → 1, MoCo v2+ 0.99 → 0.999). Per objective: BYOL's
projector 4096 → 256 with its two directions summed (``ssl_weight`` 2); SimCLR τ 0.1 with a projector
4096 → 256; MoCo v2+ τ 0.2 with a queue of 65,536; VICReg 25/25/1 with a 2048-2048-2048 projector;
SimCLR and MoCo v2+ use BYOL's augmentations (saturation 0.2, solarisation on view 2), as the scripts
pass them. The deployable classifier is scored after every task (``head``), kNN beside it; the final
evaluation adds the fast linear probe.

CIFAR-100 comes from TFDS by default; ``--config.dataset.source=cifar_archive
--config.dataset.path=.../cifar-100-python.tar.gz`` reads the official archive in its order.
"""
from jaxcssl.config import apply_method, base_config
from jaxcssl.errors import ConfigError

OBJECTIVES = ("byol", "simclr", "mocov2", "vicreg")
VARIANTS = ("kaizen", "cassle", "no_distill", "replay0", "replay5", "reference")
# The authors' CIFAR-100 scripts: peak lr (batch 256), the classifier's lr, weight decay.
RATES = {"byol": (1.0, 0.1, 1e-5), "simclr": (1.0, 0.1, 1e-5), "mocov2": (1.0, 0.1, 1e-5), "vicreg": (0.3, 0.05, 1e-4)}


def kaizen_config(objective: str, variant: str = "kaizen"):
    """The Kaizen recipe on CIFAR-100 for ``objective`` and ``variant`` (module docstring)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"Kaizen objective {objective!r} is not one of: {', '.join(OBJECTIVES)}")
    if variant not in VARIANTS:
        raise ConfigError(f"Kaizen variant {variant!r} is not one of: {', '.join(VARIANTS)}")
    c = base_config()
    c.dataset.name = "cifar100"
    c.split.classes_per_task = (20,) * 5
    c.split.class_order = "cassle"
    apply_method(c, objective)
    lr, classifier_lr, weight_decay = RATES[objective]
    c.model.update(backbone="resnet18", stem="cifar", norm="batch")
    c.optim.update(name="lars", base_lr=lr, base_batch=256, weight_decay=weight_decay, eta=0.02, clip_lr=True,
                   warmup_epochs=10, warmup_start_lr=0.003, final_lr=0.0)
    c.train.update(batch_size=256, epochs=500, log_every_steps=100, checkpoint_every_steps=2000)
    c.ssl.ema_per_task = True
    if objective == "byol":
        c.strategy.kaizen.ssl_weight = 2.0
    if objective == "mocov2":
        c.ssl.ema_final = 0.999
        c.ssl.loss.temperature = 0.2
        c.ssl.options.queue_size = 65536
    if objective == "simclr":
        c.ssl.loss.temperature = 0.1
        c.ssl.projector_dims = (4096, 256)
    if objective in ("simclr", "mocov2"):
        c.augment.preset = "byol"
    c.strategy.name = "kaizen"
    c.strategy.distill_hidden_dim = 2048
    c.strategy.kaizen.update(classifier_lr=classifier_lr, replay_fraction=0.01, replay_batch=32)
    c.eval.after_task = ("head", "knn")
    c.eval.final = ("head", "knn", "linear_fast")
    return apply_variant(c, variant)


def apply_variant(c, variant: str):
    """The poster's baselines and replay ablation as settings of the ``kaizen`` strategy."""
    k = c.strategy.kaizen
    if variant == "cassle":
        k.update(classifier_distill_weight=0.0, replay_fraction=0.0)
    elif variant == "no_distill":
        k.update(feature_distill_weight=0.0, classifier_distill_weight=0.0)
    elif variant == "replay0":
        k.replay_fraction = 0.0
    elif variant == "replay5":
        k.replay_fraction = 0.05
    elif variant == "reference":
        c.train.reinit_each_task = True
        k.replay_fraction = 0.0
    return c


def get_config(arg: str = "mocov2"):
    objective, _, variant = arg.partition(",")
    return kaizen_config(objective.strip() or "mocov2", variant.strip() or "kaizen")
