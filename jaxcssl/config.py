"""Configuration schema, paper presets and validation (``ml_collections.ConfigDict``).

Every config file under ``configs/`` starts from :func:`base_config` (the schema, with defaults)
and changes values; :func:`validate` runs before anything compiles and raises one
:class:`ConfigError` line that names the culprit (an unknown key, method, strategy or dataset, a
split that does not fit, a batch that does not divide over the devices, ...).

The schema is assembled from the registries: every strategy contributes ``strategy.<name>.*`` (its
``CONFIG``), every learner ``<name>.*``, and each checks its own values (``check``); the names of
``learner.name``, ``strategy.name``, ``ssl.method`` and the evaluation protocols are the registries'.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections

from jaxcssl import learners, methods, optim, strategies
from jaxcssl.data import splits
from jaxcssl.errors import ConfigError
from jaxcssl.evaluation import protocols
from jaxcssl.methods import method_defaults

DATASETS = ("cifar10", "cifar100", "tiny_imagenet", "imagenet100", "synthetic")
SOURCES = ("tfds", "cifar_archive", "image_folder", "npz", "synthetic")
# Sub-dicts whose keys depend on the chosen method: checked against the method, not the schema.
FREE_FORM = ("ssl.loss", "ssl.options")
# Keys that moved; a config or command line still using one gets a line naming the new key.
RENAMED = {
    "strategy.distill_weight": "strategy.<cassle|cassle_plus|cromo>.distill_weight",
    "strategy.mixup": "strategy.cromo.mixup",
    "strategy.lump_alpha": "strategy.lump.alpha",
    "strategy.ewc_weight": "strategy.ewc.weight",
    "strategy.ewc_batches": "strategy.ewc.batches",
    "strategy.der_weight": "strategy.der.weight",
    "strategy.sycon_temperature": "strategy.sycon.temperature",
    "strategy.sycon_stability_weight": "strategy.sycon.stability_weight",
    "strategy.sycon_negative_weight": "strategy.sycon.negative_weight",
}

# The presets of the CroMo-Mixup configs (``config.reference``): the paper's values (Table 5, Eq. 3-5,
# Sec. D.1; where it gives none, the official commands') or the official commands'.
REFERENCES = ("paper", "official")

_OFFICIAL_CROMO = {"strategy.cromo.mixup.weight": 0.5, "strategy.cromo.distill_weight": 0.5}  # ½ on both sums
_SAME_LR_MISSING = {"optim.later_task_lr_factor": 0.1}  # no --same_lr: lr / 10 after the first task
# Where the official CroMo-Mixup commands (Continual_Experiments/final_commands.sh and cont_commands.sh,
# the *_mixed_distillation runs, as their trainers read them) differ from the paper: config keys per SSL
# objective, for every dataset ("*") and per dataset. The other strategies take the same values.
OFFICIAL_COMMANDS: dict[str, dict[str, dict[str, Any]]] = {
    "barlow_twins": {
        "*": {**_OFFICIAL_CROMO, "optim.base_lr": 0.25, "strategy.cromo.mixup.lam": "fixed"},
        "cifar10": _SAME_LR_MISSING,
        "tiny_imagenet": {"optim.base_lr": 0.1},
    },
    "simclr": {
        "*": {**_OFFICIAL_CROMO, "optim.name": "lars"},
        "cifar10": _SAME_LR_MISSING,
        "cifar100": _SAME_LR_MISSING,
    },
    "byol": {
        # The BYOL commands pass --bsize 64, which the trainer does not read: its replay batch is
        # --replay_bs's default, 128.
        "*": {**_OFFICIAL_CROMO, "strategy.replay_batch": 128, "strategy.cromo.distill_input": "current_and_mixed"},
        "cifar10": _SAME_LR_MISSING,
        "cifar100": _SAME_LR_MISSING,
        "tiny_imagenet": {"optim.weight_decay": 1e-6},
    },
    "corinfomax": {
        # The trainer sums its split distillation without --lambdap and without halving it: ζ = 1.
        "*": {"strategy.cromo.mixup.weight": 0.5, "train.batch_size": 256, "strategy.cromo.mixup.loss": "barlow_twins",
              "strategy.cromo.distill_form": "split_views"},
        "tiny_imagenet": {"optim.base_lr": 0.1},
    },
}

# CroMo-Mixup Sec. 6.1, Table 6 and the official scripts.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "cifar10_split2": dict(
        dataset="cifar10", classes_per_task=(5, 5), epochs=500, first_task_epochs=0, samples_per_task=500,
        backbone="resnet18",
    ),
    "cifar100_split5": dict(
        dataset="cifar100", classes_per_task=(20,) * 5, epochs=750, first_task_epochs=0, samples_per_task=500,
        backbone="resnet18",
    ),
    "cifar100_split10": dict(
        dataset="cifar100", classes_per_task=(10,) * 10, epochs=350, first_task_epochs=600, samples_per_task=100,
        backbone="resnet18",
    ),
    "tinyimagenet_split10": dict(
        dataset="tiny_imagenet", classes_per_task=(20,) * 10, epochs=350, first_task_epochs=500,
        samples_per_task=100, backbone="resnet50", source="image_folder",
    ),
}


def _config_dict(defaults: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A registry entry's ``CONFIG`` as a ConfigDict; ``None`` defaults accept a float override."""
    out = ml_collections.ConfigDict()
    for key, value in defaults.items():
        if isinstance(value, Mapping):
            out[key] = _config_dict(value)
        elif value is None:
            out[key] = ml_collections.FieldReference(None, field_type=float)
        else:
            out[key] = value
    return out


def base_config() -> ml_collections.ConfigDict:
    """The schema: every key a config may set, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    # paper | official: the preset a config file's argument chose (e.g. configs/cromo_cifar10.py:byol,official);
    # its values follow it, so it is set through the argument, not changed on its own.
    c.reference = "paper"

    c.dataset = ml_collections.ConfigDict(dict(
        name="cifar100",
        source="tfds",          # tfds | cifar_archive | image_folder | npz | synthetic
        path="",                # archive / folder / .npz for the local sources
        data_dir="",            # TFDS data_dir ("" = TFDS default)
        cache_dir="",           # decoded image-folder cache ("" = <path>.cache beside the source)
        label_mode="fine",      # CIFAR-100: fine | coarse
        classes=(),             # ImageNet-100 class list (wnids)
        image_size=0,           # resize on load (0 = keep)
        synthetic=ml_collections.ConfigDict(dict(
            num_classes=10, train_per_class=100, test_per_class=20, image_size=16, channels=3, noise=0.1, seed=0,
        )),
    ))
    c.split = ml_collections.ConfigDict(dict(
        kind="class_incremental",    # class_incremental | data_incremental
        classes_per_task=(20, 20, 20, 20, 20),
        num_tasks=0,                 # data_incremental: number of tasks
        class_order="natural",       # natural | permuted (order_seed) | cassle (CaSSLe's CIFAR-100 order)
        order_seed=0,
        schedule="sequential",       # sequential | interleaved (CIL/DIL-minibatch study, one task per step)
    ))
    c.model = ml_collections.ConfigDict(dict(
        backbone="resnet18",     # resnet18 | resnet50
        width=64,                # base width (64 standard; 8-16 for tiny models)
        stem="cifar",            # cifar | imagenet
        norm="",                 # batch | group_ws ("" = the method's reference choice)
        dtype="float32",         # compute dtype: float32 | bfloat16 (parameters stay float32)
        head_scale=1.0,          # multiplies every head width
    ))
    c.ssl = ml_collections.ConfigDict(dict(
        method="barlow_twins",
        loss=ml_collections.ConfigDict(),     # loss keyword arguments ({} = the method's reference values)
        options=ml_collections.ConfigDict(),  # method fields, e.g. distill_temperature, queue_size
        ema_base=0.99,                        # BYOL / MoCo target momentum, cosine to 1 over the run
    ))
    c.augment = ml_collections.ConfigDict(dict(
        preset="",      # "" = the SSL method's reference augmentations
        image_size=0,   # output size (0 = the dataset's)
    ))
    c.learner = ml_collections.ConfigDict(dict(
        name="continual",            # training protocol: continual (epochs x tasks, one strategy)
    ))
    for name, learner in learners.REGISTRY.items():
        if learner.CONFIG:
            c[name] = _config_dict(learner.CONFIG)
    c.strategy = ml_collections.ConfigDict(dict(
        name="cromo",
        # Shared by the strategies that use them (each strategy's own settings: strategy.<name>.*).
        samples_per_task=500,        # replay memory: samples saved per task (CroMo Table 6)
        replay_batch=64,             # memory samples per step (R)
        distill_hidden_dim=2048,     # hidden width of CaSSLe's distillation predictor h (x model.head_scale)
        old_model_bn="batch",        # frozen old model BatchNorm: batch statistics (reference) | running
    ))
    for name, strategy in strategies.REGISTRY.items():
        if strategy.CONFIG:
            c.strategy[name] = _config_dict(strategy.CONFIG)
    c.optim = ml_collections.ConfigDict(dict(
        name="lars",                 # lars | sgd
        base_lr=0.3,                 # peak lr = base_lr * batch / base_batch
        base_batch=256,
        weight_decay=1e-4,
        momentum=0.9,
        eta=0.02,                    # LARS trust coefficient
        clip_lr=True,                # LARS clipping (solo-learn clip_lr)
        warmup_epochs=0,
        final_lr=0.0,
        later_task_lr_factor=1.0,    # 0.1 = lr/10 for tasks after the first
        # Parameter groups by path (regex on e.g. "model/backbone/.*", "distill/.*"; first match wins):
        lr_mults=(),                 # ((pattern, multiplier), ...) of the learning rate
        wd_mults=(),                 # ((pattern, multiplier), ...) of the weight decay
        frozen=(),                   # (pattern, ...) of parameters that are not updated
    ))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=256,
        epochs=500,                  # epochs per task
        first_task_epochs=0,         # 0 = same as epochs
        steps_per_call=1,            # training steps fused in one compiled call (lax.scan)
        log_every_steps=50,
        checkpoint_every_steps=1000,
        num_devices=0,               # 0 = all devices
        distributed=False,           # jax.distributed.initialize() (several processes: TPU pods, SLURM, local GPUs)
        distributed_timeout=60,      # seconds the processes wait for each other at start (more on large pods)
        reinit_each_task=False,      # train every task from the initial model: the single-task reference
                                     # runs of Kaizen's forward transfer (see eval.reference_workdir)
    ))
    c.eval = ml_collections.ConfigDict(dict(
        after_task=("knn", "linear_fast"),
        every_epochs=0,              # also run after_task every that many epochs within a task (0 = off)
        final=("knn", "linear"),
        on="test",                   # test | train (the task-confusion study reports train accuracy)
        batch_size=512,
        knn_k=200,
        knn_temperature=0.5,
        linear_epochs=200,
        linear_lr=0.2,
        linear_final_lr=0.002,
        linear_batch_size=256,
        fast_linear_epochs=100,
        fast_linear_lr=0.1,
        reference_workdir="",        # a finished run with train.reinit_each_task=True: enables forward transfer
    ))
    return c


def paper_config(
    setting: str, method: str = "barlow_twins", strategy: str = "cromo", reference: str = "paper"
) -> ml_collections.ConfigDict:
    """A CroMo-Mixup Table 2 setting with the method's hyper-parameters under ``reference``: ``"paper"``
    (Tables 5–6) or ``"official"`` (the authors' commands, :data:`OFFICIAL_COMMANDS`)."""
    if setting not in PAPER_SETTINGS:
        raise ConfigError(f"unknown paper setting {setting!r}; known: {', '.join(PAPER_SETTINGS)}")
    s = PAPER_SETTINGS[setting]
    c = base_config()
    c.reference = reference
    c.dataset.name = s["dataset"]
    c.dataset.source = s.get("source", "tfds")
    c.split.classes_per_task = tuple(s["classes_per_task"])
    c.model.backbone = s["backbone"]
    c.train.epochs = s["epochs"]
    c.train.first_task_epochs = s["first_task_epochs"]
    c.strategy.samples_per_task = s["samples_per_task"]
    apply_method(c, method)
    c.strategy.name = strategy
    return c


def paper_config_from_arg(
    strategy: str, arg: str | None, default_setting: str = "cifar100_split5"
) -> ml_collections.ConfigDict:
    """Config-file helper: ``arg`` is ``"<setting>[,<method>[,paper|official]]"``, e.g. ``"cifar10_split2,simclr"``."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    if len(parts) > 3:
        raise ConfigError(f"config argument {arg!r}: expected '<setting>[,<ssl method>[,paper|official]]'")
    setting = parts[0] if parts else default_setting
    method = parts[1] if len(parts) > 1 else "barlow_twins"
    reference = parts[2] if len(parts) > 2 else "paper"
    if reference not in REFERENCES:
        raise ConfigError(f"config argument {arg!r}: reference {reference!r} is not one of: {', '.join(REFERENCES)}")
    config = paper_config(setting, method, strategy, reference)
    if strategy == "lump":
        config.strategy.replay_batch = config.train.batch_size  # LUMP mixes the whole batch
    return config


def apply_method(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """Set ``ssl.method`` and the method's optimiser, batch, loss and mixup λ under ``c.reference``."""
    d = method_defaults(method, c.dataset.name)
    c.ssl.method = method
    c.ssl.loss = ml_collections.ConfigDict(d["loss"])
    c.ssl.ema_base = d.get("ema_base", 0.99)
    c.optim.name = d["optimizer"]
    c.optim.base_lr = d["base_lr"]
    c.optim.weight_decay = d["weight_decay"]
    c.optim.warmup_epochs = d.get("warmup_epochs", 0)
    c.optim.final_lr = d.get("final_lr", 0.0)
    c.train.batch_size = d["batch_size"]
    # Linear probe: lr 0.2, BYOL 0.1 (the reference scripts).
    c.eval.linear_lr = 0.1 if method == "byol" else 0.2
    # Eq. 3: λ ~ Beta(α, α); the paper gives neither α nor how often λ is drawn: the official code's
    # one Beta(1, 1) draw per batch.
    c.strategy.cromo.mixup.lam = "batch"
    if c.reference == "official":
        for key, value in official_values(method, c.dataset.name).items():
            _set(c, key, value)
    c.optim.base_batch = 256 if d.get("scale_lr_by_batch", True) else c.train.batch_size
    return c


def official_values(method: str, dataset: str) -> dict[str, Any]:
    """The config values of ``method`` on ``dataset`` where the official commands differ from the paper."""
    if method not in OFFICIAL_COMMANDS:
        raise ConfigError(f"reference='official': the official CroMo-Mixup commands cover "
                          f"{', '.join(OFFICIAL_COMMANDS)}, not ssl.method={method!r}")
    values = OFFICIAL_COMMANDS[method]
    return {**values["*"], **values.get(dataset, {})}


def _set(c: ml_collections.ConfigDict, key: str, value: Any) -> None:
    *groups, name = key.split(".")
    for group in groups:
        c = c[group]
    c[name] = value


def _walk(schema: ml_collections.ConfigDict, config: Mapping[str, Any], prefix: str = "") -> None:
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in schema:
            if name in RENAMED:
                raise ConfigError(f"config key {name!r} is now {RENAMED[name]!r}")
            known = ", ".join(sorted(schema.keys()))
            raise ConfigError(f"unknown config key {name!r} (known at this level: {known})")
        if name in FREE_FORM:
            continue
        if isinstance(schema[key], ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"config key {name!r} must be a group of settings, got {value!r}")
            _walk(schema[key], value, name + ".")


def _one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


def _positive(name: str, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be > 0")


def _nonnegative(name: str, value: Any) -> None:
    if not value >= 0:
        raise ConfigError(f"{name}={value!r} must be >= 0")


# Loss arguments that must be > 0 (the others, weights and coefficients, must be >= 0).
_POSITIVE_LOSS_ARGUMENTS = ("scale", "temperature", "whitening_size", "sinkhorn_epsilon", "sinkhorn_iterations")


def _check_loss(config: ml_collections.ConfigDict) -> None:
    """``ssl.loss`` holds arguments of the method's loss, with values that can work."""
    method = config.ssl.method
    known = method_defaults(method, config.dataset.name)["loss"]
    for key, value in config.ssl.loss.items():
        if key not in known:
            raise ConfigError(f"ssl.loss.{key} is not an argument of {method!r}'s loss; its arguments: "
                              f"{', '.join(sorted(known)) or '(none)'}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if type(value) is not type(known[key]):
                raise ConfigError(f"ssl.loss.{key}={value!r} must be a {type(known[key]).__name__} like its "
                                  f"default {known[key]!r}")
            continue
        if key in _POSITIVE_LOSS_ARGUMENTS:
            _positive(f"ssl.loss.{key}", value)
        else:
            _nonnegative(f"ssl.loss.{key}", value)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check ``config`` against the schema and the enumerations; raise one :class:`ConfigError`.

    Checks that need the data (a split that does not match the dataset's classes) run when the
    dataset is loaded, still before anything compiles.
    """
    _walk(base_config(), config)
    _one_of("reference", config.reference, REFERENCES)
    _one_of("dataset.source", config.dataset.source, SOURCES)
    if config.dataset.source != "image_folder" and config.dataset.source != "npz":
        _one_of("dataset.name", config.dataset.name, DATASETS)
    if config.dataset.source in ("image_folder", "npz", "cifar_archive") and not config.dataset.path:
        raise ConfigError(f"dataset.source={config.dataset.source!r} needs dataset.path")
    _one_of("split.kind", config.split.kind, ("class_incremental", "data_incremental"))
    _one_of("split.class_order", config.split.class_order, splits.CLASS_ORDERS)
    _one_of("split.schedule", config.split.schedule, ("sequential", "interleaved"))
    if config.split.kind == "class_incremental" and not config.split.classes_per_task:
        raise ConfigError("split.classes_per_task is empty")
    if config.split.kind == "data_incremental":
        _positive("split.num_tasks", config.split.num_tasks)
    _one_of("model.backbone", config.model.backbone, ("resnet18", "resnet50"))
    _one_of("model.stem", config.model.stem, ("cifar", "imagenet"))
    _one_of("model.norm", config.model.norm, ("", "batch", "group_ws"))
    _one_of("model.dtype", config.model.dtype, ("float32", "bfloat16"))
    _positive("model.width", config.model.width)
    _positive("model.head_scale", config.model.head_scale)
    _one_of("ssl.method", config.ssl.method, methods.REGISTRY.names())
    _check_loss(config)
    _one_of("optim.name", config.optim.name, optim.OPTIMIZERS)
    for key in ("base_lr", "base_batch", "eta"):
        _positive(f"optim.{key}", config.optim[key])
    for key in ("weight_decay", "warmup_epochs", "final_lr", "later_task_lr_factor"):
        _nonnegative(f"optim.{key}", config.optim[key])
    if not 0.0 <= config.optim.momentum < 1.0:
        raise ConfigError(f"optim.momentum={config.optim.momentum!r} must lie in [0, 1)")
    try:
        optim.ParamRules(tuple(map(tuple, config.optim.lr_mults)), tuple(map(tuple, config.optim.wd_mults)),
                         tuple(config.optim.frozen)).check()
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    for key in ("batch_size", "epochs", "steps_per_call", "log_every_steps", "checkpoint_every_steps"):
        _positive(f"train.{key}", config.train[key])
    _nonnegative("train.first_task_epochs (0: same as train.epochs)", config.train.first_task_epochs)
    _nonnegative("train.num_devices (0: all)", config.train.num_devices)
    _positive("train.distributed_timeout", config.train.distributed_timeout)
    _one_of("strategy.old_model_bn", config.strategy.old_model_bn, ("batch", "running"))
    learners.REGISTRY.get(config.learner.name).check(config)
    for stage in ("after_task", "final"):
        for name in config.eval[stage]:
            _one_of(f"eval.{stage}", name, protocols.REGISTRY.names())
    _one_of("eval.on", config.eval.on, ("test", "train"))
    if not config.eval.every_epochs >= 0:
        raise ConfigError(f"eval.every_epochs={config.eval.every_epochs!r} must be >= 0")
    for key in ("batch_size", "knn_k", "knn_temperature", "linear_epochs", "linear_lr", "fast_linear_epochs"):
        _positive(f"eval.{key}", config.eval[key])
    return config


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (works on dicts and ConfigDicts)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
