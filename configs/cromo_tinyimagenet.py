r"""CroMo-Mixup on TinyImageNet-Split10 (Table 2, ResNet-50): ``--config=configs/cromo_tinyimagenet.py:corinfomax``.

The argument is ``<ssl method>[,paper|official]`` (default ``barlow_twins,paper``): ``official`` takes
the values of the authors' commands where they differ from the paper (README, "Presets").
TFDS has no Tiny-ImageNet: point ``--config.dataset.source=image_folder --config.dataset.path=...``
at the official ``tiny-imagenet-200`` folder or zip.
"""
from jaxcssl.config import paper_config_from_arg


def get_config(arg: str = "barlow_twins"):
    return paper_config_from_arg("cromo", f"tinyimagenet_split10,{arg}")
