"""The online learner: SSL from a stream of batches with SLCLRS, a memory and RALS (Mokhtarzadeh Azar &
Timofte, "Speeding Up Online Self-Supervised Learning by Exploiting Its Limitations").

Batches of ``online.stream_batch`` images arrive one after another in the order of the split's tasks
(the learner is not told where one ends) and each gets ``N = online.steps_per_batch`` local steps.
Every step trains on the stream batch concatenated with a memory batch drawn at random from a
fixed-size reservoir (Eq. 4–7), both views augmented on the device; the learning rate and momentum
follow one PyTorch ``OneCycleLR`` cycle over the N steps (SLCLRS, Sec. 4.1,
:class:`~jaxcssl.engine.schedules.OneCycle`). With RALS (Sec. 4.2) the model at the first local step
of a batch is the anchor, a frozen pytree like the continual learner's old model; each step scores
every image (SimCLR, BYOL, SimSiam, MoCo v2, VICReg's invariance) or group of ``N_p`` images (Barlow
Twins, VICReg) with the current and the anchor model without gradient, keeps the ``k`` with the
largest reducible anchor loss ``L_current − L_anchor`` (Eq. 8–9, ``jax.lax.top_k``) and trains on
those alone. After a batch's N steps it is offered to the memory (reservoir sampling).

The plan: optionally an offline pre-training phase on the first task (``online.pretrain_epochs``,
the method's own recipe and cosine schedule; Sec. 5.2), then one stream phase over the remaining
tasks, evaluated every ``online.eval_every_batches`` batches. ``online.init_from`` starts the stream
from another run's checkpoint instead (:mod:`jaxcssl.learners.init_from`); it then continues that
run's step count, so it trains exactly what the run that pre-trains itself trains.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcssl import builders, methods, optim, replay, sharding
from jaxcssl.data.augment import augment
from jaxcssl.engine import rng
from jaxcssl.engine.schedules import OneCycle, TaskCosine
from jaxcssl.errors import ConfigError
from jaxcssl.learners import init_from
from jaxcssl.learners.base import Learner, Phase
from jaxcssl.learners.continual import _embed, _features, batch_indices
from jaxcssl.methods import SSLMethod, ssl_views
from jaxcssl.methods.base import ema_momentum, ema_update
from jaxcssl.replay import ReplayBuffer
from jaxcssl.strategies.base import ModelState, online, ssl_only, ssl_term

Pytree = Any
# Sec. 5.3: the maximum rate of the cycle (CIFAR-100: Barlow Twins 0.05, SimCLR 1.0; ImageNet-100: 0.1).
PAPER_MAX_LR = {("imagenet100", "barlow_twins"): 0.1, ("imagenet100", "simclr"): 0.1,
                ("cifar100", "barlow_twins"): 0.05, ("cifar100", "simclr"): 1.0}
ORDERS = ("tasks", "shuffled")
MEMORY_INITS = ("trained", "empty")
RALS_LOSSES = ("units", "objective")
BN_MODES = ("batch", "running")


@flax.struct.dataclass
class Selection:
    """Fig. 3b: the fraction of the selected samples that come from the new batch, per local step."""

    current: jax.Array  # float32 [N]: the batch being trained
    history: jax.Array  # float32 [W, N]: the last W completed batches (a ring)
    batches: jax.Array  # int32 []: completed batches


@flax.struct.dataclass
class OnlineState:
    step: jax.Array  # int32: steps taken (an init_from run continues its source's count)
    phase_step: jax.Array  # int32: steps taken in the current phase
    params: Pytree  # {"model": ...}
    model_state: ModelState
    opt_state: Pytree
    anchor: Pytree  # {"params", "batch_stats", "target"}: the model at the batch's first local step (RALS), or None
    memory: ReplayBuffer
    selection: Selection


class PretrainInputs(NamedTuple):
    images: jax.Array  # uint8 [N, H, W, C]: the training set, on device
    indices: jax.Array  # int32 [1, n]: the first task's samples
    order_key: jax.Array  # epoch permutations
    step_key: jax.Array
    schedule: TaskCosine


class StreamInputs(NamedTuple):
    images: jax.Array  # uint8 [N, H, W, C]: the training set, on device
    labels: jax.Array  # int32 [N]: kept with the memory samples, for its per-task statistics
    task_of: jax.Array  # int32 [N]: the split task of every training sample
    stream: jax.Array  # int32 [batches · stream_batch]: training-set rows in stream order
    step_key: jax.Array
    schedule: OneCycle


# --- settings ----------------------------------------------------------------------------------------
def memory_batch(o) -> int:
    """Memory samples per step: ``online.memory_batch``, or the paper's 128 (256 with RALS) per 128 new."""
    return o.memory_batch or o.stream_batch * (2 if o.rals else 1)


def rals_keep(o) -> int:
    """``k``: ``online.rals_keep``, or the paper's 256 of 384 (two stream batches)."""
    return o.rals_keep or 2 * o.stream_batch


def rals_unit(config) -> str:
    """The scoring unit: ``online.rals_unit``, or the objective's own (its first ``rals_units``)."""
    units = methods.REGISTRY.get(config.ssl.method).cls.rals_units
    return config.online.rals_unit or (units[0] if units else "")


def max_lr(config) -> float:
    """``online.max_lr``, or Sec. 5.3's for the objective: ImageNet-100's, every other dataset CIFAR-100's;
    an objective the paper did not run takes its reference ``base_lr``."""
    if config.online.max_lr:
        return config.online.max_lr
    dataset = "imagenet100" if config.dataset.name == "imagenet100" else "cifar100"
    return PAPER_MAX_LR.get((dataset, config.ssl.method), methods.method_defaults(config.ssl.method,
                                                                                  config.dataset.name)["base_lr"])


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# --- RALS (Sec. 4.2, Eq. 8–9) ---------------------------------------------------------------------
def unit_losses(method: SSLMethod, model: Pytree, view1: jax.Array, view2: jax.Array, loss_state: Pytree, *,
                unit: str, group_size: int, bn: str) -> jax.Array:
    """``L^i`` of ``model`` (``{"params", "batch_stats", "target"}``) on both views, per image or per group,
    without gradient and without writing anything back (BatchNorm ``bn``: batch statistics or running)."""
    train = bn == "batch"

    def forward(variables, x):
        return method.embed(variables["params"], variables["batch_stats"], x, train=train)[0]

    e1, e2 = forward(model, view1), forward(model, view2)
    t1 = t2 = None
    if method.uses_target:
        t1, t2 = forward(model["target"], view1), forward(model["target"], view2)
    k1, k2 = method.key_embedding(e1, t1), method.key_embedding(e2, t2)
    if unit == "sample":
        losses = method.per_sample_loss(e1, e2, k1, k2, loss_state)
    else:
        losses = method.grouped_loss(e1, e2, k1, k2, loss_state, group_size)
    return jax.lax.stop_gradient(losses)


def select_units(scores: jax.Array, num_units: int, key: jax.Array) -> jax.Array:
    """Indices of the ``num_units`` largest ``scores`` (``jax.lax.top_k``), ties broken uniformly at random
    (at a batch's first step the current model is the anchor and every score is 0)."""
    order = jax.random.permutation(key, scores.shape[0])
    _, top = jax.lax.top_k(scores[order], num_units)
    return order[top]


def unit_rows(units: jax.Array, group_size: int) -> jax.Array:
    """The sample rows of selected units: ``units`` themselves, or each group's ``group_size`` rows."""
    if group_size == 1:
        return units
    return (units[:, None] * group_size + jnp.arange(group_size)).reshape(-1)


@dataclasses.dataclass(frozen=True)
class RALS:
    """Reducible Anchor Loss Selection's settings (static in the compiled step)."""

    keep: int  # k: samples trained per step
    unit: str  # "sample" | "group"
    group_size: int  # N_p (1 for "sample")
    loss: str  # "units": Eq. 9, the mean of the selected units' losses | "objective": L_S on the selected
    bn: str  # BatchNorm of the scoring forwards
    shuffle_groups: bool  # groups of randomly ordered samples rather than consecutive ones

    def select(self, method: SSLMethod, model: Pytree, anchor: Pytree, view1: jax.Array, view2: jax.Array,
               loss_state: Pytree, key: jax.Array, first: jax.Array | bool = False) -> tuple[jax.Array, jax.Array]:
        """Rows of the ``keep`` samples with the largest reducible anchor loss (Eq. 9), and the scores.

        ``first``: the batch's first local step, where the anchor is the model and every reducible loss is
        0 by definition (computed, it would be rounding noise that depends on how XLA fused the program).
        """
        k_order, k_ties = jax.random.split(key)
        n = view1.shape[0]
        order = jax.random.permutation(k_order, n) if self.shuffle_groups else jnp.arange(n)
        v1, v2 = view1[order], view2[order]
        kwargs = dict(unit=self.unit, group_size=self.group_size, bn=self.bn)
        scores = jnp.where(first, 0.0, unit_losses(method, model, v1, v2, loss_state, **kwargs)
                           - unit_losses(method, anchor, v1, v2, loss_state, **kwargs))
        units = select_units(scores, self.keep // self.group_size, k_ties)
        return order[unit_rows(units, self.group_size)], scores

    def training_loss(self, method: SSLMethod, params: Pytree, state: ModelState, x1: jax.Array, x2: jax.Array):
        """The training loss on the selected samples from a train-mode forward of them alone."""
        e1, state_after = online(method, params, state, x1)
        e2, state_after = online(method, params, state_after, x2)
        objective, (k1, k2), state_after = ssl_term(method, state_after, e1, e2, x1, x2)
        if self.loss == "objective":
            return objective, ({"ssl": objective}, state_after)
        loss_state = state.loss_state["ssl"]
        if self.unit == "sample":
            losses = method.per_sample_loss(e1, e2, k1, k2, loss_state)
        else:
            losses = method.grouped_loss(e1, e2, k1, k2, loss_state, self.group_size)
        return jnp.mean(losses), ({"ssl": objective}, state_after)


def _where(condition: jax.Array, if_true: Pytree, if_false: Pytree) -> Pytree:
    return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def _copy(tree: Pytree) -> Pytree:
    return jax.tree_util.tree_map(jnp.array, tree)


@functools.partial(jax.jit, static_argnames=("batch",))
def _offer(memory: ReplayBuffer, key: jax.Array, images: jax.Array, labels: jax.Array, task_of: jax.Array,
           rows: jax.Array, *, batch: int) -> ReplayBuffer:
    """Offer ``rows`` to the reservoir in chunks of ``batch``, as if they had streamed by."""
    def body(i, buffer):
        chunk = jax.lax.dynamic_slice_in_dim(rows, i * batch, batch)
        return replay.reservoir_insert(buffer, jax.random.fold_in(key, i), images[chunk], labels[chunk],
                                       task_of[chunk])

    return jax.lax.fori_loop(0, rows.shape[0] // batch, body, memory)


class OnlineLearner(Learner):
    """A stream of batches, N local steps each: SLCLRS, a reservoir memory and (optionally) RALS."""

    name = "online"
    CONFIG = dict(
        stream_batch=128,          # new images per stream batch (Sec. 5.3)
        steps_per_batch=20,        # N: local steps per stream batch (Table 1: 10, 20, 50, 100)
        max_batches=0,             # stream batches to train (0: the whole stream)
        order="tasks",             # tasks: the split's tasks in turn, each shuffled | shuffled: one i.i.d. stream
        pretrain_epochs=0,         # offline SSL epochs on the first task before the stream (Sec. 5.2); 0: none
        init_from="",              # W/checkpoints/tasks/<t> of another run: stream from its model instead
        memory_size=10000,         # Sec. 5.3 (ImageNet-100: 20000); Table 2: 2000, 5000, 10000, 20000
        memory_batch=0,            # memory samples per step; 0: stream_batch, 2 x stream_batch with RALS (Sec. 5.3)
        memory_init="trained",     # trained: the pre-trained tasks' samples fill the reservoir first | empty
        momentum_persists=True,    # the optimiser state carries over between batches (False: fresh per batch)
        eval_every_batches=0,      # also evaluate (eval.after_task) every that many stream batches (0: off)
        # SLCLRS (Sec. 4.1, 5.3): torch OneCycleLR(anneal_strategy="cos", three_phase=False) over each batch
        max_lr=0.0,                # 0: Sec. 5.3's (ImageNet-100 0.1; otherwise CIFAR-100's: BT 0.05, SimCLR 1.0)
        div_factor=10.0,           # initial lr = max_lr / 10 ("0.1 of the maximum")
        final_div_factor=1e4,      # minimum lr = initial / 1e4 (PyTorch's default; the paper is silent)
        pct_start=0.5,             # the rise lasts half the steps (0.25 in the 50-step runs)
        cycle_momentum=True,       # momentum annealed inversely to the rate
        base_momentum=0.85,
        max_momentum=0.95,
        # RALS (Sec. 4.2–4.3)
        rals=True,
        rals_keep=0,               # k selected samples per step; 0: 2 x stream_batch (256 of 384)
        rals_unit="",              # "" the objective's own | sample | group
        rals_group_size=16,        # N_p images per group (Barlow Twins)
        rals_loss="units",         # units: Eq. 9, mean of the selected units' losses | objective: L_S on them
        rals_bn="batch",           # BatchNorm of the scoring forwards: batch statistics | running
        rals_shuffle_groups=False,  # groups of randomly ordered samples (default: consecutive, new batch first)
        rals_window=100,           # Fig. 3b: completed batches averaged
    )

    @classmethod
    def check(cls, config) -> None:
        o = config.online
        for key in ("stream_batch", "steps_per_batch", "memory_size", "div_factor", "final_div_factor",
                    "rals_group_size", "rals_window"):
            _check(o[key] > 0, f"online.{key}={o[key]!r} must be > 0")
        for key in ("max_batches", "pretrain_epochs", "memory_batch", "eval_every_batches", "max_lr", "rals_keep"):
            _check(o[key] >= 0, f"online.{key}={o[key]!r} must be >= 0")
        for key, allowed in (("order", ORDERS), ("memory_init", MEMORY_INITS), ("rals_loss", RALS_LOSSES),
                             ("rals_bn", BN_MODES), ("rals_unit", ("", "sample", "group"))):
            _check(o[key] in allowed, f"online.{key}={o[key]!r} is not one of: {', '.join(map(repr, allowed))}")
        _check(0 <= o.pct_start <= 1, f"online.pct_start={o.pct_start!r} must lie in [0, 1]")
        # PyTorch divides by zero there (a rise of zero steps that still holds step 0).
        _check(o.pct_start * o.steps_per_batch != 1,
               f"online.pct_start={o.pct_start} x online.steps_per_batch={o.steps_per_batch} = 1: OneCycleLR's "
               "rise would end at step 0")
        _check(0 <= o.base_momentum <= o.max_momentum < 1,
               f"online.base_momentum={o.base_momentum} and max_momentum={o.max_momentum} must satisfy "
               "0 <= base <= max < 1")
        _check(not (o.pretrain_epochs and o.init_from),
               "online.pretrain_epochs and online.init_from are both set: the checkpoint is the pre-training")
        if o.rals:
            cls._check_rals(config)
        if o.init_from:
            source = init_from.source(o.init_from, "online.init_from")
            init_from.check_compatible(config, source, "online.init_from")

    @classmethod
    def _check_rals(cls, config) -> None:
        o, method = config.online, config.ssl.method
        units = methods.REGISTRY.get(method).cls.rals_units
        _check(bool(units), f"online.rals=True needs a per-sample or grouped loss, which ssl.method={method!r} has "
                            f"not (methods with one: {', '.join(n for n, s in methods.REGISTRY.items() if s.cls.rals_units)})")
        unit = rals_unit(config)
        _check(unit in units, f"online.rals_unit={unit!r}: ssl.method={method!r} scores by {' or '.join(units)}")
        _check(not (method == "vicreg" and unit == "sample" and o.rals_loss == "units"),
               "online.rals_unit='sample' with rals_loss='units' trains VICReg's invariance term alone (it "
               "collapses); use online.rals_loss='objective' or rals_unit='group'")
        total, keep = o.stream_batch + memory_batch(o), rals_keep(o)
        _check(keep <= total, f"online.rals_keep={keep} exceeds the {total} samples of a step "
                              f"(stream_batch {o.stream_batch} + memory batch {memory_batch(o)})")
        if unit == "group":
            g = o.rals_group_size
            _check(g >= 2 and total % g == 0 and keep % g == 0,
                   f"online.rals_group_size={g} must be >= 2 and divide both the {total} samples of a step and "
                   f"rals_keep={keep}")

    @classmethod
    def tasks_trained(cls, config: dict, phase: int) -> tuple[int, ...]:
        """Phase 0 of a run that pre-trains is the first task; any other phase ends the stream, after
        every task."""
        o = config["online"]
        if phase == 0 and o["pretrain_epochs"] and not o["init_from"]:
            return (0,)
        return tuple(range(init_from.num_tasks(config)))

    def __init__(self, config, data: builders.Data):
        super().__init__(config, data)
        o, split, mesh = config.online, data.split, data.mesh
        self.method = builders.build_ssl_method(config)
        self.views = ssl_views(config.augment.preset or config.ssl.method, data.image_size, *data.stats)
        self.stream_batch, self.local_steps, self.memory_batch = o.stream_batch, o.steps_per_batch, memory_batch(o)
        self.rals = None
        if o.rals:
            unit = rals_unit(config)
            self.rals = RALS(keep=rals_keep(o), unit=unit, group_size=o.rals_group_size if unit == "group" else 1,
                             loss=o.rals_loss, bn=o.rals_bn, shuffle_groups=o.rals_shuffle_groups)
            sharding.check_batch_divisible(self.rals.keep, mesh, "online.rals_keep")
        sharding.check_batch_divisible(self.stream_batch + self.memory_batch, mesh,
                                       "online.stream_batch + the memory batch")
        self.init_source = init_from.source(o.init_from, "online.init_from") if o.init_from else None
        # Read and verified now, before the run touches its workdir.
        self.init_model = init_from.restore(self.init_source, "online.init_from") if o.init_from else None
        if o.pretrain_epochs:
            self.trained_tasks: tuple[int, ...] = (0,)
        else:
            self.trained_tasks = self.init_source.tasks if self.init_source is not None else ()
        self.stream_tasks = tuple(t for t in range(split.num_tasks) if t not in self.trained_tasks)
        _check(bool(self.stream_tasks), f"online: tasks {list(self.trained_tasks)} are trained before the stream "
                                        "(pre-training or online.init_from): the split has no task left to stream")
        data_key = rng.stream(config.seed, "data")
        stream = self._order(self.stream_tasks, o.order, jax.random.fold_in(data_key, 0))
        batches = len(stream) // self.stream_batch
        if o.max_batches:
            batches = min(batches, o.max_batches)
        _check(batches > 0, f"online: the stream of tasks {list(self.stream_tasks)} has {len(stream)} samples, "
                            f"fewer than online.stream_batch={self.stream_batch}")
        self.num_batches = batches
        self.stream = stream[:batches * self.stream_batch]
        offered = self.trained_tasks if o.memory_init == "trained" else ()
        self.memory_rows = self._order(offered, "tasks", jax.random.fold_in(data_key, 1))
        self.memory_key = jax.random.fold_in(data_key, 2)
        self.batch_size = config.train.batch_size
        self._plan = self._make_plan()
        c = config.optim
        rules = optim.ParamRules(tuple(map(tuple, c.lr_mults)), tuple(map(tuple, c.wd_mults)), tuple(c.frozen))
        param_shapes = jax.eval_shape(lambda: self._initial_model()[0])
        self.tx = optim.make(c.name, param_shapes, rules, weight_decay=c.weight_decay, momentum=c.momentum,
                             eta=c.eta, clip_lr=c.clip_lr)

    def _order(self, tasks: tuple[int, ...], order: str, key: jax.Array) -> np.ndarray:
        """Training rows of ``tasks``: each task shuffled in turn (``"tasks"``), or all shuffled together."""
        split = self.data.split
        if not tasks:
            return np.zeros((0,), np.int32)
        if order == "shuffled":
            rows = np.concatenate([split.train_indices[t] for t in tasks])
            return np.asarray(jax.random.permutation(key, rows), np.int32)
        return np.concatenate([np.asarray(jax.random.permutation(jax.random.fold_in(key, t), split.train_indices[t]),
                                          np.int32) for t in tasks])

    # --- plan ------------------------------------------------------------------------------------
    def _make_plan(self) -> list[Phase]:
        o, phases = self.config.online, []
        every = tuple(range(self.data.split.num_tasks))
        if o.pretrain_epochs:
            first = len(self.data.split.train_indices[0])
            _check(first >= self.batch_size, f"online: the first task has {first} training samples, fewer than "
                                             f"train.batch_size={self.batch_size} of its pre-training")
            phases.append(Phase(index=0, label="pre-training", num_steps=o.pretrain_epochs * (first // self.batch_size),
                                program="pretrain", tasks=(0,), seen_tasks=(0,), records_row=False,
                                images_per_step=self.batch_size))
        phases.append(Phase(index=len(phases), label="stream", num_steps=self.num_batches * self.local_steps,
                            program="stream", tasks=self.stream_tasks, seen_tasks=every, records_row=False,
                            images_per_step=self.stream_batch + self.memory_batch,
                            eval_every_steps=o.eval_every_batches * self.local_steps))
        return phases

    def plan(self) -> list[Phase]:
        return self._plan

    def pretrain_schedule(self) -> TaskCosine:
        c, phase = self.config.optim, self._plan[0]
        peak = optim.peak_learning_rate(c.base_lr, self.batch_size, 0, base_batch=c.base_batch)
        steps_per_epoch = phase.num_steps // self.config.online.pretrain_epochs
        return TaskCosine.create(phase.num_steps, c.warmup_epochs * steps_per_epoch, peak, c.final_lr)

    def stream_schedule(self) -> OneCycle:
        o = self.config.online
        return OneCycle.create(self.local_steps, max_lr(self.config), pct_start=o.pct_start, div_factor=o.div_factor,
                               final_div_factor=o.final_div_factor, base_momentum=o.base_momentum,
                               max_momentum=o.max_momentum, cycle_momentum=o.cycle_momentum)

    # --- state -----------------------------------------------------------------------------------
    def _initial_model(self) -> tuple[Pytree, ModelState]:
        model = self.method.init_variables(rng.stream(self.config.seed, "init"), self.data.image_shape)
        target = None
        if self.method.uses_target:
            target = {"params": _copy(model["params"]), "batch_stats": _copy(model["batch_stats"])}
        state = ModelState(batch_stats={"model": model["batch_stats"]}, loss_state={"ssl": self.method.init_loss_state()},
                           target=target)
        return {"model": model["params"]}, state

    def init_state(self) -> OnlineState:
        params, model_state = self._initial_model()
        window = self.config.online.rals_window
        state = OnlineState(
            step=jnp.zeros((), jnp.int32), phase_step=jnp.zeros((), jnp.int32), params=params,
            model_state=model_state, opt_state=self.tx.init(params),
            anchor=_copy(self._model(params, model_state)) if self.rals else None,
            memory=replay.create(self.config.online.memory_size, self.data.image_shape, 1),
            selection=Selection(current=jnp.zeros((self.local_steps,), jnp.float32),
                                history=jnp.zeros((window, self.local_steps), jnp.float32),
                                batches=jnp.zeros((), jnp.int32)),
        )
        return sharding.replicate(state, self.data.mesh)

    @staticmethod
    def _model(params: Pytree, model_state: ModelState) -> Pytree:
        return {"params": params["model"], "batch_stats": model_state.batch_stats["model"],
                "target": model_state.target}

    def start_phase(self, state: OnlineState, phase: Phase) -> OnlineState:
        """A fresh optimiser state; before the stream: the ``init_from`` model and the memory's first samples."""
        if phase.program == "stream":
            if self.init_source is not None:
                state = self._restore_model(state)
            if len(self.memory_rows):
                d = self.data
                task_of = sharding.replicate(self._task_of(), d.mesh)
                memory = _offer(state.memory, self.memory_key, d.device_images, d.device_labels, task_of,
                                sharding.replicate(self.memory_rows, d.mesh), batch=self.stream_batch)
                # Rows beyond whole chunks (fewer than a stream batch) are offered on their own.
                tail = self.memory_rows[len(self.memory_rows) // self.stream_batch * self.stream_batch:]
                if len(tail):
                    memory = _offer(memory, jax.random.fold_in(self.memory_key, -1), d.device_images,
                                    d.device_labels, task_of, sharding.replicate(tail, d.mesh), batch=len(tail))
                state = state.replace(memory=memory)
        return state.replace(opt_state=sharding.replicate(self.tx.init(state.params), self.data.mesh))

    def _restore_model(self, state: OnlineState) -> OnlineState:
        restored = self.init_model
        model = {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}
        model = init_from.matching(model, {k: restored[k] for k in model}, "model")
        model_state = state.model_state.replace(batch_stats={"model": model["batch_stats"]})
        if self.method.uses_target:
            model_state = model_state.replace(target=init_from.matching(state.model_state.target, restored["target"],
                                                                        "EMA target"))
        state = state.replace(step=jnp.int32(restored["step"]), params={"model": model["params"]},
                              model_state=model_state)
        return sharding.replicate(state, self.data.mesh)

    def _task_of(self) -> np.ndarray:
        task_of = np.full((len(self.data.dataset.y_train),), -1, np.int32)
        for t, rows in enumerate(self.data.split.train_indices):
            task_of[rows] = t
        return task_of

    # --- steps -----------------------------------------------------------------------------------
    def inputs(self, phase: Phase):
        seed, d = self.config.seed, self.data
        if phase.program == "pretrain":
            return PretrainInputs(images=d.device_images,
                                  indices=sharding.replicate(self.data.split.train_indices[0][None].astype(np.int32),
                                                             d.mesh),
                                  order_key=rng.phase_key(seed, "epoch_order", phase.index),
                                  step_key=rng.stream(seed, "step"), schedule=self.pretrain_schedule())
        return StreamInputs(images=d.device_images, labels=d.device_labels,
                            task_of=sharding.replicate(self._task_of(), d.mesh),
                            stream=sharding.replicate(self.stream, d.mesh), step_key=rng.stream(seed, "step"),
                            schedule=self.stream_schedule())

    def _update(self, state: OnlineState, opt_state: Pytree, grads: Pytree, hyperparams: dict) -> tuple[Pytree, Pytree]:
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **hyperparams})
        updates, opt_state = self.tx.update(grads, opt_state, state.params)
        return optax.apply_updates(state.params, updates), opt_state

    def _move_target(self, model_state: ModelState, params: Pytree, momentum: jax.Array) -> ModelState:
        if not self.method.uses_target:
            return model_state
        target = model_state.target
        return model_state.replace(target={**target, "params": ema_update(target["params"], params["model"], momentum)})

    def step_fn(self, program: Hashable):
        return self._pretrain_step if program == "pretrain" else self._stream_step

    def _pretrain_step(self, state: OnlineState, inputs: PretrainInputs) -> tuple[OnlineState, dict[str, jax.Array]]:
        """Plain SSL on the first task (the continual learner's first-task step)."""
        method, views, mesh = self.method, self.views, self.data.mesh
        k1, k2 = jax.random.split(jax.random.fold_in(inputs.step_key, state.step))
        images = sharding.shard_batch(inputs.images[batch_indices(state.phase_step, inputs, self.batch_size)], mesh)
        x1, x2 = augment(k1, images, views[0]), augment(k2, images, views[1])
        (loss, (metrics, model_state)), grads = jax.value_and_grad(
            lambda p: ssl_only(method, p, state.model_state, x1, x2), has_aux=True)(state.params)
        hyperparams = inputs.schedule(state.phase_step)
        params, opt_state = self._update(state, state.opt_state, grads, hyperparams)
        model_state = self._move_target(model_state, params,
                                        ema_momentum(state.step, self._plan[0].num_steps, self.config.ssl.ema_base))
        return state.replace(step=state.step + 1, phase_step=state.phase_step + 1, params=params,
                             model_state=model_state, opt_state=opt_state), \
            {**metrics, "loss": loss, "lr": hyperparams["learning_rate"]}

    def _stream_step(self, state: OnlineState, inputs: StreamInputs) -> tuple[OnlineState, dict[str, jax.Array]]:
        """One local step on stream batch ``phase_step // N`` (Eq. 4–9)."""
        method, views, mesh, rals = self.method, self.views, self.data.mesh, self.rals
        B, M, N = self.stream_batch, self.memory_batch, self.local_steps
        local, batch = state.phase_step % N, state.phase_step // N
        first, last = local == 0, local == N - 1
        k1, k2, k_memory, k_fallback, k_select, k_insert = jax.random.split(
            jax.random.fold_in(inputs.step_key, state.step), 6)

        rows = jax.lax.dynamic_slice_in_dim(inputs.stream, batch * B, B)
        new = inputs.images[rows]
        drawn = replay.sample(state.memory, k_memory, M)["images"]
        # A stream that starts without a memory (nothing pre-trained, or memory_init="empty") draws its
        # first batch's memory samples from the new batch itself.
        own = new[jax.random.randint(k_fallback, (M,), 0, B)]
        images = sharding.shard_batch(jnp.concatenate([new, jnp.where(state.memory.count > 0, drawn, own)]), mesh)
        view1, view2 = augment(k1, images, views[0]), augment(k2, images, views[1])

        opt_state = state.opt_state
        if not self.config.online.momentum_persists:
            opt_state = _where(first, self.tx.init(state.params), opt_state)
        metrics: dict[str, jax.Array] = {}
        selection = state.selection
        anchor = state.anchor
        if rals is None:
            def loss_fn(params):
                return ssl_only(method, params, state.model_state, view1, view2)
        else:
            anchor = _where(first, self._model(state.params, state.model_state), state.anchor)
            chosen, scores = rals.select(method, self._model(state.params, state.model_state), anchor, view1, view2,
                                         state.model_state.loss_state["ssl"], k_select, first)
            x1 = sharding.shard_batch(view1[chosen], mesh)
            x2 = sharding.shard_batch(view2[chosen], mesh)
            new_fraction = jnp.mean((chosen < B).astype(jnp.float32))
            metrics.update(rals_new_fraction=new_fraction, rals_reducible=jnp.mean(scores))
            current = selection.current.at[local].set(new_fraction)
            window = selection.history.shape[0]
            history = jnp.where(last, selection.history.at[selection.batches % window].set(current), selection.history)
            selection = Selection(current=current, history=history, batches=selection.batches + last.astype(jnp.int32))

            def loss_fn(params):
                return rals.training_loss(method, params, state.model_state, x1, x2)

        (loss, (terms, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        hyperparams = inputs.schedule(state.phase_step)
        params, opt_state = self._update(state, opt_state, grads, hyperparams)
        # The stream has no end, so the EMA target moves at its base rate (no cosine to 1).
        model_state = self._move_target(model_state, params, jnp.float32(self.config.ssl.ema_base))
        memory = jax.lax.cond(
            last,
            lambda m: replay.reservoir_insert(m, k_insert, new, inputs.labels[rows], inputs.task_of[rows]),
            lambda m: m, state.memory)
        metrics.update(terms, loss=loss, lr=hyperparams["learning_rate"])
        if "momentum" in hyperparams:
            metrics["momentum"] = hyperparams["momentum"]
        return state.replace(step=state.step + 1, phase_step=state.phase_step + 1, params=params,
                             model_state=model_state, opt_state=opt_state, anchor=anchor, memory=memory,
                             selection=selection), metrics

    # --- evaluation and export ---------------------------------------------------------------------
    def model_variables(self, state: OnlineState) -> Pytree:
        return {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}

    def predictors(self, state: OnlineState) -> dict[str, Any]:
        variables = self.model_variables(state)
        return {
            "features": functools.partial(_embed, self.method, variables, image_size=self.data.image_size,
                                          stats=self.data.stats),
            "backbone": jax.tree_util.Partial(functools.partial(_features, self.method), variables),
        }

    def backbone_variables(self, state: OnlineState) -> dict[str, Pytree]:
        return jax.device_get({"params": state.params["model"]["backbone"],
                               "batch_stats": state.model_state.batch_stats["model"].get("backbone", {})})

    def results(self, state: OnlineState) -> dict[str, Any]:
        """The stream, the memory's composition and, with RALS, Fig. 3b's selection curves."""
        memory = jax.device_get(state.memory)
        filled = np.asarray(memory.task_ids[:int(memory.count)])
        out: dict[str, Any] = {
            "stream": {"tasks": list(self.stream_tasks), "pretrained_tasks": list(self.trained_tasks),
                       "batches": self.num_batches, "stream_batch": self.stream_batch,
                       "steps_per_batch": self.local_steps, "memory_batch": self.memory_batch,
                       "max_lr": max_lr(self.config)},
            "memory": {"size": memory.capacity, "filled": int(memory.count), "offered": int(memory.num_seen),
                       "per_task": np.bincount(filled, minlength=self.data.split.num_tasks).tolist()},
        }
        if self.rals is not None:
            selection = jax.device_get(state.selection)
            window, done = selection.history.shape[0], int(selection.batches)
            averaged = min(done, window)
            out["rals"] = {
                "keep": self.rals.keep, "unit": self.rals.unit, "group_size": self.rals.group_size,
                "loss": self.rals.loss, "batches_averaged": averaged,
                "new_fraction_mean": (selection.history[:averaged].mean(0) if averaged else
                                      np.full(self.local_steps, np.nan)).tolist(),
                "new_fraction_last_batch": (selection.history[(done - 1) % window] if done else
                                            np.full(self.local_steps, np.nan)).tolist(),
            }
        return out

    def info(self) -> dict[str, str]:
        return {"strategy": "online", "ssl_method": self.config.ssl.method,
                "label": "SLCLRS + RALS" if self.rals is not None else "SLCLRS"}

