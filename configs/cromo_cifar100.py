r"""CroMo-Mixup on CIFAR-100 (Table 2): ``--config=configs/cromo_cifar100.py:split10,simclr``.

The argument is ``<split5|split10>[,<ssl method>]`` (default ``split5,barlow_twins``); ζ = 0
(CroMo-Mixup*) is ``--config.strategy.cromo.distill_weight=0``.
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "split5,barlow_twins"):
    split, _, method = arg.partition(",")
    return paper_config_from_arg("cromo", f"cifar100_{split or 'split5'},{method or 'barlow_twins'}")
