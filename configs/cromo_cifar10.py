r"""CroMo-Mixup on CIFAR10-Split2 (Table 2): ``--config=configs/cromo_cifar10.py:byol``.

The argument is ``<ssl method>[,paper|official]`` (default ``barlow_twins,paper``): ``official`` takes
the values of the authors' commands where they differ from the paper (README, "Presets").
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "barlow_twins"):
    return paper_config_from_arg("cromo", f"cifar10_split2,{arg}")
