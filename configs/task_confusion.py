r"""The task-confusion study of CroMo-Mixup (Sec. 3, Fig. 4; App. B): ``configs/task_confusion.py:<dataset>,<setting>,<method>``.

Arguments:

* ``<dataset>``: ``cifar100`` (TFDS), ``cifar10`` (the CIFAR-10 JPEG copy in ``.data/``, as
  ``configs/cifar10_split2_reduced.py``), or ``demo``: the CPU configuration on the embedded
  CIFAR-10 subset (``DEMO_CIFAR10_SUBSET``, 500 training images per class, resized to 16x16, a
  width-8 ResNet-18, a few epochs, the fast linear probe), which runs the whole study in minutes.
* ``<setting>``: CIFAR-100 ``10x10`` (CIL-minibatch: ten tasks of ten classes, one task per step,
  tasks cycled so every task is revisited), ``100x1`` (uniform sampling over all the training data:
  the Joint reference) or ``10x10_dil`` (DIL-minibatch, App. B: ten interleaved tasks that each hold
  about a tenth of every class); CIFAR-10 (and ``demo``) ``5x2``, ``10x1`` and ``5x2_dil``. The
  three share one split of the classes into the tasks, which defines TP; the DIL reference is the
  same uniform run as ``100x1``.
* ``<method>``: ``supervised`` (cross-entropy, its head scored as it is and by the linear probe) or
  the SSL objectives of Fig. 4: ``corinfomax``, ``barlow_twins``, ``simclr``, ``byol``.

Table 7: ResNet-18; CorInfoMax SGD lr 0.5, batch 512; Barlow Twins LARS 0.3, 256; SimCLR LARS 0.6,
512; BYOL LARS 1.0, 256; 1000 epochs; supervised SGD 0.075, 128, 200 epochs. Each lr follows its
method's convention (CorInfoMax and supervised unscaled, the others × batch / 256); everything else
is the method's recipe (Table 5). Equal epochs give equal steps in every setting. The accuracy is
the training data's (``eval.on=train``), as the paper reports; ``experiments/task_confusion.py``
adds the test data's.
"""
from jaxcssl.config import apply_method, base_config
from jaxcssl.data.datasets import DEMO_CIFAR10_SUBSET
from jaxcssl.errors import ConfigError

METHODS = ("supervised", "corinfomax", "barlow_twins", "simclr", "byol")
# Table 7: optimiser, lr, batch size, epochs.
TABLE7 = {
    "corinfomax": ("sgd", 0.5, 512, 1000),
    "barlow_twins": ("lars", 0.3, 256, 1000),
    "simclr": ("lars", 0.6, 512, 1000),
    "byol": ("lars", 1.0, 256, 1000),
    "supervised": ("sgd", 0.075, 128, 200),
}
# Per dataset: the number of tasks and the name of each setting (CIL-minibatch, uniform, DIL-minibatch).
SETTINGS = {
    "cifar100": (10, {"10x10": "cil", "100x1": "uniform", "10x10_dil": "dil"}),
    "cifar10": (5, {"5x2": "cil", "10x1": "uniform", "5x2_dil": "dil"}),
    "demo": (5, {"5x2": "cil", "10x1": "uniform", "5x2_dil": "dil"}),
}
# Each kind as a strategy and a split schedule: uniform sampling is Offline's one joined phase.
KINDS = {"cil": ("finetune", "interleaved"), "uniform": ("offline", "sequential"),
         "dil": ("finetune", "interleaved_data")}
# The CPU study: a few epochs (the paper's 1000 / 200 ratio, 5:1, would leave supervised at one epoch).
DEMO_EPOCHS = {"supervised": 2}  # the SSL objectives: 4


def parse(arg: str) -> tuple[str, str, str]:
    """``"<dataset>,<setting>,<method>"`` checked against :data:`SETTINGS` and :data:`METHODS`."""
    parts = [p.strip() for p in (arg or "").split(",")]
    if len(parts) != 3:
        raise ConfigError(f"config argument {arg!r}: expected '<dataset>,<setting>,<method>', e.g. 'cifar100,10x10,simclr'")
    dataset, setting, method = parts
    if dataset not in SETTINGS:
        raise ConfigError(f"config argument {arg!r}: dataset {dataset!r} is not one of: {', '.join(SETTINGS)}")
    if setting not in SETTINGS[dataset][1]:
        raise ConfigError(f"config argument {arg!r}: setting {setting!r} is not one of: "
                          f"{', '.join(SETTINGS[dataset][1])}")
    if method not in METHODS:
        raise ConfigError(f"config argument {arg!r}: method {method!r} is not one of: {', '.join(METHODS)}")
    return dataset, setting, method


def get_config(arg: str = "cifar100,10x10,simclr"):
    dataset, setting, method = parse(arg)
    num_tasks, names = SETTINGS[dataset]
    strategy, schedule = KINDS[names[setting]]
    c = base_config()
    c.dataset.name = "cifar100" if dataset == "cifar100" else "cifar10"
    if dataset == "cifar10":
        c.dataset.source = "image_folder"
        c.dataset.path = ".data/cifar10-jpeg-*.tar.gz"
        c.dataset.cache_dir = ".cache/datasets"
    c.split.classes_per_task = (10 if c.dataset.name == "cifar100" else 2,) * num_tasks
    c.split.schedule = schedule
    c.model.backbone = "resnet18"
    apply_method(c, method)
    c.strategy.name = strategy
    optimizer, lr, batch, epochs = TABLE7[method]
    c.optim.name, c.optim.base_lr, c.train.batch_size, c.train.epochs = optimizer, lr, batch, epochs
    if c.optim.base_batch != 256:  # a method whose lr is not scaled by batch / 256
        c.optim.base_batch = batch
    c.eval.on = "train"
    c.eval.after_task = ("knn",)
    c.eval.final = ("knn", "linear", "head") if method == "supervised" else ("knn", "linear")
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 2000
    if dataset == "demo":
        c.dataset.source = "image_folder"
        c.dataset.path = DEMO_CIFAR10_SUBSET
        c.dataset.image_size = 16
        c.model.width = 8
        c.model.head_scale = 1 / 64
        c.train.batch_size = 128
        if c.optim.base_batch != 256:
            c.optim.base_batch = 128
        c.train.epochs = DEMO_EPOCHS.get(method, 4)
        c.optim.warmup_epochs = 0
        c.train.log_every_steps = 20
        c.train.checkpoint_every_steps = 500
        c.eval.after_task = ()
        c.eval.final = ("knn", "linear_fast", "head") if method == "supervised" else ("knn", "linear_fast")
        c.eval.knn_k = 50
    return c
