"""Configs: the paper presets, every config file, and validation errors (nothing compiles here)."""
from __future__ import annotations

import importlib.util
import pathlib

import ml_collections
import pytest

from jaxcssl.config import PAPER_SETTINGS, RENAMED, ConfigError, base_config, paper_config, validate
from jaxcssl.learners.continual import task_epochs
from jaxcssl.methods import REGISTRY as METHODS
from jaxcssl.strategies import REGISTRY as STRATEGIES

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.py"))


def load(path: pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_config_file_validates(path):
    config = load(path)
    if config.dataset.name == "tiny_imagenet":  # not in TFDS: the user points it at the image folder
        with pytest.raises(ConfigError, match="dataset.source='image_folder' needs dataset.path"):
            validate(config)
        config.dataset.path = "/data/tiny-imagenet-200.zip"
    validate(config)


@pytest.mark.parametrize("setting", PAPER_SETTINGS)
@pytest.mark.parametrize("method", ["barlow_twins", "simclr", "byol", "corinfomax"])
def test_table2_settings_carry_the_paper_values(setting, method):
    config = paper_config(setting, method, "cromo")
    config.dataset.path = "/data/tiny-imagenet-200.zip" if setting.startswith("tiny") else ""
    validate(config)
    expected = {  # CroMo Sec. 6.1 and Table 6: classes per task, epochs (first, rest), samples saved per task
        "cifar10_split2": ((5,) * 2, 500, 500, 500),
        "cifar100_split5": ((20,) * 5, 750, 750, 500),
        "cifar100_split10": ((10,) * 10, 600, 350, 100),
        "tinyimagenet_split10": ((20,) * 10, 500, 350, 100),
    }[setting]
    assert tuple(config.split.classes_per_task) == expected[0]
    assert (task_epochs(config, 0), task_epochs(config, 1)) == expected[1:3]
    assert config.strategy.samples_per_task == expected[3]
    assert config.strategy.replay_batch == 64 and config.strategy.cromo.distill_weight == 1.0
    assert config.model.backbone == ("resnet50" if setting.startswith("tiny") else "resnet18")
    assert config.strategy.cromo.mixup.lam == ("fixed" if method == "barlow_twins" else "batch")
    assert config.eval.linear_lr == (0.1 if method == "byol" else 0.2)
    if method == "corinfomax":  # the reference does not scale CorInfoMax's lr by batch / 256
        assert config.optim.name == "sgd" and config.optim.base_batch == config.train.batch_size
    else:
        assert config.optim.name == "lars" and config.optim.base_batch == 256


def test_baseline_and_smoke_arguments():
    config = load(ROOT / "configs" / "lump.py", "cifar10_split2,simclr")
    assert config.strategy.name == "lump" and config.ssl.method == "simclr"
    assert config.strategy.replay_batch == config.train.batch_size  # LUMP mixes the whole batch
    for method in METHODS.names():
        validate(load(ROOT / "configs" / "smoke.py", f"cromo,{method}" if method != "swav" else "er,swav"))
    with pytest.raises(ConfigError, match="expected '<setting>"):
        load(ROOT / "configs" / "er.py", "cifar10_split2,simclr,extra")


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c.update({"sed": 1}), "unknown config key 'sed'"),
        (lambda c: c.strategy.update({"name": "cromoo"}), "strategy.name='cromoo'"),
        (lambda c: c.ssl.update({"method": "dino"}), "ssl.method='dino'"),
        (lambda c: c.strategy.cromo.mixup.update({"value": 1.5}), "strategy.cromo.mixup.value=1.5"),
        (lambda c: c.strategy.cromo.mixup.update({"lam": "beta"}), "strategy.cromo.mixup.lam='beta'"),
        (lambda c: c.learner.update({"name": "stream"}), "learner.name='stream' is not one of: continual"),
        (lambda c: c.optim.update({"lr_mults": (("distill/.*", -1.0),)}), "optim.lr_mults"),
        (lambda c: c.strategy.update({"replay_batch": 512}), "strategy.replay_batch=512 exceeds"),
        (lambda c: (c.ssl.update({"method": "swav"}), setattr(c.ssl, "loss", ml_collections.ConfigDict())), "distils"),
        (lambda c: c.eval.update({"final": ("knn", "svm")}), "eval.final='svm'"),
        (lambda c: c.dataset.update({"source": "image_folder"}), "needs dataset.path"),
    ],
)
def test_validation_names_the_culprit(change, message):
    config = paper_config("cifar100_split5", "barlow_twins", "cromo")
    with config.unlocked():
        change(config)
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_the_schema_has_a_default_for_every_key():
    validate(base_config())


def test_every_strategy_has_its_own_subtree_and_old_keys_name_the_new_ones():
    config = base_config()
    for name, strategy in STRATEGIES.items():
        assert (name in config.strategy) == bool(strategy.CONFIG), name
    assert config.strategy.ewc.weight == 100.0 and config.strategy.cromo.mixup.value == 0.7
    for old, new in (("ewc_weight", "strategy.ewc.weight"), ("mixup", "strategy.cromo.mixup"),
                     ("distill_weight", "strategy.<cassle|cassle_plus|cromo>.distill_weight")):
        assert f"strategy.{old}" in RENAMED
        config = base_config()
        with config.unlocked():
            config.strategy[old] = 1.0
        with pytest.raises(ConfigError, match=f"^config key 'strategy.{old}' is now '{new}'".replace("|", r"\|")):
            validate(config)
