r"""CIFAR10-Split2, Barlow Twins, at 1/10 of the paper's epochs: ``--config=configs/cifar10_split2_reduced.py:<strategy>``.

The reduced-budget reproduction of CroMo-Mixup Table 2 (GitHub issue "GPU performance", item 3),
run for ``finetune``, ``cassle_plus`` and ``cromo`` by ``experiments/reduced_budget_cifar10.py``;
``<strategy>,official`` takes the authors' commands' values instead of the paper's (README, "Presets").
Everything is the paper's setting (``paper_config``: ResNet-18, LARS, batch 256, memory of 500
samples per task, replay batch 64, λ ~ Beta(1, 1) per batch, the 200-epoch linear probe) except:

* 50 epochs per task instead of 500;
* the CIFAR-10 JPEG copy (``../shared/data/cifar10-jpeg-*.tar.gz``, lossy re-encodings of the
  official images) read by the image-folder source from ``.data/`` (override ``dataset.path``);
* bfloat16 compute (parameters, optimiser and BatchNorm statistics stay float32).
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "cromo"):
    strategy, _, reference = arg.partition(",")
    c = paper_config_from_arg(strategy, f"cifar10_split2,barlow_twins,{reference or 'paper'}")
    c.dataset.source = "image_folder"
    c.dataset.path = ".data/cifar10-jpeg-*.tar.gz"
    c.dataset.cache_dir = ".cache/datasets"
    c.model.dtype = "bfloat16"
    c.train.epochs = 50
    c.train.log_every_steps = 100
    c.train.checkpoint_every_steps = 2000
    return c
