r"""CroMo-Mixup on CIFAR-100 (Table 2): ``--config=configs/cromo_cifar100.py:split10,simclr``.

The argument is ``<split5|split10>[,<ssl method>[,paper|official]]`` (default ``split5,barlow_twins,paper``):
``official`` takes the values of the authors' commands where they differ from the paper (README,
"Presets"); ζ = 0 (CroMo-Mixup*) is ``--config.strategy.cromo.distill_weight=0``.
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "split5,barlow_twins"):
    split, _, rest = arg.partition(",")
    return paper_config_from_arg("cromo", f"cifar100_{split or 'split5'},{rest or 'barlow_twins'}")
