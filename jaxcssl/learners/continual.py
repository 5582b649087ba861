"""The continual learner: a sequence of tasks, epochs over each, one strategy loss per step.

For each phase (a task; all tasks at once for Offline or the interleaved task-confusion schedule):
a fresh optimiser state and per-task schedule (:class:`~jaxcssl.engine.schedules.TaskCosine`),
``epochs × task size / batch`` steps. Inside one compiled step: pick the batch indices (a fresh
permutation per epoch, drop-last), gather uint8 images from the on-device dataset (or, with
``data.placement="host"``, take the batch the host gathered with the same indices), augment both
views per sample, sample and augment a replay batch (strategies with a memory, after the first
task), run the strategy's loss through the current, EMA-target and frozen old models, update with
the optimiser, move the EMA target. At the end of a phase: snapshot the model into the frozen
``old`` pytree, save samples into the replay memory, and let the strategy store what it needs.

``continual.init_from=W/checkpoints/tasks/<t>`` starts from the model of another run's checkpoint
(:mod:`jaxcssl.learners.init_from`); the phases that train only tasks that model has trained take no
steps (their end — old-model snapshot, memory, strategy state — and evaluation still run).

The first-task guard lives here, once: before any task has ended the step calls
:meth:`~jaxcssl.strategies.base.Strategy.first_task_loss` (plain SSL unless the strategy says
otherwise), afterwards :meth:`~jaxcssl.strategies.base.Strategy.loss`. With
``train.reinit_each_task`` every phase starts from the initial model and is trained as a first task:
each task alone (the specialised reference runs of Kaizen's forward transfer).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from typing import Any, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcssl import builders, optim, replay, sharding, strategies
from jaxcssl.data.augment import augment, preprocess
from jaxcssl.data.host_feed import HostFeed
from jaxcssl.engine import rng
from jaxcssl.engine.schedules import TaskCosine
from jaxcssl.errors import ConfigError
from jaxcssl.learners import init_from
from jaxcssl.learners.base import Learner, Phase
from jaxcssl.methods import ssl_views
from jaxcssl.methods.base import ema_momentum, ema_update
from jaxcssl.replay import ReplayBuffer
from jaxcssl.strategies import build_strategy
from jaxcssl.strategies.base import Batch, Context, DataInfo, ModelState, Strategy, TaskEnd

Pytree = Any
SLOTS = ("ssl", "distill", "mixup")  # one loss state per loss term
MAX_STEPS = 2**31 - 1  # the step counters are int32


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32: steps taken in the whole run
    phase_step: jax.Array  # int32: steps taken in the current phase
    params: Pytree  # {"model": ..., <strategy module>: ...}
    model_state: ModelState
    opt_state: Pytree
    old: Pytree  # {"params", "batch_stats"}: frozen model of the previous task (a copy of the init at task 0)
    replay: ReplayBuffer
    strategy_state: Pytree


class TaskInputs(NamedTuple):
    """What changes from phase to phase, passed as traced arguments so one program serves every task."""

    # Placement "device": the whole training set, uint8 [N, H, W, C] and int32 [N]. Placement "host":
    # this call's batches, [k, B, H, W, C] and [k, B], gathered on the host from the same indices.
    images: Optional[jax.Array]
    labels: Optional[jax.Array]  # -1 where withheld (read by strategies that ask for the "labels" batch field)
    indices: jax.Array  # int32 [S, n]: sample indices of the S tasks of this phase (S > 1: interleaved)
    task_id: jax.Array  # int32 []: the phase index
    order_key: jax.Array  # the epoch permutations of this phase
    step_key: jax.Array  # the step stream: fold_in(step_key, global step)
    schedule: TaskCosine
    num_steps: Optional[jax.Array] = None  # int32 []: steps of this phase (the per-task EMA schedule)
    call_start: Optional[jax.Array] = None  # int32 []: placement "host": the phase step of the call's first batch


def task_epochs(config, task_id: int) -> int:
    """Epochs for ``task_id``: ``train.first_task_epochs`` (if set) for the first, else ``train.epochs``."""
    if task_id == 0 and config.train.first_task_epochs:
        return config.train.first_task_epochs
    return config.train.epochs


def batch_indices(phase_step: jax.Array, inputs: TaskInputs, batch_size: int) -> jax.Array:
    """Indices of this step's batch: epoch-wise permutations of the task, ``drop_last`` batches.

    With ``S`` interleaved tasks, step ``s`` draws from task ``s mod S`` (the CIL/DIL-minibatch
    study of CroMo Sec. 3), each task walking through its own permutations.
    """
    num_rows, num_samples = inputs.indices.shape
    row = phase_step % num_rows
    row_step = phase_step // num_rows
    steps_per_epoch = num_samples // batch_size
    epoch, position = row_step // steps_per_epoch, row_step % steps_per_epoch
    order = jax.random.permutation(jax.random.fold_in(inputs.order_key, epoch * num_rows + row), num_samples)
    take = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
    return inputs.indices[row][take]


def target_momentum(step: jax.Array, phase_step: jax.Array, total_steps: int, phase_steps: jax.Array,
                    base: float, final: float, per_task: bool) -> jax.Array:
    """The EMA target's momentum at this step: BYOL's cosine from ``base`` to ``final`` over the run, or
    restarted at every phase (``per_task``, solo-learn's per-task runs)."""
    if per_task:  # the phase's progress, as the step of a one-step run
        return ema_momentum(phase_step / phase_steps, 1, base, final)
    return ema_momentum(step, total_steps, base, final)


@functools.partial(jax.jit, static_argnames=("batch_size", "steps"))
def call_indices(first_step: jax.Array, indices: jax.Array, order_key: jax.Array, *, batch_size: int,
                 steps: int) -> jax.Array:
    """int32 ``[steps, batch_size]``: :func:`batch_indices` of the steps ``first_step, first_step + 1, ...``
    (the host placement computes on the host what the device placement draws inside the step)."""
    inputs = TaskInputs(images=None, labels=None, indices=indices, task_id=None, order_key=order_key, step_key=None,
                        schedule=None, num_steps=None)
    return jax.vmap(lambda offset: batch_indices(first_step + offset, inputs, batch_size))(jnp.arange(steps))


def check_labelled_method(config, method) -> None:
    """A method trained on labels (supervised) takes the strategies with the plain loss only: the others'
    terms are SSL objectives on two views."""
    strategy = strategies.REGISTRY.get(config.strategy.name)
    if "labels" in method.batch_fields and (
            strategy.loss is not Strategy.loss or strategy.first_task_loss is not Strategy.first_task_loss):
        raise ConfigError(f"ssl.method={config.ssl.method!r} trains on labels with the plain loss; strategy.name="
                          f"{config.strategy.name!r} has loss terms of its own (use finetune or offline)")


def _copy(tree: Pytree) -> Pytree:
    return jax.tree_util.tree_map(jnp.array, tree)


def _features(method, variables: Pytree, images: jax.Array) -> jax.Array:
    return method.features(variables["params"], variables["batch_stats"], images)


@functools.partial(jax.jit, static_argnames=("method", "image_size", "stats"))
def _embed(method, variables: Pytree, images: jax.Array, *, image_size: int, stats) -> jax.Array:
    """uint8 batch -> eval-mode backbone features; compiled once per (method, shapes) and reused."""
    return _features(method, variables, preprocess(images, image_size, *stats))


class ContinualLearner(Learner):
    """Tasks in sequence (or joined, or interleaved), each for its epochs, with one strategy."""

    name = "continual"
    HOST_PLACEMENT = True
    CONFIG = dict(
        init_from="",  # W/checkpoints/tasks/<t> of another run: start from its model (Online-SSL Sec. 5.2)
    )

    def __init__(self, config, data: builders.Data):
        super().__init__(config, data)
        self.init_source = None
        if config.continual.init_from:
            self.init_source = init_from.source(config.continual.init_from, "continual.init_from")
            # Read and verified now, before the run touches its workdir.
            self.init_model = init_from.restore(self.init_source, "continual.init_from")
        self.method = builders.build_ssl_method(config, num_classes=data.dataset.num_classes)
        check_labelled_method(config, self.method)
        strategy = build_strategy(config, self.method)
        self.phase_rows = strategy.phases(data.split.train_indices, config.split.schedule)
        info = self._data_info()
        self.strategy = strategy.with_data(info)
        self.memory_spec = self.strategy.memory()
        self.memory_plan = self.strategy.memory_selection(info) if self.memory_spec is not None else None
        if self.memory_plan is not None:  # a loader over the memory draws at most what it holds
            replay_batch = min(self.memory_spec.replay_batch, len(self.memory_plan[0]))
            self.memory_spec = dataclasses.replace(self.memory_spec, replay_batch=replay_batch)
        if self.memory_spec is not None:
            sharding.check_batch_divisible(self.memory_spec.replay_batch, data.mesh, "strategy.replay_batch")
        labels = self.strategy.train_labels(info)
        self.host_labels = np.asarray(labels, np.int32)  # the strategy's training labels, -1 where withheld
        self.host_feed, self.train_labels = None, None
        if data.placement == "host":
            self.host_feed = HostFeed(data.dataset.x_train, self.host_labels, data.mesh)
        else:
            self.train_labels = (data.device_labels if labels is info.labels
                                 else sharding.replicate(self.host_labels, data.mesh))
        self.views = ssl_views(config.augment.preset or config.ssl.method, data.image_size, *data.stats)
        self.batch_size = config.train.batch_size
        self._plan = self._make_plan()
        if self.memory_spec is not None:
            for phase, (_, rows) in zip(self._plan[:-1], self.phase_rows):
                if self.memory_spec.samples_per_task > rows.size:
                    raise ConfigError(f"strategy.samples_per_task={self.memory_spec.samples_per_task} exceeds the "
                                      f"{rows.size} training samples of {phase.label}")
        self.total_steps = sum(p.num_steps for p in self._plan)
        o = config.optim
        rules = optim.ParamRules(tuple(map(tuple, o.lr_mults)), tuple(map(tuple, o.wd_mults)), tuple(o.frozen))
        param_shapes = jax.eval_shape(lambda: self._init_params()[0])
        self.tx = optim.make(o.name, param_shapes, rules + self.strategy.param_rules(), weight_decay=o.weight_decay,
                             momentum=o.momentum, eta=o.eta, clip_lr=o.clip_lr)

    @classmethod
    def check(cls, config) -> None:
        """The strategy's own settings (``config.strategy.<name>``) and the ``init_from`` checkpoint."""
        strategies.REGISTRY.get(config.strategy.name).check(config)
        if config.continual.init_from:
            source = init_from.source(config.continual.init_from, "continual.init_from")
            init_from.check_compatible(config, source, "continual.init_from")

    @classmethod
    def tasks_trained(cls, config: dict, phase: int) -> tuple[int, ...]:
        """The split tasks trained by the end of phase ``phase`` of a continual run with ``config`` (a dict)."""
        every = tuple(range(init_from.num_tasks(config)))
        if config["strategy"]["name"] == "offline" or config["split"]["schedule"] == "interleaved":
            return every  # one phase trains every task
        return every[:phase + 1]

    def _data_info(self) -> DataInfo:
        """What the strategy may know of the data: classes, training labels, the phases' samples, keys."""
        seed = self.config.seed
        return DataInfo(
            num_classes=self.data.dataset.num_classes,
            labels=np.asarray(self.data.dataset.y_train, np.int32),
            phase_indices=tuple(np.concatenate(list(rows)) for _, rows in self.phase_rows),
            memory_keys=tuple(rng.task_end_keys(seed, p)[0] for p in range(len(self.phase_rows))),
            data_key=rng.stream(seed, "data"),
        )

    # --- plan ------------------------------------------------------------------------------------
    def _make_plan(self) -> list[Phase]:
        c, batch = self.config, self.batch_size
        phases, seen = [], set()
        trained = set(self.init_source.tasks) if self.init_source is not None else set()
        for index, (tasks, rows) in enumerate(self.phase_rows):
            if rows.shape[1] < batch:
                raise ValueError(f"task {index} has {rows.shape[1]} training samples, fewer than "
                                 f"train.batch_size={batch}")
            steps_per_epoch = rows.shape[1] // batch
            num_steps = task_epochs(c, index) * steps_per_epoch * rows.shape[0]
            if num_steps >= MAX_STEPS or self._steps_before(phases) + num_steps >= MAX_STEPS:
                raise ConfigError(f"train.epochs={task_epochs(c, index)} gives {num_steps:,} steps for task {index}, "
                                  f"more than the run's int32 step counter holds ({MAX_STEPS:,} in all)")
            seen.update(tasks)
            phases.append(Phase(
                index=index, label=f"task {index + 1}/{len(self.phase_rows)}",
                num_steps=0 if set(tasks) <= trained else num_steps,
                program="first" if index == 0 or c.train.reinit_each_task else "later", tasks=tuple(tasks),
                seen_tasks=tuple(sorted(seen)),
                records_row=len(tasks) == 1, images_per_step=batch,
                eval_every_steps=c.eval.every_epochs * steps_per_epoch * rows.shape[0],
            ))
        return phases

    @staticmethod
    def _steps_before(phases: list[Phase]) -> int:
        return sum(p.num_steps for p in phases)

    def plan(self) -> list[Phase]:
        return self._plan

    def schedule(self, phase: Phase) -> TaskCosine:
        c = self.config
        steps_per_epoch = self.phase_rows[phase.index][1].shape[1] // self.batch_size
        rows = self.phase_rows[phase.index][1].shape[0]
        peak = optim.peak_learning_rate(c.optim.base_lr, self.batch_size, phase.index, base_batch=c.optim.base_batch,
                                        later_task_factor=c.optim.later_task_lr_factor)
        return TaskCosine.create(phase.num_steps, c.optim.warmup_epochs * steps_per_epoch * rows, peak,
                                 c.optim.final_lr, c.optim.warmup_start_lr)

    # --- state -----------------------------------------------------------------------------------
    def _init_params(self) -> tuple[Pytree, Pytree]:
        """Parameters and batch statistics of the model and of the strategy's modules."""
        k_model, k_strategy = jax.random.split(rng.stream(self.config.seed, "init"))
        model = self.method.init_variables(k_model, self.data.image_shape)
        params, batch_stats = {"model": model["params"]}, {"model": model["batch_stats"]}
        for name, variables in self.strategy.init_modules(k_strategy, self.method).items():
            params[name], batch_stats[name] = variables["params"], variables["batch_stats"]
        return params, batch_stats

    def _initial_model(self) -> tuple[Pytree, ModelState]:
        """The initial parameters and model state (statistics, fresh loss states, EMA target)."""
        params, batch_stats = self._init_params()
        target = None
        if self.method.uses_target:
            target = {"params": _copy(params["model"]), "batch_stats": _copy(batch_stats["model"])}
        loss_state = {slot: self.method.init_loss_state() for slot in SLOTS}
        return params, ModelState(batch_stats=batch_stats, loss_state=loss_state, target=target)

    def init_state(self) -> TrainState:
        params, model_state = self._initial_model()
        batch_stats = model_state.batch_stats
        spec = self.memory_spec
        if spec is None:
            capacity = 1
        elif self.memory_plan is not None:
            capacity = max(sum(len(saved) for saved in self.memory_plan[:len(self._plan) - 1]), 1)
        else:
            capacity = spec.samples_per_task * max(len(self._plan) - 1, 1)
        feature_dim = spec.feature_dim if spec is not None else 1  # Orbax cannot save zero-size arrays
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            phase_step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=self.tx.init(params),
            old={"params": _copy(params["model"]), "batch_stats": _copy(batch_stats["model"])},
            replay=replay.create(capacity, self.data.image_shape, feature_dim),
            strategy_state=self.strategy.init_state(params),
        )
        return sharding.replicate(state, self.data.mesh)

    def start_phase(self, state: TrainState, phase: Phase) -> TrainState:
        """A fresh optimiser state (and, with ``train.reinit_each_task``, the initial model; with
        ``continual.init_from``, the checkpoint's model at the first phase)."""
        if self.init_source is not None and phase.index == 0:
            state = self._restore_model(state)
        if self.config.train.reinit_each_task and phase.index > 0:
            params, model_state = sharding.replicate(self._initial_model(), self.data.mesh)
            state = state.replace(params=params, model_state=model_state)
        return state.replace(opt_state=sharding.replicate(self.tx.init(state.params), self.data.mesh))

    def _restore_model(self, state: TrainState) -> TrainState:
        """``state`` with the model (parameters, BatchNorm statistics, EMA target) of ``init_from``."""
        restored = self.init_model
        model = {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}
        model = init_from.matching(model, {k: restored[k] for k in model}, "model")
        model_state = state.model_state.replace(batch_stats={**state.model_state.batch_stats,
                                                             "model": model["batch_stats"]})
        if self.method.uses_target:
            model_state = model_state.replace(target=init_from.matching(state.model_state.target, restored["target"],
                                                                        "EMA target"))
        state = state.replace(params={**state.params, "model": model["params"]}, model_state=model_state)
        return sharding.replicate(state, self.data.mesh)

    # --- step ------------------------------------------------------------------------------------
    def inputs(self, phase: Phase) -> TaskInputs:
        """The phase's traced inputs; with the host placement, without data (see :meth:`call_inputs`)."""
        seed, mesh = self.config.seed, self.data.mesh
        return TaskInputs(
            images=self.data.device_images,
            labels=self.train_labels,
            indices=sharding.replicate(self.phase_rows[phase.index][1].astype(np.int32), mesh),
            task_id=jnp.int32(phase.index),
            order_key=rng.phase_key(seed, "epoch_order", phase.index),
            step_key=rng.stream(seed, "step"),
            schedule=self.schedule(phase),
            num_steps=jnp.int32(phase.num_steps),
        )

    def call_inputs(self, inputs: TaskInputs, phase: Phase, phase_step: int, steps: int) -> TaskInputs:
        """Placement "host": this call's batches (the next call's are gathered while it runs)."""
        if self.host_feed is None:
            return inputs
        cpu = jax.local_devices(backend="cpu")[0]
        rows = jax.device_put(self.phase_rows[phase.index][1].astype(np.int32), cpu)
        order_key = jax.device_put(rng.phase_key(self.config.seed, "epoch_order", phase.index), cpu)

        def indices(first: int, k: int):
            return lambda: np.asarray(call_indices(first, rows, order_key, batch_size=self.batch_size, steps=k))

        following = phase_step + steps
        next_k = self.config.train.steps_per_call
        next_k = next_k if phase.num_steps - following >= next_k else 1
        has_next = following < phase.num_steps
        images, labels = self.host_feed.get(
            (phase.index, phase_step, steps), indices(phase_step, steps),
            (phase.index, following, next_k) if has_next else None, indices(following, next_k) if has_next else None,
        )
        return inputs._replace(images=images, labels=labels, call_start=jnp.int32(phase_step))

    def step_fn(self, program: Hashable):
        method, strategy, tx, views = self.method, self.strategy, self.tx, self.views
        mesh, batch_size, total_steps = self.data.mesh, self.batch_size, self.total_steps
        has_old = program == "later"
        memory = self.memory_spec if has_old else None
        wants_labels = "labels" in strategy.batch_fields | method.batch_fields
        loss = strategy.loss if has_old else strategy.first_task_loss
        ema_base, ema_final = self.config.ssl.ema_base, self.config.ssl.ema_final
        ema_per_task = self.config.ssl.ema_per_task
        host = self.host_feed is not None

        def step(state: TrainState, inputs: TaskInputs) -> tuple[TrainState, dict[str, jax.Array]]:
            key = jax.random.fold_in(inputs.step_key, state.step)
            k_view1, k_view2, k_memory, k_mem1, k_mem2, k_strategy = jax.random.split(key, 6)
            if host:  # the host gathered this call's batches with the indices batch_indices draws
                position = state.phase_step - inputs.call_start
                images, labels = inputs.images[position], inputs.labels[position]
            else:
                index = batch_indices(state.phase_step, inputs, batch_size)
                images, labels = inputs.images[index], inputs.labels[index]
            images = sharding.shard_batch(images, mesh)
            batch = Batch(view1=augment(k_view1, images, views[0]), view2=augment(k_view2, images, views[1]),
                          labels=labels if wants_labels else None)
            if memory is not None:
                sample = replay.sample(state.replay, k_memory, memory.replay_batch)
                memory_images = sharding.shard_batch(sample["images"], mesh)
                batch = batch._replace(
                    memory1=augment(k_mem1, memory_images, views[0]),
                    memory2=augment(k_mem2, memory_images, views[1]),
                    memory_features=sample["features"],
                    memory_labels=sample["labels"] if wants_labels else None,
                )
            ctx = Context(old=state.old, strategy_state=state.strategy_state, key=k_strategy)

            def loss_fn(params):
                return loss(method, params, state.model_state, batch, ctx)

            (total, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            hyperparams = inputs.schedule(state.phase_step)
            opt_state = state.opt_state._replace(hyperparams={**state.opt_state.hyperparams, **hyperparams})
            updates, opt_state = tx.update(grads, opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            if method.uses_target:
                momentum = target_momentum(state.step, state.phase_step, total_steps, inputs.num_steps, ema_base,
                                           ema_final, ema_per_task)
                target = model_state.target
                model_state = model_state.replace(
                    target={**target, "params": ema_update(target["params"], params["model"], momentum)}
                )
            metrics = {**metrics, "loss": total, "lr": hyperparams["learning_rate"]}
            return state.replace(step=state.step + 1, phase_step=state.phase_step + 1, params=params,
                                 model_state=model_state, opt_state=opt_state), metrics

        return step

    # --- phase end -------------------------------------------------------------------------------
    def end_phase(self, state: TrainState, phase: Phase) -> TrainState:
        """Snapshot the frozen old model, fill the replay memory, let the strategy store what it needs."""
        # A copy, not an alias: the training state is donated to the compiled step, the old model is not.
        old = {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}
        state = state.replace(old=jax.tree_util.tree_map(jnp.copy, old))
        key_memory, key_strategy = rng.task_end_keys(self.config.seed, phase.index)
        images, labels, task_indices = self._task_data(np.concatenate(list(self.phase_rows[phase.index][1])))
        buffer, slots = state.replay, (int(state.replay.count),) * 2
        if self.memory_spec is not None and phase.index < len(self._plan) - 1:
            if self.memory_plan is not None:
                saved_images, saved_labels, saved = self._task_data(np.asarray(self.memory_plan[phase.index]))
                buffer = replay.insert_indices(buffer, saved_images, saved_labels, jnp.asarray(saved, jnp.int32),
                                               phase.index)
            else:
                buffer = replay.insert_task(
                    buffer, key_memory, images, labels, jnp.asarray(task_indices, jnp.int32), phase.index,
                    self.memory_spec.samples_per_task,
                )
            slots = (slots[0], int(buffer.count))
        mean, std = self.data.stats
        result = self.strategy.task_end(TaskEnd(
            task_id=phase.index, key=key_strategy, method=self.method, views=self.views, batch_size=self.batch_size,
            images=images, task_indices=task_indices, params=state.params,
            model_state=state.model_state, old=state.old, strategy_state=state.strategy_state,
            memory=buffer if self.memory_spec is not None else None, new_memory_slots=slots,
            preprocess=lambda images: preprocess(images, self.data.image_size, mean, std),
        ))
        memory = result.memory if result.memory is not None else buffer
        return state.replace(replay=memory, strategy_state=result.strategy_state)

    def _task_data(self, rows: np.ndarray) -> tuple[jax.Array, jax.Array, np.ndarray]:
        """Images and training labels on the device holding the training samples ``rows``, and where they
        are in them: the whole training set (placement "device"), or only those samples, copied from the
        host for the task's end."""
        if self.host_feed is None:
            return self.data.device_images, self.train_labels, rows
        mesh = self.data.mesh
        images = sharding.replicate(self.data.dataset.x_train[rows], mesh)
        return images, sharding.replicate(self.host_labels[rows], mesh), np.arange(rows.size)

    # --- evaluation and export ---------------------------------------------------------------------
    def model_variables(self, state: TrainState) -> Pytree:
        return {"params": state.params["model"], "batch_stats": state.model_state.batch_stats["model"]}

    def predictors(self, state: TrainState) -> dict[str, Any]:
        variables = self.model_variables(state)
        mean, std = self.data.stats
        return {
            "features": functools.partial(_embed, self.method, variables, image_size=self.data.image_size,
                                          stats=self.data.stats),
            # Weights as a pytree argument (jax.tree_util.Partial): the probe's jitted epoch compiles once.
            "backbone": jax.tree_util.Partial(functools.partial(_features, self.method), variables),
            **self.method.predictors(variables, self.data.image_size, self.data.stats),
            **self.strategy.predictors(
                self.method, state.params, state.model_state.batch_stats,
                functools.partial(preprocess, out_size=self.data.image_size, mean=mean, std=std),
            ),
        }

    def predictor_names(self) -> frozenset[str]:
        return super().predictor_names() | self.method.PREDICTORS | self.strategy.PREDICTORS

    def backbone_variables(self, state: TrainState) -> dict[str, Pytree]:
        params = state.params["model"]["backbone"]
        batch_stats = state.model_state.batch_stats["model"].get("backbone", {})
        return jax.device_get({"params": params, "batch_stats": batch_stats})

    def classifier(self, state: TrainState) -> Optional[tuple[dict[str, Any], Pytree]]:
        head = self.strategy.classifier(state.params)
        return None if head is None else (head[0], jax.device_get(head[1]))

    def info(self) -> dict[str, str]:
        return {"strategy": self.config.strategy.name, "ssl_method": self.config.ssl.method,
                "label": self.strategy.report_label()}


