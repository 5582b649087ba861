"""What a continual strategy is: a loss after the first task, plus the state it owns.

A strategy is a frozen dataclass registered by name (:data:`jaxcssl.strategies.REGISTRY`). The
continual learner asks it, through the hooks below, what to prepare; nothing outside a strategy's
module knows which strategy it is:

* :attr:`Strategy.CONFIG` — its settings, ``config.strategy.<name>.*`` (defaults beside their reason);
  :meth:`Strategy.check` validates them and :meth:`Strategy.from_config` builds the strategy;
* :meth:`Strategy.init_modules` — parameters it adds beside the SSL model (CaSSLe's predictor ``h``
  under ``params["distill"]``), and :meth:`Strategy.param_rules` their optimiser groups;
* :meth:`Strategy.memory` — the replay memory it needs (samples saved per task, replay batch,
  per-sample features); its replay batch then arrives in :class:`Batch` after the first task;
  :attr:`Strategy.batch_fields` — other per-step inputs (``"labels"``);
* :meth:`Strategy.with_data`, :meth:`Strategy.memory_selection`, :meth:`Strategy.train_labels` —
  what depends on the run's data (:class:`DataInfo`): a classifier over its classes, which samples
  the memory saves (Kaizen's first 1% of each class), which labels the step sees (a labelled fraction);
* :meth:`Strategy.phases` — how the split's tasks become training phases (Offline joins them);
* :meth:`Strategy.first_task_loss` (plain SSL unless overridden) and :meth:`Strategy.loss`
  (after the first task), pure functions differentiated with respect to ``params``;
* :meth:`Strategy.task_end` — what it stores when a task ends (DER's embeddings, EWC's Fisher),
  through the narrow :class:`TaskEnd` context;
* :meth:`Strategy.predictors` — extra functions evaluation is handed (a classifier's ``"logits"``),
  and :meth:`Strategy.classifier` the deployable classifier an export carries beside the backbone.

Everything a loss needs arrives as explicit pytrees: ``params = {"model": ..., <module>: ...}``;
:class:`ModelState` (BatchNorm statistics, loss state — CorInfoMax covariances, MoCo queue, one slot
per loss term — and the EMA target); :class:`Batch`; :class:`Context` (the frozen old model, never
differentiated: every use goes through ``stop_gradient`` and its statistics are never written back,
the strategy's state and a PRNG key).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxcssl.errors import ConfigError
from jaxcssl.methods.base import Embedding, SSLMethod
from jaxcssl.models.heads import DistillPredictor
from jaxcssl.optim import ParamRules
from jaxcssl.replay import ReplayBuffer

Pytree = Any
Metrics = dict[str, jax.Array]


class Batch(NamedTuple):
    view1: jax.Array  # [B, H, W, C] augmented current samples, view 1
    view2: jax.Array
    memory1: Optional[jax.Array] = None  # [R, H, W, C] augmented replay samples, view 1
    memory2: Optional[jax.Array] = None
    memory_features: Optional[jax.Array] = None  # [R, D] stored per-sample features (DER)
    labels: Optional[jax.Array] = None  # int32 [B] labels of the current samples ("labels" batch field)
    memory_labels: Optional[jax.Array] = None  # int32 [R] labels of the replay samples


@flax.struct.dataclass
class ModelState:
    batch_stats: Pytree  # {"model": ..., <module>: ...}
    loss_state: Pytree  # {"ssl": ..., "distill": ..., "mixup": ...}: one state per loss term
    target: Pytree  # {"params", "batch_stats"} of the EMA network, or None


class Context(NamedTuple):
    old: Pytree  # {"params", "batch_stats"} of the frozen model of the previous task
    strategy_state: Pytree
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """The replay memory a strategy needs: filled at each task end, sampled at every later step."""

    samples_per_task: int  # saved at each task end, without replacement (CroMo Table 6)
    replay_batch: int  # memory samples per step, drawn uniformly with replacement
    feature_dim: int = 1  # per-sample features stored beside the images (1 = unused; Orbax needs non-empty)


class TaskEnd(NamedTuple):
    """What :meth:`Strategy.task_end` may read when task ``task_id`` ends (after the old-model
    snapshot and the memory insertion)."""

    task_id: int
    key: jax.Array
    method: SSLMethod
    views: tuple[Any, Any]  # the two augmentation ViewConfigs of training
    batch_size: int
    images: jax.Array  # uint8 [N, H, W, C] on the device: the training set (placement "host": the task's samples)
    task_indices: np.ndarray  # int [n]: the finished task's training samples (rows of images)
    params: Pytree
    model_state: ModelState
    old: Pytree  # the snapshot of the model just taken
    strategy_state: Pytree
    memory: Optional[ReplayBuffer]
    new_memory_slots: tuple[int, int]  # [start, stop) of the samples inserted for this task
    preprocess: Callable[[jax.Array], jax.Array]  # uint8 -> normalised float (evaluation preprocessing)


class DataInfo(NamedTuple):
    """What a strategy may know of the run's data before anything is initialised."""

    num_classes: int
    labels: np.ndarray  # int32 [N]: the training labels (dataset order)
    phase_indices: tuple[np.ndarray, ...]  # int [n_p]: the training samples of each phase
    memory_keys: tuple[jax.Array, ...]  # the memory-selection key of each phase's end
    data_key: jax.Array  # the run's ``data`` stream (labelled subsets)


class TaskEndResult(NamedTuple):
    strategy_state: Pytree
    memory: Optional[ReplayBuffer]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Base class: fine-tuning (plain SSL on every task). Subclasses override the hooks they need.

    Attributes:
      name: the registry name (``config.strategy.name``); also the config subtree's name.
      label: the method's name in reports (paper tables).
      CONFIG: defaults of ``config.strategy.<name>.*``.
      batch_fields: per-step inputs beyond the two views and the replay batch: ``"labels"``.
      PREDICTORS: the extra predictors :meth:`predictors` returns (``"logits"`` for a classifier).
      old_model_bn: BatchNorm of the frozen old model: ``"batch"`` statistics (the reference's
        ``oldModel.train()``) or its stored ``"running"`` averages.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    CONFIG: ClassVar[dict[str, Any]] = {}
    batch_fields: ClassVar[frozenset[str]] = frozenset()
    PREDICTORS: ClassVar[frozenset[str]] = frozenset()

    old_model_bn: str = "batch"

    # --- configuration -----------------------------------------------------------------------
    @classmethod
    def check(cls, config) -> None:
        """Refuse settings that cannot work with one :class:`~jaxcssl.errors.ConfigError` line."""
        del config

    @classmethod
    def from_config(cls, config, method: SSLMethod) -> "Strategy":
        """The strategy with its options from ``config.strategy.<name>`` (keys = field names) and, for
        the fields it declares, the shared ``config.strategy`` settings: ``memory_spec`` (replay
        memory) and ``distill_predictor`` (CaSSLe's ``h``)."""
        kwargs = dict(config.strategy[cls.name]) if cls.name in config.strategy else {}
        fields = {f.name for f in dataclasses.fields(cls)}
        if "memory_spec" in fields:
            kwargs["memory_spec"] = memory_from_config(config, cls.memory_feature_dim(method))
        if "distill_predictor" in fields:
            kwargs["distill_predictor"] = make_distill_predictor(config, method)
        return cls(old_model_bn=config.strategy.old_model_bn, **kwargs)

    @classmethod
    def memory_feature_dim(cls, method: SSLMethod) -> int:
        """Width of the per-sample features stored in the memory (1: none)."""
        del method
        return 1

    def report_label(self) -> str:
        return self.label or self.name

    # --- what the learner prepares -------------------------------------------------------------
    def init_modules(self, key: jax.Array, method: SSLMethod) -> dict[str, dict[str, Pytree]]:
        """``{module name: {"params", "batch_stats"}}`` of the modules this strategy trains."""
        del key, method
        return {}

    def param_rules(self) -> ParamRules:
        """Optimiser rules for this strategy's parameters (learning-rate / weight-decay multipliers)."""
        return ParamRules()

    def memory(self) -> Optional[MemorySpec]:
        """The replay memory this strategy needs (its ``memory_spec`` field), or ``None``."""
        return getattr(self, "memory_spec", None)

    def with_data(self, data: DataInfo) -> "Strategy":
        """This strategy for the run's data (e.g. a classifier over ``data.num_classes``); the learner
        calls it once, before anything is initialised. Default: unchanged."""
        del data
        return self

    def memory_selection(self, data: DataInfo) -> Optional[list[np.ndarray]]:
        """The samples each phase's end saves into the memory (one index array per phase; the last
        phase's is never saved), or ``None``: ``memory_spec.samples_per_task`` drawn uniformly at every
        phase end. With a selection the memory holds exactly those samples, and a replay batch is at
        most what the first phase saves (a loader over the memory cannot draw more)."""
        del data
        return None

    def train_labels(self, data: DataInfo) -> np.ndarray:
        """The training labels the step sees (the ``"labels"`` batch field and the memory's labels);
        ``-1`` withholds a sample's label. Default: every label, ``data.labels``."""
        return data.labels

    def phases(self, tasks: list[np.ndarray], schedule: str) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """The training phases: ``(split tasks trained, int32 [S, n] sample rows)`` each.

        ``schedule="sequential"``: one phase per task. ``"interleaved"`` (CroMo Sec. 3): one phase of
        ``S`` rows, step ``s`` drawing from task ``s mod S`` (rows cut to the smallest task).
        ``"interleaved_data"`` (the DIL-minibatch ablation, CroMo App. B): the same, but row ``k``
        holds every ``S``-th sample (from the ``k``-th) of every task, so each row mixes all classes in
        about equal shares while the tasks still group the classes for TP.
        """
        tasks = [np.asarray(t, np.int32) for t in tasks]
        if schedule == "interleaved_data":
            tasks = [np.concatenate([t[k::len(tasks)] for t in tasks]) for k in range(len(tasks))]
        if schedule in ("interleaved", "interleaved_data"):
            n = min(len(t) for t in tasks)
            return [(tuple(range(len(tasks))), np.stack([t[:n] for t in tasks]))]
        return [((i,), t[None, :]) for i, t in enumerate(tasks)]

    def init_state(self, params: Pytree) -> Pytree:
        """Strategy state carried across steps and tasks (EWC's Fisher and anchor)."""
        del params
        return {}

    # --- losses --------------------------------------------------------------------------------
    def first_task_loss(
        self, method: SSLMethod, params: Pytree, state: ModelState, batch: Batch, ctx: Context
    ) -> tuple[jax.Array, tuple[Metrics, ModelState]]:
        """The loss before any task has ended: the SSL objective on the current batch."""
        del ctx
        return ssl_only(method, params, state, batch.view1, batch.view2, batch.labels)

    def loss(
        self, method: SSLMethod, params: Pytree, state: ModelState, batch: Batch, ctx: Context
    ) -> tuple[jax.Array, tuple[Metrics, ModelState]]:
        """The loss after the first task: total, metrics and the updated (non-differentiated) state."""
        del ctx
        return ssl_only(method, params, state, batch.view1, batch.view2, batch.labels)

    def predictors(self, method: SSLMethod, params: Pytree, batch_stats: Pytree,
                   preprocess: Callable[[jax.Array], jax.Array]) -> dict[str, Callable]:
        """Extra evaluation predictors of the trained state (``PREDICTORS``), e.g. ``"logits"``:
        uint8 images -> class logits. Pass the weights as arguments of a module-level jitted function
        (``functools.partial``) so that each evaluation reuses one compiled program."""
        del method, params, batch_stats, preprocess
        return {}

    def classifier(self, params: Pytree) -> Optional[tuple[dict[str, Any], Pytree]]:
        """The deployable classifier on the backbone's features, ``(spec, params)`` of an MLP
        (:func:`jaxcssl.export.load_classifier`: ``{"hidden_dims", "num_classes"}``), or ``None``."""
        del params
        return None

    def task_end(self, ctx: TaskEnd) -> TaskEndResult:
        """Store what later tasks need; the default keeps the state and memory as they are."""
        return TaskEndResult(ctx.strategy_state, ctx.memory)


# --- shared pieces ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Distilling(Strategy):
    """A strategy with CaSSLe's predictor ``h`` (``params["distill"]``), distilling to the old model."""

    distill_predictor: Optional[nn.Module] = None

    @classmethod
    def check(cls, config) -> None:
        if config.ssl.method == "swav":
            raise ConfigError(f"strategy.name={cls.name!r} distils, which ssl.method='swav' does not support")

    def init_modules(self, key: jax.Array, method: SSLMethod) -> dict[str, dict[str, Pytree]]:
        dim = method.model.projector.out_dim
        variables = self.distill_predictor.init(key, jnp.zeros((2, dim)), train=True)
        return {"distill": {"params": variables["params"], "batch_stats": variables["batch_stats"]}}


def make_distill_predictor(config, method: SSLMethod) -> nn.Module:
    """CaSSLe's ``h``: projector output -> ``strategy.distill_hidden_dim`` (× ``model.head_scale``) -> output."""
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
    hidden = max(8, round(config.strategy.distill_hidden_dim * config.model.head_scale))
    return DistillPredictor(hidden_dim=hidden, out_dim=method.model.projector.out_dim, dtype=dtype)


def memory_from_config(config, feature_dim: int = 1) -> MemorySpec:
    s = config.strategy
    return MemorySpec(samples_per_task=s.samples_per_task, replay_batch=s.replay_batch, feature_dim=feature_dim)


def check_memory(config, name: str, mixes: bool = False) -> None:
    """Memory settings of a replay strategy ``name``; ``mixes``: each replay sample is paired with a
    current one (so the replay batch cannot exceed the batch)."""
    s = config.strategy
    for key in ("samples_per_task", "replay_batch"):
        if not s[key] > 0:
            raise ConfigError(f"strategy.{key}={s[key]!r} must be > 0")
    if mixes and s.replay_batch > config.train.batch_size:
        raise ConfigError(
            f"strategy.replay_batch={s.replay_batch} exceeds train.batch_size={config.train.batch_size}: "
            f"{name} pairs each memory sample with a current one"
        )


def online(method: SSLMethod, params: Pytree, state: ModelState, images: jax.Array) -> tuple[Embedding, ModelState]:
    """Current-model forward in train mode; BatchNorm statistics are threaded through ``state``."""
    embedding, stats = method.embed(params["model"], state.batch_stats["model"], images)
    return embedding, state.replace(batch_stats={**state.batch_stats, "model": stats})


def target_keys(method: SSLMethod, state: ModelState, images: jax.Array) -> tuple[Optional[Embedding], ModelState]:
    """EMA target forward (BYOL, MoCo); ``None`` for methods without a target network."""
    if not method.uses_target:
        return None, state
    target = state.target
    embedding, stats = method.embed(target["params"], target["batch_stats"], images)
    embedding = jax.tree_util.tree_map(jax.lax.stop_gradient, embedding)
    return embedding, state.replace(target={**target, "batch_stats": stats})


def old_embed(method: SSLMethod, old: Pytree, images: jax.Array, bn: str) -> Embedding:
    """Frozen old-model forward. ``bn="batch"`` uses batch statistics like the reference's
    ``oldModel.train()``; ``"running"`` uses its stored averages. Nothing is written back."""
    embedding, _ = method.embed(old["params"], old["batch_stats"], images, train=(bn == "batch"))
    return jax.tree_util.tree_map(jax.lax.stop_gradient, embedding)


def split(embedding: Embedding, n: int) -> tuple[Embedding, Embedding]:
    """Rows ``[:n]`` and ``[n:]`` of every field."""
    head = jax.tree_util.tree_map(lambda a: a[:n], embedding)
    tail = jax.tree_util.tree_map(lambda a: a[n:], embedding)
    return head, tail


def ssl_term(
    method: SSLMethod, state: ModelState, e1: Embedding, e2: Embedding, x1: jax.Array, x2: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array], ModelState]:
    """``L_SSL(z¹, z²)`` on two views already embedded by the current model (``x`` are the views,
    needed by the target network). Returns the loss, the key-side embeddings and the state."""
    t1, state = target_keys(method, state, x1)
    t2, state = target_keys(method, state, x2)
    k1, k2 = method.key_embedding(e1, t1), method.key_embedding(e2, t2)
    loss, loss_state = method.ssl_loss(e1, e2, k1, k2, state.loss_state["ssl"])
    return loss, (k1, k2), state.replace(loss_state={**state.loss_state, "ssl": loss_state})


def ssl_only(
    method: SSLMethod, params: Pytree, state: ModelState, x1: jax.Array, x2: jax.Array,
    labels: Optional[jax.Array] = None,
) -> tuple[jax.Array, tuple[Metrics, ModelState]]:
    """Plain SSL on two views (fine-tune, offline, and every strategy during the first task).

    A method trained on labels (``"labels"`` in its ``batch_fields``: supervised) scores view 1
    against ``labels`` with its criterion instead (the ``"ce"`` term); view 2 is not used.
    """
    e1, state = online(method, params, state, x1)
    if "labels" in method.batch_fields:
        loss, loss_state = method.criterion(e1, labels, state.loss_state["ssl"])
        return loss, ({"ce": loss}, state.replace(loss_state={**state.loss_state, "ssl": loss_state}))
    e2, state = online(method, params, state, x2)
    loss, _, state = ssl_term(method, state, e1, e2, x1, x2)
    return loss, ({"ssl": loss}, state)


def distill_term(
    predictor: nn.Module, method: SSLMethod, params: Pytree, state: ModelState, z: jax.Array, old_key: jax.Array
) -> tuple[jax.Array, ModelState]:
    """CaSSLe predictive distillation ``L_SSL(z̄, h(z))`` (CroMo Eq. 5, ζ term) for one view."""
    variables = {"params": params["distill"], "batch_stats": state.batch_stats["distill"]}
    predicted, updates = predictor.apply(variables, z, train=True, mutable=["batch_stats"])
    loss, loss_state = method.distill(predicted, old_key, state.loss_state["distill"])
    state = state.replace(
        batch_stats={**state.batch_stats, "distill": updates["batch_stats"]},
        loss_state={**state.loss_state, "distill": loss_state},
    )
    return loss, state


def concat(*arrays: jax.Array) -> jax.Array:
    return jnp.concatenate(arrays, axis=0)
