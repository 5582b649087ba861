"""FUSSL (arXiv 2210.15818): an SSL ensemble, fuzzy pseudo-labels, then supervised training of one member.

For every task of the split (one task holding every class: the paper's offline setting), and every
cycle of progressive relabelling (``fussl.cycles``; 1: the method):

1. **Phase 1** (Sec. 3.1, 4.1.3): ``m`` members of the chosen SSL objective, identically initialised,
   each trained on its own pair out of ``2m`` augmented views of every sample; the members are one
   stacked pytree (:mod:`jaxcssl.fussl.ensemble`) and the loss and optimiser update are ``vmap``-ped
   over them in one compiled step. The projector outputs ``fussl.projector_dim`` (1000) latents,
   L2-normalised, for every objective. Schedule: the peak rate for ``fussl.phase1.drop_epochs``
   epochs, then ``fussl.phase1.late_lr`` (or the library's warm-up + cosine).
2. **Pseudo-labelling** at the end of phase 1 (Sec. 3.2): every member embeds every un-augmented
   training image of the task; :mod:`jaxcssl.fussl.pseudo_labels` turns the votes into hard and
   soft labels; the member with the lowest error against them is chosen (Sec. 3.3).
3. **Phase 2** (Sec. 3.3, 4.1.3): the chosen member, trained on the original images (no
   augmentation) with the soft-target cross-entropy over the pseudo-classes, Adam lr 1e-3: all
   layers for ``fussl.phase2.unfrozen_fraction`` of its epochs (program ``phase2``), then only the
   last ``fussl.phase2.trained_stages`` ResNet stage(s) and the projector (program ``phase2_frozen``:
   the other stages frozen through optimiser parameter groups, their BatchNorm in inference mode).

``fussl.variant="continued"`` is the matching-compute baseline ("1200 ep", Table 1): phase 1
continued for ``fussl.phase2.epochs`` more epochs instead of labels and phase 2. With a split of
several tasks, each task is trained so in turn, its members starting from the previous task's
phase-2 model (fine-tuning across tasks). ``fussl.cross_class.enabled`` pre-trains on half of the
classes of every superclass and evaluates on the other half (Sec. 5, Table 4).

Evaluation sees the chosen member after phase 1 (the "Base" numbers; member 0 for the continued
variant) and the phase-2 model after phase 2; ``results.json`` holds the pseudo-label statistics
(``learner.pseudo_labels``) and what each phase index is (``learner.phases``).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Hashable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jaxcssl import builders, methods, optim, sharding, strategies
from jaxcssl.data import splits
from jaxcssl.data.augment import preprocess
from jaxcssl.engine import rng
from jaxcssl.engine.schedules import TaskCosine
from jaxcssl.errors import ConfigError
from jaxcssl.fussl import cross_class, ensemble
from jaxcssl.fussl import pseudo_labels as pl
from jaxcssl.fussl.schedules import Constant, Continued, StepDecay
from jaxcssl.learners.base import Learner, Phase
from jaxcssl.learners.continual import TaskInputs, batch_indices, task_epochs
from jaxcssl.methods import ssl_views
from jaxcssl.methods.base import SSLMethod, SSLModel, ema_momentum, ema_update
from jaxcssl.models.heads import HeadSpec
from jaxcssl.strategies.base import ModelState, ssl_only

Pytree = Any
PROGRAMS = ("ensemble", "phase2", "phase2_frozen")
PREDICTOR = r"model/predictor/.*"  # BYOL's / SimSiam's predictor, SwAV's prototypes: not trained in phase 2
STRATEGIES = ("finetune", "offline")


@flax.struct.dataclass
class Members:
    """The ensemble: every leaf has a leading member axis of size ``m``."""

    params: Pytree  # {"model": ...}
    model_state: ModelState  # batch statistics, loss state ("ssl"), EMA target
    opt_state: Pytree


@flax.struct.dataclass
class Classifier:
    """The phase-2 model: the chosen member trained on the pseudo-labels."""

    params: Pytree  # {"model": ...}
    batch_stats: Pytree  # {"model": ...}
    opt_state: Pytree  # all layers (program "phase2")
    frozen_opt_state: Pytree  # the last stage(s) and the projector (program "phase2_frozen")


@flax.struct.dataclass
class LabelStats:
    """One row per pseudo-labelling (task × cycle)."""

    done: jax.Array  # bool [L]
    samples: jax.Array  # int32 [L]
    hard_fraction: jax.Array  # float32 [L]: one pseudo-class carries the label
    soft_fraction: jax.Array  # float32 [L]: several pseudo-classes share it
    dropped_fraction: jax.Array  # float32 [L]: no label (labels="hard")
    distinct_classes: jax.Array  # int32 [L]
    member_errors: jax.Array  # float32 [L, m]
    chosen: jax.Array  # int32 [L]


@flax.struct.dataclass
class FusslState:
    step: jax.Array  # int32: steps taken in the whole run
    phase_step: jax.Array  # int32: steps taken in the current phase
    members: Members
    classifier: Classifier
    labels: pl.PseudoLabels  # [N, m] over the whole training set (the current task's rows are set)
    stats: LabelStats
    evaluated: jax.Array  # int32: the member evaluation sees, or -1: the phase-2 model


class EnsembleInputs(NamedTuple):
    images: jax.Array  # uint8 [N, H, W, C]
    indices: jax.Array  # int32 [1, n]: the task's samples
    order_key: jax.Array
    step_key: jax.Array
    schedule: Continued
    ema_steps: jax.Array  # int32 []: phase-1 steps of the task (the EMA momentum's horizon)


class Phase2Inputs(NamedTuple):
    images: jax.Array
    indices: jax.Array
    order_key: jax.Array
    schedule: Constant


@dataclasses.dataclass(frozen=True)
class Stage:
    """What a phase of the plan is, beyond its :class:`Phase`."""

    kind: str  # one of PROGRAMS
    task: int  # index into the task rows
    cycle: int
    offset: int = 0  # phase-1 steps of this task's schedule before this phase
    continued: bool = False  # the "1200 ep" continuation: same optimiser state, same schedule
    takes_member: bool = False  # the first phase-2 phase of a cycle: copies the chosen member


def _logits(model: SSLModel, x: jax.Array, train: bool) -> jax.Array:
    """Backbone + projector (no predictor): the pseudo-class logits of phase 2 and the labelling."""
    return model.projector(model.backbone(x, train=train), train=train)


@functools.partial(jax.jit, static_argnames=("model", "image_size", "stats"))
def _member_outputs(model: SSLModel, params: Pytree, batch_stats: Pytree, images: jax.Array, *,
                    image_size: int, stats) -> jax.Array:
    """``[m, B, D]``: every member's raw projector output for uint8 images (inference mode)."""
    x = preprocess(images, image_size, *stats)
    apply = lambda p, s: model.apply({"params": p, "batch_stats": s}, x, False, method=_logits)
    return jax.vmap(apply)(params, batch_stats)


@functools.partial(jax.jit, static_argnames=("mode", "membership", "temperature"))
def _label_batch(outputs: jax.Array, *, mode: str, membership: str, temperature: float):
    """Labels of a batch from the members' outputs, and each member's top-1 and cross-entropy error."""
    labels = pl.fuzzy_labels(pl.member_votes(outputs), mode, membership)
    cross_entropy = jax.vmap(lambda logits: pl.soft_cross_entropy(logits, labels))(_scaled(outputs, temperature))
    return labels, pl.member_errors(labels), cross_entropy


def _scaled(outputs: jax.Array, temperature: float) -> jax.Array:
    """Phase-2 logits: the raw projector output (temperature 0) or the normalised output / temperature."""
    if temperature == 0:
        return outputs
    normalised = outputs / jnp.linalg.norm(outputs, axis=-1, keepdims=True).clip(1e-12)
    return normalised / temperature


def _features(method: SSLMethod, variables: Pytree, images: jax.Array) -> jax.Array:
    return method.features(variables["params"], variables["batch_stats"], images)


@functools.partial(jax.jit, static_argnames=("method", "image_size", "stats"))
def _embed(method: SSLMethod, variables: Pytree, images: jax.Array, *, image_size: int, stats) -> jax.Array:
    """uint8 batch -> eval-mode backbone features; compiled once per (method, shapes)."""
    return _features(method, variables, preprocess(images, image_size, *stats))


def frozen_patterns(num_stages: int, trained_stages: int) -> tuple[str, ...]:
    """Parameter paths frozen in the last part of phase 2: the stem and the first stages."""
    frozen = num_stages - trained_stages
    if frozen <= 0:
        return ()
    stages = "|".join(str(i) for i in range(1, frozen + 1))
    return (rf"model/backbone/(stem_[a-z]+|stage({stages})_block\d+)/.*",)


def fussl_projector(config) -> HeadSpec:
    """Sec. 4.1.1: ``fussl.projector_dim`` outputs for every objective, L2-normalised (``normalize_latents``)."""
    c = config.fussl
    dim = c.projector_dim
    if c.projector == "paper":  # two Linear-BN-ReLU layers and a linear output, all of size 1000
        return HeadSpec((dim, dim), dim, use_bn=True, final_bn=False, out_bias=True, l2_normalize=c.normalize_latents)
    reference = methods.REGISTRY.get(config.ssl.method).projector_spec(config.dataset.name)
    return dataclasses.replace(reference, out_dim=dim, l2_normalize=c.normalize_latents)


def build_fussl_method(config) -> SSLMethod:
    """The SSL objective of ``ssl.method`` with FUSSL's projector."""
    return methods.build_method(
        config.ssl.method, dataset=config.dataset.name, backbone=builders.build_backbone(config),
        head_scale=config.model.head_scale, dtype=builders.DTYPES[config.model.dtype],
        loss_kwargs=config.ssl.loss.to_dict() or None, projector=fussl_projector(config),
        **config.ssl.options.to_dict(),
    )


def _one_of(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(map(str, allowed))}")


class FusslLearner(Learner):
    """Phase 1 (ensemble) → fuzzy pseudo-labels → phase 2 (one member, part of it frozen), per task."""

    name = "fussl"
    CONFIG = dict(
        ensemble_size=3,             # m (Sec. 3.1; Fig. 2: m = 1..5, best 3)
        projector="paper",           # paper: Linear-BN-ReLU x2 + Linear, all projector_dim (Sec. 4.1.1) | method
        projector_dim=1000,          # projector output = number of pseudo-classes (x model.head_scale)
        normalize_latents=True,      # L2-normalise the projector output for every objective (Sec. 4)
        phase1=dict(
            schedule="step",         # step: optim.base_lr for drop_epochs, then late_lr (Sec. 4.1.3) | cosine
            drop_epochs=10,
            late_lr=0.001,
        ),
        labels="fuzzy",              # fuzzy | hard (soft samples dropped) | hard_all | soft (Sec. 5 Cases 1-2, 4-5)
        membership="score",          # soft-label memberships: score (renormalised top values) | equal (1/m)
        selection="top1",            # member choice: lowest top1 error | cross_entropy against the labels
        phase2=dict(
            epochs=400,              # Sec. 4.1.3
            unfrozen_fraction=0.25,  # all layers for this share of phase 2 (100 of 400 epochs), then frozen
            trained_stages=1,        # ResNet stages trained after the unfrozen part (the last stage)
            optimizer="adam",        # adam | lars | sgd
            lr=0.001,
            weight_decay=1e-6,
            batch_size=0,            # 0 = train.batch_size
            temperature=0.0,         # 0: cross-entropy on the raw projector output; > 0: normalised / temperature
        ),
        cycles=1,                    # progressive relabelling (Sec. 5, Case 3): phase 1 -> labels -> phase 2, repeated
        restart="phase2",            # next cycle's / task's members: copies of the phase-2 model | members (their own)
        variant="fussl",             # fussl | continued (the "1200 ep" baseline: phase 1 for phase2.epochs more)
        cross_class=dict(
            enabled=False,           # pre-train on half of every superclass's classes, evaluate on the rest
            classes_per_superclass=0,  # 0: the dataset's coarse labels (CIFAR-100); k: classes c // k
            seed=-1,                 # -1: the lowest class ids of each superclass pre-train; >= 0: a random half
        ),
    )

    # --- configuration -----------------------------------------------------------------------
    @classmethod
    def check(cls, config) -> None:
        c = config.fussl
        if not (isinstance(c.ensemble_size, int) and c.ensemble_size >= 1):
            raise ConfigError(f"fussl.ensemble_size={c.ensemble_size!r} must be an integer >= 1")
        _one_of("fussl.projector", c.projector, ("paper", "method"))
        if not c.projector_dim >= 2:
            raise ConfigError(f"fussl.projector_dim={c.projector_dim!r} must be >= 2")
        _one_of("fussl.phase1.schedule", c.phase1.schedule, ("step", "cosine"))
        if not c.phase1.drop_epochs >= 0 or not c.phase1.late_lr >= 0:
            raise ConfigError(f"fussl.phase1: drop_epochs={c.phase1.drop_epochs!r} and late_lr={c.phase1.late_lr!r} "
                              "must be >= 0")
        _one_of("fussl.labels", c.labels, pl.MODES)
        _one_of("fussl.membership", c.membership, pl.MEMBERSHIPS)
        _one_of("fussl.selection", c.selection, ("top1", "cross_entropy"))
        _one_of("fussl.variant", c.variant, ("fussl", "continued"))
        _one_of("fussl.restart", c.restart, ("phase2", "members"))
        p2 = c.phase2
        _one_of("fussl.phase2.optimizer", p2.optimizer, optim.OPTIMIZERS)
        if not (p2.epochs >= 1 if c.variant == "fussl" else p2.epochs >= 0):
            raise ConfigError(f"fussl.phase2.epochs={p2.epochs!r} must be >= 1")
        if not 0.0 <= p2.unfrozen_fraction <= 1.0:
            raise ConfigError(f"fussl.phase2.unfrozen_fraction={p2.unfrozen_fraction!r} must lie in [0, 1]")
        if not 1 <= p2.trained_stages <= 4:
            raise ConfigError(f"fussl.phase2.trained_stages={p2.trained_stages!r} must be 1..4 (ResNet stages)")
        if not p2.lr > 0:
            raise ConfigError(f"fussl.phase2.lr={p2.lr!r} must be > 0")
        for key in ("weight_decay", "batch_size", "temperature"):
            if not p2[key] >= 0:
                raise ConfigError(f"fussl.phase2.{key}={p2[key]!r} must be >= 0")
        if not (isinstance(c.cycles, int) and c.cycles >= 1):
            raise ConfigError(f"fussl.cycles={c.cycles!r} must be an integer >= 1")
        if c.variant == "continued" and c.cycles > 1:
            raise ConfigError("fussl.variant='continued' continues one phase 1: it takes fussl.cycles=1")
        epochs = {"train.epochs": config.train.epochs, "train.first_task_epochs": config.train.first_task_epochs,
                  "fussl.phase2.epochs": p2.epochs}
        for key, value in epochs.items():
            if value % c.cycles:
                raise ConfigError(f"fussl.cycles={c.cycles} does not divide {key}={value}")
        if config.strategy.name not in STRATEGIES:
            raise ConfigError(f"strategy.name={config.strategy.name!r} with learner.name='fussl': FUSSL trains each "
                              "task alone; set strategy.name='finetune' (tasks in turn) or 'offline' (tasks joined)")
        _one_of("split.schedule", config.split.schedule, ("sequential",))
        cc = c.cross_class
        if cc.enabled:
            if config.split.kind != "class_incremental" or len(config.split.classes_per_task) != 1:
                raise ConfigError("fussl.cross_class.enabled trains one task: set split.classes_per_task=(<number "
                                  "of classes>,)")
            if config.dataset.label_mode != "fine":
                raise ConfigError("fussl.cross_class.enabled needs dataset.label_mode='fine' (not the superclasses)")
            if cc.classes_per_superclass == 0 and not (config.dataset.name == "cifar100"
                                                       and config.dataset.source in ("tfds", "cifar_archive")):
                raise ConfigError(
                    f"fussl.cross_class.enabled: dataset {config.dataset.name!r} from {config.dataset.source!r} has no "
                    "coarse labels (CIFAR-100 from tfds or cifar_archive has): set "
                    "fussl.cross_class.classes_per_superclass")
            if cc.classes_per_superclass < 0:
                raise ConfigError(f"fussl.cross_class.classes_per_superclass={cc.classes_per_superclass!r} must be "
                                  ">= 0")

    # --- construction --------------------------------------------------------------------------
    def __init__(self, config, data: builders.Data):
        c = config.fussl
        self.m = c.ensemble_size
        self.method = build_fussl_method(config)
        model = self.method.model
        self.raw_model = model.clone(projector=model.projector.clone(l2_normalize=False))
        self.num_stages = len(model.backbone.stage_sizes)
        if c.phase2.trained_stages > self.num_stages:
            raise ConfigError(f"fussl.phase2.trained_stages={c.phase2.trained_stages} exceeds the "
                              f"{self.num_stages} stages of model.backbone={config.model.backbone!r}")
        frozen_stages = self.num_stages - c.phase2.trained_stages
        self.frozen_model = self.raw_model.clone(backbone=model.backbone.clone(inference_stages=frozen_stages))
        if c.cross_class.enabled:
            data, self.task_rows = self._cross_class(config, data)
        else:
            strategy = strategies.build_strategy(config, self.method)
            self.task_rows = strategy.phases(data.split.train_indices, "sequential")
        super().__init__(config, data)
        self.views = ssl_views(config.augment.preset or config.ssl.method, data.image_size, *data.stats)
        self.batch_size = config.train.batch_size
        self.phase2_batch = c.phase2.batch_size or config.train.batch_size
        sharding.check_batch_divisible(self.phase2_batch, data.mesh, "fussl.phase2.batch_size")
        self._check_wmse(config)
        self._plan, self._stages = self._make_plan()
        self.num_labellings = len(self.task_rows) * c.cycles
        self.num_classes = self.method.model.projector.out_dim

        o = config.optim
        member_shapes = jax.eval_shape(lambda: self._initial_member()[0])
        rules = optim.ParamRules(tuple(map(tuple, o.lr_mults)), tuple(map(tuple, o.wd_mults)), tuple(o.frozen))
        self.tx = optim.make(o.name, member_shapes, rules, weight_decay=o.weight_decay, momentum=o.momentum,
                             eta=o.eta, clip_lr=o.clip_lr)
        p2 = c.phase2
        make2 = functools.partial(optim.make, p2.optimizer, member_shapes, weight_decay=p2.weight_decay,
                                  momentum=o.momentum, eta=o.eta, clip_lr=o.clip_lr)
        self.tx_all = make2(optim.ParamRules(frozen=(PREDICTOR,)))
        frozen = frozen_patterns(self.num_stages, p2.trained_stages)
        settings = optim.leaf_settings(member_shapes, optim.ParamRules(frozen=frozen))
        is_frozen = [s[2] for s in jax.tree_util.tree_leaves(settings, is_leaf=lambda x: isinstance(x, tuple))]
        if frozen and not any(is_frozen):
            raise ValueError(f"the frozen-stage pattern {frozen[0]!r} matches no parameter")
        self.tx_frozen = make2(optim.ParamRules(frozen=(PREDICTOR, *frozen)))

    def _cross_class(self, config, data: builders.Data) -> tuple[builders.Data, list]:
        """Training rows of the pre-training classes; an evaluation split of one task: the held-out classes."""
        cc, dataset = config.fussl.cross_class, data.dataset
        if cc.classes_per_superclass:
            superclass = cross_class.superclasses_by_block(dataset.num_classes, cc.classes_per_superclass)
        else:
            coarse_config = copy.deepcopy(config)
            coarse_config.dataset.label_mode = "coarse"
            coarse = builders.load_dataset(coarse_config)
            try:
                superclass = cross_class.superclasses_from_labels(dataset.y_train, coarse.y_train, dataset.num_classes)
            except ValueError as error:
                raise ConfigError(f"fussl.cross_class: {error}") from None
        pretrain, held_out = cross_class.split_classes(superclass, cc.seed)
        if not len(pretrain) or not len(held_out):
            raise ConfigError(f"fussl.cross_class: the superclasses leave {len(pretrain)} classes to pre-train on and "
                              f"{len(held_out)} to evaluate on; both need at least one")
        train_rows = np.flatnonzero(np.isin(dataset.y_train, pretrain)).astype(np.int32)
        class_to_task = np.where(np.isin(np.arange(dataset.num_classes), held_out), 0, -1).astype(np.int32)
        evaluation = splits.TaskSplit(
            "class_incremental",
            train_indices=(np.flatnonzero(np.isin(dataset.y_train, held_out)).astype(np.int32),),
            test_indices=(np.flatnonzero(np.isin(dataset.y_test, held_out)).astype(np.int32),),
            task_classes=(held_out,), class_to_task=class_to_task,
        )
        logging.info("fussl cross-class: pre-training on classes %s, evaluating on %s", pretrain.tolist(),
                     held_out.tolist())
        self.cross_class_split = {"pretrain_classes": pretrain.tolist(), "evaluation_classes": held_out.tolist()}
        return dataclasses.replace(data, split=evaluation), [((0,), train_rows[None, :])]

    def _check_wmse(self, config) -> None:
        loss = self.method.loss_kwargs
        dim = self.method.model.projector.out_dim
        if config.ssl.method == "wmse" and not loss.get("eps", 0.0) and loss.get("whitening_size", 0) <= dim:
            raise ConfigError(f"ssl.loss.whitening_size={loss.get('whitening_size')} must exceed the {dim} latents "
                              "of the FUSSL projector for W-MSE (or set ssl.loss.eps > 0)")

    # --- plan ----------------------------------------------------------------------------------
    def _make_plan(self) -> tuple[list[Phase], list[Stage]]:
        config, c = self.config, self.config.fussl
        phases, stages, seen = [], [], set()
        num_tasks = len(self.task_rows)

        def add(stage: Stage, steps: int, images: int, label: str, steps_per_epoch: int, last: bool) -> None:
            tasks = self.task_rows[stage.task][0]
            prefix = f"task {stage.task + 1}/{num_tasks} " if num_tasks > 1 else ""
            prefix += f"cycle {stage.cycle + 1}/{c.cycles} " if c.cycles > 1 else ""
            phases.append(Phase(
                index=len(phases), label=prefix + label, num_steps=steps, program=stage.kind, tasks=tuple(tasks),
                seen_tasks=tuple(sorted(seen)), records_row=last and len(tasks) == 1, images_per_step=images,
                eval_every_steps=config.eval.every_epochs * steps_per_epoch,
            ))
            stages.append(stage)

        for t, (tasks, rows) in enumerate(self.task_rows):
            n = rows.shape[1]
            for what, batch in (("train.batch_size", self.batch_size), ("fussl.phase2.batch_size", self.phase2_batch)):
                if n < batch:
                    raise ValueError(f"task {t} has {n} training samples, fewer than {what}={batch}")
            seen.update(tasks)
            per_epoch1, per_epoch2 = n // self.batch_size, n // self.phase2_batch
            steps1 = task_epochs(config, t) // c.cycles * per_epoch1
            steps2 = c.phase2.epochs // c.cycles * per_epoch2
            unfrozen = round(steps2 * c.phase2.unfrozen_fraction)
            ensemble_label = f"phase 1 (ensemble of {self.m})"
            for cycle in range(c.cycles):
                last_cycle = cycle == c.cycles - 1
                if c.variant == "continued":
                    extra = c.phase2.epochs * per_epoch1
                    add(Stage("ensemble", t, cycle), steps1, self.batch_size, ensemble_label, per_epoch1, not extra)
                    if extra:
                        add(Stage("ensemble", t, cycle, offset=steps1, continued=True), extra, self.batch_size,
                            ensemble_label + " continued", per_epoch1, True)
                    continue
                add(Stage("ensemble", t, cycle, offset=cycle * steps1), steps1, self.batch_size, ensemble_label,
                    per_epoch1, False)
                parts = [("phase2", unfrozen, "phase 2 (all layers)"),
                         ("phase2_frozen", steps2 - unfrozen,
                          f"phase 2 (last {c.phase2.trained_stages} stage{'s' * (c.phase2.trained_stages > 1)} "
                          "+ projector)")]
                parts = [p for p in parts if p[1] > 0]
                for i, (kind, steps, label) in enumerate(parts):
                    add(Stage(kind, t, cycle, takes_member=i == 0), steps, self.phase2_batch, label, per_epoch2,
                        last_cycle and i == len(parts) - 1)
        return phases, stages

    def plan(self) -> list[Phase]:
        return self._plan

    def _labelling_index(self, stage: Stage) -> int:
        return stage.task * self.config.fussl.cycles + stage.cycle

    def _phase1_steps(self, task: int) -> int:
        """Phase-1 steps of ``task`` over all its cycles (and the continuation)."""
        return sum(p.num_steps for p, s in zip(self._plan, self._stages) if s.task == task and s.kind == "ensemble")

    def _phase1_schedule(self, stage: Stage) -> Continued:
        c, o = self.config.fussl, self.config.optim
        per_epoch = self.task_rows[stage.task][1].shape[1] // self.batch_size
        peak = optim.peak_learning_rate(o.base_lr, self.batch_size, stage.task, base_batch=o.base_batch,
                                        later_task_factor=o.later_task_lr_factor)
        if c.phase1.schedule == "step":
            schedule = StepDecay.create(c.phase1.drop_epochs * per_epoch, peak, c.phase1.late_lr)
        else:
            schedule = TaskCosine.create(self._phase1_steps(stage.task), o.warmup_epochs * per_epoch, peak, o.final_lr)
        return Continued.create(schedule, stage.offset)

    # --- state ---------------------------------------------------------------------------------
    def _initial_member(self) -> tuple[Pytree, ModelState]:
        """One member's parameters and model state; every member starts from these (Sec. 3.2)."""
        variables = self.method.init_variables(rng.stream(self.config.seed, "init"), self.data.image_shape)
        params = {"model": variables["params"]}
        return params, self._model_state(params, {"model": variables["batch_stats"]})

    def _model_state(self, params: Pytree, batch_stats: Pytree) -> ModelState:
        target = None
        if self.method.uses_target:
            target = jax.tree_util.tree_map(jnp.copy, {"params": params["model"], "batch_stats": batch_stats["model"]})
        return ModelState(batch_stats=batch_stats, loss_state={"ssl": self.method.init_loss_state()}, target=target)

    def _members_from(self, params: Pytree, model_state: ModelState) -> Members:
        params, model_state = ensemble.stack(params, self.m), ensemble.stack(model_state, self.m)
        return Members(params=params, model_state=model_state, opt_state=jax.vmap(self.tx.init)(params))

    def _init_host_state(self) -> FusslState:
        params, model_state = self._initial_member()
        n, m, rows = self.data.device_images.shape[0], self.m, self.num_labellings
        return FusslState(
            step=jnp.zeros((), jnp.int32),
            phase_step=jnp.zeros((), jnp.int32),
            members=self._members_from(params, model_state),
            classifier=Classifier(
                params=jax.tree_util.tree_map(jnp.copy, params),
                batch_stats=jax.tree_util.tree_map(jnp.copy, model_state.batch_stats),
                opt_state=self.tx_all.init(params), frozen_opt_state=self.tx_frozen.init(params),
            ),
            labels=pl.PseudoLabels(classes=jnp.zeros((n, m), jnp.int32), weights=jnp.zeros((n, m), jnp.float32)),
            stats=LabelStats(
                done=jnp.zeros(rows, bool), samples=jnp.zeros(rows, jnp.int32),
                hard_fraction=jnp.zeros(rows), soft_fraction=jnp.zeros(rows), dropped_fraction=jnp.zeros(rows),
                distinct_classes=jnp.zeros(rows, jnp.int32), member_errors=jnp.zeros((rows, m)),
                chosen=jnp.zeros(rows, jnp.int32),
            ),
            evaluated=jnp.zeros((), jnp.int32),
        )

    def init_state(self) -> FusslState:
        return sharding.replicate(self._init_host_state(), self.data.mesh)

    def start_phase(self, state: FusslState, phase: Phase) -> FusslState:
        """Phase 1: members restarted (from the phase-2 model or their own weights), fresh optimiser states;
        phase 2: the chosen member copied in (first phase-2 phase of a cycle), a fresh optimiser state."""
        stage, mesh = self._stages[phase.index], self.data.mesh
        if stage.kind == "ensemble":
            if stage.continued:
                return state
            members = state.members
            first = stage.task == 0 and stage.cycle == 0
            if not first and self.config.fussl.restart == "phase2" and self.config.fussl.variant == "fussl":
                params = jax.tree_util.tree_map(jnp.copy, state.classifier.params)
                model_state = self._model_state(params, jax.tree_util.tree_map(jnp.copy, state.classifier.batch_stats))
                return state.replace(members=sharding.replicate(self._members_from(params, model_state), mesh))
            opt_state = jax.vmap(self.tx.init)(members.params)
            return state.replace(members=members.replace(opt_state=sharding.replicate(opt_state, mesh)))
        classifier = state.classifier
        if stage.takes_member:
            chosen = int(state.stats.chosen[self._labelling_index(stage)])
            classifier = classifier.replace(
                params=jax.tree_util.tree_map(jnp.copy, ensemble.member(state.members.params, chosen)),
                batch_stats=jax.tree_util.tree_map(jnp.copy, ensemble.member(state.members.model_state.batch_stats,
                                                                              chosen)),
            )
        if stage.kind == "phase2":
            classifier = classifier.replace(opt_state=self.tx_all.init(classifier.params))
        else:
            classifier = classifier.replace(frozen_opt_state=self.tx_frozen.init(classifier.params))
        return state.replace(classifier=sharding.replicate(classifier, mesh))

    # --- steps ---------------------------------------------------------------------------------
    def inputs(self, phase: Phase) -> EnsembleInputs | Phase2Inputs:
        stage, seed, mesh = self._stages[phase.index], self.config.seed, self.data.mesh
        rows = sharding.replicate(self.task_rows[stage.task][1].astype(np.int32), mesh)
        order_key = rng.phase_key(seed, "epoch_order", phase.index)
        if stage.kind == "ensemble":
            return EnsembleInputs(
                images=self.data.device_images, indices=rows, order_key=order_key, step_key=rng.stream(seed, "step"),
                schedule=self._phase1_schedule(stage), ema_steps=jnp.int32(self._phase1_steps(stage.task)),
            )
        return Phase2Inputs(images=self.data.device_images, indices=rows, order_key=order_key,
                            schedule=Constant.create(self.config.fussl.phase2.lr))

    def step_fn(self, program: Hashable):
        if program == "ensemble":
            return self._ensemble_step()
        if program in ("phase2", "phase2_frozen"):
            return self._phase2_step(frozen=program == "phase2_frozen")
        raise ValueError(f"unknown FUSSL program {program!r}; known: {', '.join(PROGRAMS)}")

    def _ensemble_step(self):
        method, tx, views, m = self.method, self.tx, self.views, self.m
        mesh, batch_size, ema_base = self.data.mesh, self.batch_size, self.config.ssl.ema_base

        def step(state: FusslState, inputs: EnsembleInputs) -> tuple[FusslState, dict[str, jax.Array]]:
            rows = TaskInputs(images=None, labels=None, indices=inputs.indices, task_id=None,
                              order_key=inputs.order_key, step_key=None, schedule=None)
            images = sharding.shard_batch(inputs.images[batch_indices(state.phase_step, rows, batch_size)], mesh)
            x1, x2 = ensemble.member_views(jax.random.fold_in(inputs.step_key, state.step), images, views, m, mesh)
            hyperparams = inputs.schedule(state.phase_step)
            # BYOL's cosine momentum over the task's phase-1 steps (progress passed as a fraction of 1 step).
            progress = (inputs.schedule.offset + state.phase_step) / jnp.maximum(inputs.ema_steps, 1)
            momentum = ema_momentum(progress, 1, ema_base)

            def update(params, model_state, opt_state, v1, v2):
                loss_fn = lambda p: ssl_only(method, p, model_state, v1, v2)
                (loss, (_, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
                opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
                updates, opt_state = tx.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                if method.uses_target:
                    target = new_state.target
                    new_state = new_state.replace(
                        target={**target, "params": ema_update(target["params"], params["model"], momentum)})
                return params, new_state, opt_state, loss

            members = state.members
            params, model_state, opt_state, losses = jax.vmap(update)(
                members.params, members.model_state, members.opt_state, x1, x2)
            metrics = {"ssl": losses.mean(), **{f"ssl_{i}": losses[i] for i in range(m)}, "loss": losses.mean(),
                       "lr": hyperparams["learning_rate"]}
            members = Members(params=params, model_state=model_state, opt_state=opt_state)
            return state.replace(step=state.step + 1, phase_step=state.phase_step + 1, members=members), metrics

        return step

    def _phase2_step(self, frozen: bool):
        model = self.frozen_model if frozen else self.raw_model
        tx = self.tx_frozen if frozen else self.tx_all
        mesh, batch_size, image_size = self.data.mesh, self.phase2_batch, self.data.image_size
        mean, std = self.data.stats
        temperature = self.config.fussl.phase2.temperature

        def step(state: FusslState, inputs: Phase2Inputs) -> tuple[FusslState, dict[str, jax.Array]]:
            rows = TaskInputs(images=None, labels=None, indices=inputs.indices, task_id=None,
                              order_key=inputs.order_key, step_key=None, schedule=None)
            index = batch_indices(state.phase_step, rows, batch_size)
            x = preprocess(sharding.shard_batch(inputs.images[index], mesh), image_size, mean, std)
            labels = pl.PseudoLabels(state.labels.classes[index], state.labels.weights[index])
            classifier = state.classifier
            num_kept = jnp.maximum(pl.kept(labels).sum(), 1)

            def loss_fn(params):
                variables = {"params": params["model"], "batch_stats": classifier.batch_stats["model"]}
                logits, updates = model.apply(variables, x, True, method=_logits, mutable=["batch_stats"])
                logits = _scaled(logits, temperature)
                loss = pl.soft_cross_entropy(logits, labels).sum() / num_kept
                return loss, (updates.get("batch_stats", variables["batch_stats"]), logits)

            (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(classifier.params)
            opt_state = classifier.frozen_opt_state if frozen else classifier.opt_state
            hyperparams = inputs.schedule(state.phase_step)
            opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
            updates, opt_state = tx.update(grads, opt_state, classifier.params)
            classifier = classifier.replace(params=optax.apply_updates(classifier.params, updates),
                                            batch_stats={"model": batch_stats})
            classifier = (classifier.replace(frozen_opt_state=opt_state) if frozen
                          else classifier.replace(opt_state=opt_state))
            agree = (jnp.argmax(logits, -1) == pl.top_class(labels)) & pl.kept(labels)
            metrics = {"ce": loss, "loss": loss, "label_top1": agree.sum() / num_kept,
                       "lr": hyperparams["learning_rate"]}
            return state.replace(step=state.step + 1, phase_step=state.phase_step + 1, classifier=classifier), metrics

        return step

    # --- phase end -----------------------------------------------------------------------------
    def end_phase(self, state: FusslState, phase: Phase) -> FusslState:
        """After phase 1: the pseudo-labels and the chosen member; after phase 2: evaluate the phase-2 model."""
        stage = self._stages[phase.index]
        if stage.kind != "ensemble":
            return state.replace(evaluated=sharding.replicate(jnp.int32(-1), self.data.mesh))
        if self.config.fussl.variant == "continued":
            return state.replace(evaluated=sharding.replicate(jnp.int32(0), self.data.mesh))
        return self._pseudo_label(state, stage)

    def _pseudo_label(self, state: FusslState, stage: Stage) -> FusslState:
        """Sec. 3.2: embed the task's original images with every frozen member, label, choose a member."""
        c, mesh = self.config.fussl, self.data.mesh
        task = np.asarray(self.task_rows[stage.task][1][0])
        members = state.members
        params = members.params["model"]
        batch_stats = members.model_state.batch_stats["model"]
        chunk = min(self.config.eval.batch_size, len(task))
        padded = np.resize(task, -(-len(task) // chunk) * chunk)  # repeats the first samples: one shape
        classes, weights, top1, cross_entropy = [], [], [], []
        for start in range(0, len(padded), chunk):
            images = self.data.device_images[jnp.asarray(padded[start:start + chunk])]
            outputs = _member_outputs(self.raw_model, params, batch_stats, images, image_size=self.data.image_size,
                                      stats=self.data.stats)
            labels, errors, ce = _label_batch(outputs, mode=c.labels, membership=c.membership,
                                              temperature=float(c.phase2.temperature))
            classes.append(labels.classes)
            weights.append(labels.weights)
            top1.append(errors)
            cross_entropy.append(ce)
        n = len(task)
        labels = pl.PseudoLabels(np.concatenate(jax.device_get(classes))[:n],
                                 np.concatenate(jax.device_get(weights))[:n])
        kept = np.asarray(pl.kept(labels))
        num_kept = max(int(kept.sum()), 1)
        errors = {"top1": np.concatenate(jax.device_get(top1), axis=1)[:, :n].sum(1) / num_kept,
                  "cross_entropy": np.concatenate(jax.device_get(cross_entropy), axis=1)[:, :n].sum(1) / num_kept}
        chosen = int(np.argmin(errors[c.selection]))
        hard = np.asarray(pl.single_class(labels))
        row = self._labelling_index(stage)
        stats = jax.tree_util.tree_map(np.array, jax.device_get(state.stats))  # writable host copies
        stats.done[row], stats.samples[row], stats.chosen[row] = True, n, chosen
        stats.hard_fraction[row] = hard.mean()
        stats.soft_fraction[row] = (kept & ~hard).mean()
        stats.dropped_fraction[row] = 1.0 - kept.mean()
        stats.distinct_classes[row] = int(pl.distinct_classes(labels, self.num_classes))
        stats.member_errors[row] = errors[c.selection]
        all_classes, all_weights = jax.tree_util.tree_map(np.array, jax.device_get(tuple(state.labels)))
        all_classes[task], all_weights[task] = labels.classes, labels.weights
        logging.info(
            "pseudo-labels of %d samples: %.1f%% hard, %.1f%% soft, %.1f%% dropped, %d distinct pseudo-classes; member "
            "%s errors %s -> member %d", n, 100 * stats.hard_fraction[row], 100 * stats.soft_fraction[row],
            100 * stats.dropped_fraction[row], stats.distinct_classes[row], c.selection,
            " ".join(f"{e:.4f}" for e in errors[c.selection]), chosen)
        return state.replace(
            labels=sharding.replicate(pl.PseudoLabels(all_classes, all_weights), mesh),
            stats=sharding.replicate(stats, mesh), evaluated=sharding.replicate(jnp.int32(chosen), mesh),
        )

    # --- evaluation, export, results -----------------------------------------------------------
    def model_variables(self, state: FusslState) -> Pytree:
        """``{"params", "batch_stats"}`` of the model evaluation sees (the chosen member or the phase-2 model)."""
        evaluated = int(state.evaluated)
        if evaluated < 0:
            return {"params": state.classifier.params["model"], "batch_stats": state.classifier.batch_stats["model"]}
        return {"params": ensemble.member(state.members.params["model"], evaluated),
                "batch_stats": ensemble.member(state.members.model_state.batch_stats["model"], evaluated)}

    def predictors(self, state: FusslState) -> dict[str, Any]:
        variables = self.model_variables(state)
        return {
            "features": functools.partial(_embed, self.method, variables, image_size=self.data.image_size,
                                          stats=self.data.stats),
            "backbone": jax.tree_util.Partial(functools.partial(_features, self.method), variables),
        }

    def backbone_variables(self, state: FusslState) -> dict[str, Pytree]:
        variables = self.model_variables(state)
        return jax.device_get({"params": variables["params"]["backbone"],
                               "batch_stats": variables["batch_stats"].get("backbone", {})})

    def results(self, state: FusslState) -> dict[str, Any]:
        c = self.config.fussl
        stats = jax.device_get(state.stats)
        rows = []
        for t in range(len(self.task_rows)):
            for cycle in range(c.cycles):
                i = t * c.cycles + cycle
                if stats.done[i]:
                    rows.append({
                        "task": t, "cycle": cycle, "samples": stats.samples[i], "hard_fraction": stats.hard_fraction[i],
                        "soft_fraction": stats.soft_fraction[i], "dropped_fraction": stats.dropped_fraction[i],
                        "distinct_classes": stats.distinct_classes[i], "member_errors": stats.member_errors[i],
                        "selection": c.selection, "chosen_member": stats.chosen[i],
                    })
        out = {
            "variant": c.variant, "ensemble_size": self.m, "labels": c.labels, "membership": c.membership,
            "pseudo_classes": self.num_classes, "pseudo_labels": rows,
            "phases": [{"index": p.index, "kind": s.kind, "task": s.task, "cycle": s.cycle, "continued": s.continued,
                        "label": p.label} for p, s in zip(self._plan, self._stages)],
            "evaluated": "phase-2 model" if int(state.evaluated) < 0 else f"member {int(state.evaluated)}",
        }
        if c.cross_class.enabled:
            out["cross_class"] = self.cross_class_split
        return out

    def report_label(self) -> str:
        c = self.config.fussl
        if c.variant == "continued":
            return f"Phase 1 continued (m={self.m})"
        notes = [f"m={self.m}"] if self.m != 3 else []
        notes += [f"{c.labels} labels"] if c.labels != "fuzzy" else []
        notes += [f"{c.cycles} cycles"] if c.cycles > 1 else []
        notes += ["no frozen layers"] if c.phase2.unfrozen_fraction == 1.0 else []
        return "FUSSL" + (f" ({', '.join(notes)})" if notes else "")

    def info(self) -> dict[str, str]:
        return {"strategy": "fussl", "ssl_method": self.config.ssl.method, "label": self.report_label()}
