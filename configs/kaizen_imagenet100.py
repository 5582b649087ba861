r"""Kaizen on ImageNet-100, 5 tasks of 20 classes: ``--config=configs/kaizen_imagenet100.py:<objective>[,<variant>]``.

ImageNet-100 comes from TFDS (``--config.dataset.data_dir=...``) or, with
``--config.dataset.source=image_folder --config.dataset.path=...``, from a folder or archive of
``<split>/<class>/*.JPEG``.

Objectives and variants as ``configs/kaizen_cifar100.py``, whose recipe this is, with what ImageNet-100
changes. The authors publish no ImageNet-100 script; the budget is CaSSLe's ImageNet-100
class-incremental one (ResNet-18 with the ImageNet stem, batch 128, 400 epochs per task), the
learning rates follow the batch (``base_lr × 128 / 256``; the classifier's stays absolute, as in the
authors' code), classes are dealt in CaSSLe's order (``torch.manual_seed(5)`` ``randperm(100)``, the
same permutation as on CIFAR-100). Images are resized to 224 × 224 when loaded and cropped from
there (the reference crops the full-resolution JPEGs): about 20 GB of uint8 images on the device.
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("kaizen_cifar100", pathlib.Path(__file__).with_name("kaizen_cifar100.py"))
kaizen_cifar100 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kaizen_cifar100)


def get_config(arg: str = "mocov2"):
    c = kaizen_cifar100.get_config(arg)
    c.dataset.update(name="imagenet100", image_size=224)
    c.model.stem = "imagenet"
    c.train.update(batch_size=128, epochs=400)
    return c
