r"""Online SSL on ImageNet-100 (Table 1): ``--config=configs/online_imagenet100.py:<objective>,<steps>[,<run>]``.

As ``configs/online_cifar100.py``: 5 tasks of 20 classes, memory of 20,000 samples, maximum rate 0.1,
images resized to 224 and an ImageNet stem; the data from TFDS (``--config.dataset.data_dir``) or an
image folder (``--config.dataset.source=image_folder --config.dataset.path=...``).
"""
from jaxcssl.learners.online_presets import from_arg


def get_config(arg: str = "barlow_twins,20"):
    return from_arg("imagenet100", arg)
