r"""FUSSL (arXiv 2210.15818) with the paper's recipe: ``--config=configs/fussl.py:<setting>,<objective>[,<case>]``.

Settings: ``imagenet`` (ResNet-50, 224x224; Tables 1-2), ``tiny_imagenet`` (ResNet-50, the ablations
of Table 3), ``cifar10``, ``cifar100`` (ResNet-50 at 32x32), ``cifar100_cross_class`` (Table 4: half of
the classes of every superclass pre-train, the other half evaluate). Objectives: ``simclr``,
``byol``, ``simsiam``, ``swav``, ``wmse``, ``barlow_twins`` (any of the library works).

The recipe (Sec. 4.1): an ensemble of m = 3 members with identical initialisation, each on its own
pair of SimCLR-style views (crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, flip);
projector Linear-BN-ReLU, Linear-BN-ReLU, Linear, all 1000, L2-normalised latents; phase 1 800
epochs, batch 1024, Adam, lr 0.2 for 10 epochs then 0.001, weight decay 1e-6; fuzzy pseudo-labels
over the 1000 outputs; phase 2 400 epochs, Adam lr 0.001, all layers for 100 epochs, then the last
ResNet stage and the projector; evaluation by a linear classifier on frozen features without
augmentation (``linear_fast``, 500 epochs) and kNN. Each objective keeps its own loss settings
(SimCLR τ 0.5, Barlow Twins λ 5e-3, ...) and target network (BYOL).

Cases (Sec. 5): ``hard`` (Case 1/4: hard labels only, soft-labelled samples dropped), ``soft`` (Case
2/5: every sample soft), ``progressive`` (Case 3: 4 cycles of 200 + 100 epochs, no frozen layers),
``no_frozen`` (phase 2 trains every layer), ``m1`` .. ``m5`` (ensemble size, Fig. 2), ``continued``
(the "1200 ep" baseline: phase 1 for 400 more epochs of one model, no labels), ``method_recipe``
(phase 1 with the objective's own optimiser and warm-up + cosine schedule instead of the paper's).

Data: ImageNet and Tiny-ImageNet as image folders (``.data/imagenet/{train,val}/<class>/``,
``.data/tiny-imagenet-200.zip``, or ``--config.dataset.path=...``); CIFAR from TFDS
(``--config.dataset.source=cifar_archive --config.dataset.path=...`` for the python archives). The
engine holds the training set on the device: ImageNet at 224x224 (~190 GB of uint8) does not fit
one accelerator, ``--config.dataset.image_size=64`` (~16 GB) does.
"""
from jaxcssl.config import apply_method, base_config
from jaxcssl.data.datasets import DEMO_CIFAR10_SUBSET

SETTINGS = {
    "imagenet": dict(dataset="imagenet", source="image_folder", path=".data/imagenet", backbone="resnet50",
                     stem="imagenet", image_size=224),
    "tiny_imagenet": dict(dataset="tiny_imagenet", source="image_folder", path=".data/tiny-imagenet-200.zip",
                          backbone="resnet50", stem="cifar"),
    "cifar10": dict(dataset="cifar10", source="tfds", backbone="resnet50", stem="cifar"),
    "cifar100": dict(dataset="cifar100", source="tfds", backbone="resnet50", stem="cifar"),
    "cifar100_cross_class": dict(dataset="cifar100", source="tfds", backbone="resnet50", stem="cifar"),
    "cifar10_subset": dict(dataset="cifar10", source="image_folder", path=DEMO_CIFAR10_SUBSET, backbone="resnet18",
                           stem="cifar", image_size=16),
}
CASES = ("fussl", "hard", "soft", "progressive", "no_frozen", "m1", "m2", "m3", "m4", "m5", "continued",
         "method_recipe")
# Classes per dataset (one task holding all of them).
NUM_CLASSES = {"imagenet": 1000, "tiny_imagenet": 200, "cifar10": 10, "cifar100": 100}


def apply_fussl(c, method: str):
    """The paper's FUSSL recipe (Sec. 4.1) on top of ``c`` (dataset and model already set)."""
    apply_method(c, method)  # the objective's loss settings, EMA and reference optimiser (kept by method_recipe)
    c.learner.name = "fussl"
    c.strategy.name = "finetune"
    c.augment.preset = "simclr"  # Sec. 4.1.2: SimCLR's augmentations for every objective
    c.model.norm = "batch"  # solo-learn's ResNet-50 (the paper's phase 1), also for BYOL
    c.optim.name = "adam"
    c.optim.base_lr = 0.2
    c.optim.base_batch = 1024  # lr 0.2 at batch 1024: not rescaled
    c.optim.weight_decay = 1e-6
    c.optim.momentum = 0.9  # Adam's beta1
    c.optim.warmup_epochs = 0
    c.train.batch_size = 1024
    c.train.epochs = 800
    c.fussl.phase1.schedule = "step"
    c.fussl.phase1.drop_epochs = 10
    c.fussl.phase1.late_lr = 0.001
    c.fussl.phase2.epochs = 400
    c.fussl.phase2.lr = 0.001
    c.fussl.phase2.weight_decay = 1e-6
    if method == "wmse":  # the whitening sub-batch must exceed the 1000 latents
        c.ssl.loss.whitening_size = c.train.batch_size
    c.eval.after_task = ("knn", "linear_fast")
    c.eval.final = ("knn", "linear_fast")
    c.eval.fast_linear_epochs = 500
    return c


def apply_case(c, case: str):
    """One ablation of Sec. 5 (module docstring)."""
    if case not in CASES:
        raise ValueError(f"unknown FUSSL case {case!r}; known: {', '.join(CASES)}")
    f = c.fussl
    if case == "hard":
        f.labels = "hard"
    elif case == "soft":
        f.labels = "soft"
    elif case == "progressive":
        f.cycles = 4
        f.phase2.unfrozen_fraction = 1.0
    elif case == "no_frozen":
        f.phase2.unfrozen_fraction = 1.0
    elif case.startswith("m") and case[1:].isdigit():
        f.ensemble_size = int(case[1:])
    elif case == "continued":
        f.variant = "continued"
        f.ensemble_size = 1
    elif case == "method_recipe":
        d = base_config()
        apply_method(d, c.ssl.method)
        c.optim.update(d.optim.to_dict())
        c.train.batch_size = d.train.batch_size
        f.phase1.schedule = "cosine"
    return c


def get_config(arg: str = "cifar10,barlow_twins"):
    parts = [p.strip() for p in arg.split(",") if p.strip()]
    if not 1 <= len(parts) <= 3 or parts[0] not in SETTINGS:
        raise ValueError(f"config argument {arg!r}: expected '<setting>[,<objective>[,<case>]]' with a setting "
                         f"among {', '.join(SETTINGS)}")
    setting = parts[0]
    method = parts[1] if len(parts) > 1 else "barlow_twins"
    case = parts[2] if len(parts) > 2 else "fussl"
    s = SETTINGS[setting]
    c = base_config()
    c.dataset.name = s["dataset"]
    c.dataset.source = s["source"]
    c.dataset.path = s.get("path", "")
    c.dataset.image_size = s.get("image_size", 0)
    c.split.classes_per_task = (NUM_CLASSES[s["dataset"]],)
    c.model.backbone = s["backbone"]
    c.model.stem = s["stem"]
    apply_fussl(c, method)
    if setting == "cifar100_cross_class":
        c.fussl.cross_class.enabled = True
    if setting == "cifar10_subset":
        cpu_budget(c)
    return apply_case(c, case)


def cpu_budget(c):
    """The embedded CIFAR-10 subset (500 + 100 images per class) at 16x16 with a width-8 ResNet-18 on a CPU:
    16 epochs of phase 1 at batch 128 (lr 0.2 x 128 / 1024 for the first epoch, then 0.001), 8 of phase 2
    (2 with all layers); the rest is the paper's recipe."""
    c.model.width = 8
    c.train.batch_size = 128
    c.train.epochs = 16
    c.fussl.phase1.drop_epochs = 1
    c.fussl.phase2.epochs = 8
    c.train.log_every_steps = 20
    c.train.checkpoint_every_steps = 200
    c.eval.fast_linear_epochs = 100
