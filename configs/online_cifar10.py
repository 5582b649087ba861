r"""Online SSL on CIFAR-10, runnable on a CPU: ``--config=configs/online_cifar10.py:<objective>,<steps>[,<run>][,full]``.

Not a paper setting: CIFAR-10 in 5 tasks of 2 classes with CIFAR-100's recipe
(:mod:`jaxcssl.learners.online_presets`). By default the CIFAR-10 subset that ships with the package
(500 train / 100 test images per class) with a narrow ResNet-18 (width 16), 20 pre-training epochs
and a fast probe: a few minutes on two CPU cores with ``<steps>`` = 4 (``train.steps_per_call`` 1).
``full``: the whole CIFAR-10 JPEG copy (``.data/cifar10-jpeg-*.tar.gz``, override
``dataset.path``) at the paper's scale, for an accelerator.
"""
from jaxcssl.data.datasets import DEMO_CIFAR10_SUBSET
from jaxcssl.learners.online_presets import from_arg


def get_config(arg: str = "barlow_twins,4"):
    words = [w.strip() for w in arg.split(",")]
    full = words[-1] == "full"
    c = from_arg("cifar10", ",".join(words[:-1] if full else words))
    c.dataset.source = "image_folder"
    if full:
        c.dataset.path = ".data/cifar10-jpeg-*.tar.gz"
        c.dataset.cache_dir = ".cache/datasets"
        return c
    c.dataset.path = DEMO_CIFAR10_SUBSET
    c.model.width = 16
    c.model.head_scale = 1 / 8
    c.strategy.distill_hidden_dim = 256
    c.train.steps_per_call = 1
    c.train.checkpoint_every_steps = 100
    c.train.first_task_epochs = 20
    if c.learner.name == "online":
        c.online.pretrain_epochs = 20
        c.online.eval_every_batches = 10
    c.eval.final = ("knn", "linear_fast")
    c.eval.batch_size = 500
    return c
