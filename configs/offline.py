r"""Baseline 'offline' in any CroMo Table 2 setting: ``--config=configs/offline.py:<setting>,<ssl method>[,official]``.

Settings: cifar10_split2, cifar100_split5 (default), cifar100_split10, tinyimagenet_split10. The third
part is the preset, ``paper`` (default) or ``official``: the authors' commands' values (README, "Presets").
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "cifar100_split5,barlow_twins"):
    return paper_config_from_arg("offline", arg)
