"""Configs: the paper presets, every config file, and validation errors (nothing compiles here)."""
from __future__ import annotations

import importlib.util
import pathlib

import ml_collections
import pytest

from jaxcssl.config import PAPER_SETTINGS, RENAMED, ConfigError, base_config, paper_config, validate
from jaxcssl.learners.continual import task_epochs
from jaxcssl.methods import REGISTRY as METHODS
from jaxcssl.optim import peak_learning_rate
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


DATASET = {"cifar10_split2": "cifar10", "cifar100_split5": "cifar100", "cifar100_split10": "cifar100",
           "tinyimagenet_split10": "tiny_imagenet"}
# CroMo Table 5 (CIFAR-10 / CIFAR-100 / Tiny-ImageNet): batch, learning rate, optimizer, weight decay.
TABLE5 = {
    "corinfomax": ((512, 512, 256), (0.1, 0.1, 0.5), "sgd", 1e-4),
    "simclr": ((512, 512, 256), (0.6, 0.6, 0.3), "sgd", 5e-4),
    "byol": ((256, 256, 256), (1.0, 1.0, 0.3), "lars", 1e-5),
    "barlow_twins": ((256, 256, 256), (0.3, 0.3, 0.3), "lars", 1e-4),
}


def _validated(setting, method, strategy="cromo", reference="paper"):
    config = paper_config(setting, method, strategy, reference)
    config.dataset.path = "/data/tiny-imagenet-200.zip" if setting.startswith("tiny") else ""
    return validate(config)


@pytest.mark.parametrize("setting", PAPER_SETTINGS)
@pytest.mark.parametrize("method", ["barlow_twins", "simclr", "byol", "corinfomax"])
def test_table2_settings_carry_the_paper_values(setting, method):
    config = _validated(setting, method)
    assert config.reference == "paper"
    expected = {  # CroMo Sec. 6.1 and Table 6: classes per task, epochs (first, rest), samples saved per task
        "cifar10_split2": ((5,) * 2, 500, 500, 500),
        "cifar100_split5": ((20,) * 5, 750, 750, 500),
        "cifar100_split10": ((10,) * 10, 600, 350, 100),
        "tinyimagenet_split10": ((20,) * 10, 500, 350, 100),
    }[setting]
    assert tuple(config.split.classes_per_task) == expected[0]
    assert (task_epochs(config, 0), task_epochs(config, 1)) == expected[1:3]
    assert config.strategy.samples_per_task == expected[3]
    assert config.strategy.replay_batch == 64  # Sec. D.1
    assert config.model.backbone == ("resnet50" if setting.startswith("tiny") else "resnet18")
    column = ("cifar10", "cifar100", "tiny_imagenet").index(DATASET[setting])
    batches, rates, optimizer, weight_decay = TABLE5[method]
    assert config.train.batch_size == batches[column]
    assert (config.optim.name, config.optim.weight_decay, config.optim.later_task_lr_factor) == (
        optimizer, weight_decay, 1.0)
    lr = rates[column] * (1.0 if method == "corinfomax" else batches[column] / 256)  # the reference scales by batch/256
    for task in (0, 1):
        assert peak_learning_rate(config.optim.base_lr, config.train.batch_size, task,
                                  base_batch=config.optim.base_batch) == pytest.approx(lr)
    if method == "simclr":
        assert config.ssl.loss.temperature == 0.5
    cromo = config.strategy.cromo  # Eq. 3-5: λ ~ Beta(α, α), both sums weighted 1, the objective's own loss
    assert (cromo.mixup.lam, cromo.mixup.alpha, cromo.mixup.weight, cromo.distill_weight) == ("batch", 1.0, 1.0, 1.0)
    assert (cromo.mixup.loss, cromo.distill_form, cromo.distill_input) == ("ssl", "per_view", "current")
    assert config.eval.linear_lr == (0.1 if method == "byol" else 0.2)


# The official commands (FC = Continual_Experiments/final_commands.sh, CC = cont_commands.sh; the
# *_mixed_distillation runs), as their trainers read them. Per objective, its lines for CIFAR10-Split2,
# CIFAR100-Split5, CIFAR100-Split10, TinyImageNet-Split10; then the values they run.
COMMANDS = {
    "barlow_twins": (
        "FC:75 FC:42 FC:63 CC:454",
        dict(batch=256, lr=(0.25, 0.25, 0.25, 0.10), scaled=True, optimizer="lars", wd=(1e-4,) * 4,
             same_lr=(False, True, True, True), warmup=0, final_lr=(0.0,) * 4, replay=64,
             loss=dict(lambda_offdiag=5e-3, scale=0.1), lam="fixed", distill=0.5, mixup_loss="ssl",
             distill_form="per_view", distill_input="current"),
    ),
    "corinfomax": (
        "FC:338 FC:346 FC:69 CC:456",
        dict(batch=256, lr=(0.1, 0.1, 0.1, 0.1), scaled=False, optimizer="sgd", wd=(1e-4,) * 4,
             same_lr=(True,) * 4, warmup=0, final_lr=(0.0,) * 4, replay=64,
             loss=dict(sim_loss_weight=(250.0, 250.0, 250.0, 500.0), cov_loss_weight=1.0, la_R=0.01, la_mu=0.01),
             lam="batch", distill=1.0, mixup_loss="barlow_twins", distill_form="split_views",
             distill_input="current"),
    ),
    "simclr": (
        "FC:145 FC:131 FC:138 CC:458",
        dict(batch=(512, 512, 512, 256), lr=(0.6, 0.6, 0.6, 0.3), scaled=True, optimizer="lars", wd=(5e-4,) * 4,
             same_lr=(False, False, False, True), warmup=0, final_lr=(0.0,) * 4, replay=64,
             loss=dict(temperature=0.5), lam="batch", distill=0.5, mixup_loss="ssl", distill_form="per_view",
             distill_input="current"),
    ),
    "byol": (
        "FC:305 FC:306 FC:307 CC:460",
        dict(batch=256, lr=(1.0, 1.0, 1.0, 0.3), scaled=True, optimizer="lars", wd=(1e-5, 1e-5, 1e-5, 1e-6),
             same_lr=(False, False, False, True), warmup=10, final_lr=(1e-3, 1e-3, 1e-3, 1e-6), replay=128,
             loss={}, lam="batch", distill=0.5, mixup_loss="ssl", distill_form="per_view",
             distill_input="current_and_mixed"),
    ),
}


def _per_setting(value, index):
    return value[index] if isinstance(value, tuple) else value


@pytest.mark.parametrize("setting", PAPER_SETTINGS)
@pytest.mark.parametrize("method", ["barlow_twins", "simclr", "byol", "corinfomax"])
def test_official_preset_reproduces_the_commands(setting, method):
    config = _validated(setting, method, reference="official")
    assert config.reference == "official"
    i = list(PAPER_SETTINGS).index(setting)
    c = {key: _per_setting(value, i) for key, value in COMMANDS[method][1].items()}
    batch = config.train.batch_size
    assert batch == c["batch"]
    first = c["lr"] * (batch / 256 if c["scaled"] else 1.0)  # init_lr of the trainers
    for task, lr in ((0, first), (1, first if c["same_lr"] else first / 10)):
        assert peak_learning_rate(config.optim.base_lr, batch, task, base_batch=config.optim.base_batch,
                                  later_task_factor=config.optim.later_task_lr_factor) == pytest.approx(lr)
    assert (config.optim.name, config.optim.weight_decay) == (c["optimizer"], c["wd"])
    assert (config.optim.warmup_epochs, config.optim.final_lr) == (c["warmup"], c["final_lr"])
    loss = {key: _per_setting(value, i) for key, value in c["loss"].items()}
    assert {key: config.ssl.loss[key] for key in loss} == loss
    cromo = config.strategy.cromo
    assert config.strategy.replay_batch == c["replay"]
    assert cromo.mixup.lam == c["lam"] and (cromo.mixup.value if c["lam"] == "fixed" else cromo.mixup.alpha) == (
        0.7 if c["lam"] == "fixed" else 1.0)
    assert (cromo.mixup.weight, cromo.distill_weight) == (0.5, c["distill"])
    assert (cromo.mixup.loss, cromo.distill_form, cromo.distill_input) == (
        c["mixup_loss"], c["distill_form"], c["distill_input"])
    # What the presets share: the setting (epochs, memory) and the heads.
    paper = _validated(setting, method)
    for key in ("split", "model", "augment", "eval"):
        assert config[key].to_dict() == paper[key].to_dict(), key
    assert (config.train.epochs, config.train.first_task_epochs) == (paper.train.epochs, paper.train.first_task_epochs)
    assert config.strategy.samples_per_task == paper.strategy.samples_per_task


def test_the_presets_reach_every_config_file_and_are_checked():
    cromo10 = load(ROOT / "configs" / "cromo_cifar10.py", "barlow_twins,official")
    assert (cromo10.reference, cromo10.optim.base_lr, cromo10.optim.later_task_lr_factor) == ("official", 0.25, 0.1)
    cromo100 = load(ROOT / "configs" / "cromo_cifar100.py", "split5,corinfomax,official")
    assert (cromo100.reference, cromo100.train.batch_size, cromo100.strategy.cromo.distill_form) == (
        "official", 256, "split_views")
    assert load(ROOT / "configs" / "cromo_cifar100.py", "split10,simclr").reference == "paper"
    tiny = load(ROOT / "configs" / "cromo_tinyimagenet.py", "corinfomax,official")
    assert (tiny.optim.base_lr, tiny.ssl.loss.sim_loss_weight) == (0.1, 500.0)
    reduced = load(ROOT / "configs" / "cifar10_split2_reduced.py", "cassle_plus,official")
    assert (reduced.strategy.name, reduced.reference, reduced.optim.base_lr, reduced.train.epochs) == (
        "cassle_plus", "official", 0.25, 50)
    for name in ("cassle", "er", "sycon"):
        baseline = load(ROOT / "configs" / f"{name}.py", "cifar100_split10,byol,official")
        assert (baseline.strategy.name, baseline.reference, baseline.strategy.replay_batch) == (name, "official", 128)
    with pytest.raises(ConfigError, match=r"^config argument 'cifar10_split2,byol,oficial': reference 'oficial' "
                                          r"is not one of: paper, official$"):
        load(ROOT / "configs" / "er.py", "cifar10_split2,byol,oficial")
    with pytest.raises(ConfigError, match=r"^reference='official': the official CroMo-Mixup commands cover "
                                          r"barlow_twins, simclr, byol, corinfomax, not ssl.method='vicreg'$"):
        load(ROOT / "configs" / "er.py", "cifar10_split2,vicreg,official")


def test_baseline_and_smoke_arguments():
    config = load(ROOT / "configs" / "lump.py", "cifar10_split2,simclr")
    assert config.strategy.name == "lump" and config.ssl.method == "simclr"
    assert config.strategy.replay_batch == config.train.batch_size  # LUMP mixes the whole batch
    for method in METHODS.names():
        validate(load(ROOT / "configs" / "smoke.py", f"cromo,{method}" if method != "swav" else "er,swav"))
    with pytest.raises(ConfigError, match=r"expected '<setting>\[,<ssl method>\[,paper\|official\]\]'"):
        load(ROOT / "configs" / "er.py", "cifar10_split2,simclr,paper,extra")


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
        (lambda c: c.update({"reference": "oficial"}), r"^reference='oficial' is not one of: paper, official$"),
        (lambda c: c.strategy.cromo.update({"distill_form": "split_views"}),
         r"^strategy.cromo.distill_form='split_views' splits CorInfoMax's loss across the views; "
         r"ssl.method='barlow_twins' has no such form$"),
        (lambda c: c.strategy.cromo.update({"distill_input": "mixed"}), r"^strategy.cromo.distill_input='mixed'"),
        (lambda c: c.strategy.cromo.mixup.update({"loss": "vicreg"}), r"^strategy.cromo.mixup.loss='vicreg'"),
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
