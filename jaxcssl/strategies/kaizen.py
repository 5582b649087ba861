"""Kaizen (Tang et al., WACV 2024): continual fine-tuning of the feature extractor and a classifier.

Every step after the first task, on the current batch ``x_t`` concatenated with a replay batch ``x_M``
(two views each; :mod:`jaxcssl.losses.kaizen` has the terms):

``L = w_SSL·L_SSL + λ·L_FE^KD + L_C^CT + w_C·L_C^KD``

* ``L_SSL``: the objective's own loss (``method.ssl_loss``) on ``[x_t; x_M]``: replay samples are extra
  SSL samples, and MoCo v2+'s replay keys enter its per-view queues (the method's own loss and state);
* ``L_FE^KD``: CaSSLe's predictor ``h`` maps the current projections onto the frozen previous
  model's, with the reference's distance and λ per objective (BYOL ``2 − 2cos``, λ 1; SimCLR and
  MoCo v2+ symmetric InfoNCE, τ 0.2, λ 1; VICReg MSE, λ 25);
* ``L_C^CT``: the classifier ``g`` (an MLP, 512 → 1000 → ReLU → C) on stop-gradient backbone features,
  cross-entropy on the labels of ``[x_t; x_M]``, summed over the two views; only labelled samples
  count (:attr:`Kaizen.labelled_fraction`);
* ``L_C^KD``: soft-label cross-entropy (w_C = 2, T = 1) from the previous task's classifier on the
  previous feature extractor to ``g``, on every sample, averaged over the views.

Neither classifier term reaches the feature extractor. The first task trains ``L_SSL + L_C^CT`` on the
current batch. The memory holds the first 1% of each earlier class in dataset order (fixed,
re-augmented at every draw, with its labels); a replay batch is ``min(32, |memory|)``. The
deployable classifier is evaluated as it is (``"logits"`` predictor, the ``head`` protocol).

Baselines of the poster are settings: CaSSLe with the same classifier (``classifier_distill_weight=0,
replay_fraction=0``), no distillation (``feature_distill_weight=0, classifier_distill_weight=0``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxcssl.errors import ConfigError
from jaxcssl.losses._common import l2_normalize
from jaxcssl.losses.kaizen import feature_distillation, masked_cross_entropy, soft_label_distillation
from jaxcssl.models.heads import MLPHead, scaled
from jaxcssl.models.resnet import feature_dim
from jaxcssl.optim import ParamRules
from jaxcssl.strategies.base import (
    Distilling,
    MemorySpec,
    TaskEndResult,
    concat,
    make_distill_predictor,
    old_embed,
    online,
    ssl_term,
)

# The reference's feature distiller per objective: distance, λ, and whether h sees the L2-normalised
# projection (its MoCo v2+ hands the normalised q to the distiller).
OBJECTIVES = {
    "byol": ("cosine", 1.0, False),
    "simclr": ("contrastive", 1.0, False),
    "mocov2": ("contrastive", 1.0, True),
    "vicreg": ("mse", 25.0, False),
}
SELECTIONS = ("first", "random")


@functools.partial(jax.jit, static_argnames=("method", "head"))
def _classifier_logits(method, head: MLPHead, variables, head_params, images: jax.Array) -> jax.Array:
    """Normalised images -> the classifier's logits over every class (eval-mode backbone)."""
    features = method.features(variables["params"], variables["batch_stats"], images)
    return head.apply({"params": head_params}, features, train=False)


def per_class_subset(indices: np.ndarray, labels: np.ndarray, fraction: float, *, first: bool,
                     key: Optional[jax.Array] = None, rounding=int) -> np.ndarray:
    """``rounding(fraction · n_c)`` samples of every class ``c`` among ``indices``: the first ones in
    dataset order (``first``), or drawn without replacement with ``key``; sorted."""
    indices = np.sort(np.asarray(indices))
    chosen = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        count = rounding(len(members) * fraction)
        if first:
            chosen.append(members[:count])
        else:
            order = np.asarray(jax.random.permutation(jax.random.fold_in(key, int(c)), len(members)))
            chosen.append(members[order[:count]])
    return np.sort(np.concatenate(chosen)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Kaizen(Distilling):
    """Kaizen's four terms; its baselines by switching terms off (module docstring)."""

    name = "kaizen"
    label = "Kaizen"
    CONFIG = dict(
        feature_distill_weight=None,    # λ of L_FE^KD; None: the reference's (BYOL, SimCLR, MoCo v2+ 1, VICReg 25); 0: off
        distill_temperature=0.2,        # τ of the contrastive feature distiller (SimCLR, MoCo v2+)
        classifier_hidden=(1000,),      # hidden widths of the classifier g (x model.head_scale): 512 -> 1000 -> ReLU -> C
        classifier_lr=0.1,              # its peak learning rate, not scaled by the batch (the reference's; VICReg 0.05)
        classifier_weight_decay=0.0,    # its weight decay (the reference's)
        classifier_distill_weight=2.0,  # w_C of L_C^KD (the reference's); 0: off
        classifier_temperature=1.0,     # T of the soft labels (the reference's 1)
        replay_fraction=0.01,           # memory: this fraction of each earlier class's samples (poster ablation 0, .01, .05)
        replay_selection="first",       # first: the first samples in dataset order (the reference) | random: per class
        replay_batch=32,                # replay samples per step, at most what the memory holds after the first task
        labelled_fraction=1.0,          # of each task's samples per class (seeded), whose label the classifier sees
        ssl_weight=1.0,                 # w_SSL (2 reproduces the reference's BYOL, which sums both directions)
    )
    batch_fields = frozenset({"labels"})
    PREDICTORS = frozenset({"logits"})

    distance: str = "contrastive"
    feature_distill_weight: float = 1.0
    normalise_projection: bool = False
    distill_temperature: float = 0.2
    classifier_hidden: tuple[int, ...] = (1000,)
    classifier_lr_mult: float = 0.1
    classifier_wd_mult: float = 0.0
    classifier_distill_weight: float = 2.0
    classifier_temperature: float = 1.0
    replay_fraction: float = 0.01
    replay_selection: str = "first"
    labelled_fraction: float = 1.0
    ssl_weight: float = 1.0
    memory_spec: Optional[MemorySpec] = None
    num_classes: int = 0  # set by with_data

    # --- configuration -----------------------------------------------------------------------
    @classmethod
    def check(cls, config):
        s = config.strategy.kaizen
        if config.ssl.method not in OBJECTIVES:
            raise ConfigError(f"strategy.name='kaizen' supports ssl.method {', '.join(sorted(OBJECTIVES))} (the "
                              f"objectives of its reference), not {config.ssl.method!r}")
        for key in ("classifier_weight_decay", "classifier_distill_weight", "ssl_weight"):
            if not s[key] >= 0:
                raise ConfigError(f"strategy.kaizen.{key}={s[key]!r} must be >= 0")
        if s.feature_distill_weight is not None and not s.feature_distill_weight >= 0:
            raise ConfigError(f"strategy.kaizen.feature_distill_weight={s.feature_distill_weight!r} must be >= 0")
        for key in ("distill_temperature", "classifier_lr", "classifier_temperature", "replay_batch"):
            if not s[key] > 0:
                raise ConfigError(f"strategy.kaizen.{key}={s[key]!r} must be > 0")
        for key in ("replay_fraction", "labelled_fraction"):
            if not 0.0 <= s[key] <= 1.0:
                raise ConfigError(f"strategy.kaizen.{key}={s[key]!r} must lie in [0, 1]")
        if s.replay_selection not in SELECTIONS:
            raise ConfigError(f"strategy.kaizen.replay_selection={s.replay_selection!r} is not one of: "
                              f"{', '.join(SELECTIONS)}")
        if not all(isinstance(d, int) and d > 0 for d in s.classifier_hidden):
            raise ConfigError(f"strategy.kaizen.classifier_hidden={tuple(s.classifier_hidden)!r} must be positive "
                              "integers")
        if s.classifier_weight_decay > 0 and not config.optim.weight_decay > 0:
            raise ConfigError(f"strategy.kaizen.classifier_weight_decay={s.classifier_weight_decay} needs "
                              f"optim.weight_decay > 0 (it is a multiple of it), got {config.optim.weight_decay}")

    @classmethod
    def from_config(cls, config, method):
        s, o = config.strategy.kaizen, config.optim
        distance, default_weight, normalise = OBJECTIVES[config.ssl.method]
        weight = default_weight if s.feature_distill_weight is None else float(s.feature_distill_weight)
        # The rules scale the model's rate: the classifier's own peak rate as a multiple of it.
        peak = o.base_lr * config.train.batch_size / o.base_batch
        return cls(
            old_model_bn=config.strategy.old_model_bn,
            distill_predictor=make_distill_predictor(config, method) if weight > 0 else None,
            distance=distance, feature_distill_weight=weight, normalise_projection=normalise,
            distill_temperature=s.distill_temperature,
            classifier_hidden=tuple(scaled(d, config.model.head_scale) for d in s.classifier_hidden),
            classifier_lr_mult=s.classifier_lr / peak,
            classifier_wd_mult=s.classifier_weight_decay / o.weight_decay if o.weight_decay > 0 else 0.0,
            classifier_distill_weight=s.classifier_distill_weight, classifier_temperature=s.classifier_temperature,
            replay_fraction=s.replay_fraction, replay_selection=s.replay_selection,
            labelled_fraction=s.labelled_fraction, ssl_weight=s.ssl_weight,
            # samples_per_task is unused: memory_selection saves the samples.
            memory_spec=MemorySpec(samples_per_task=0, replay_batch=s.replay_batch) if s.replay_fraction > 0 else None,
        )

    def report_label(self) -> str:
        features, classifier = self.feature_distill_weight > 0, self.classifier_distill_weight > 0
        if not features and not classifier:
            return "No distillation" if self.memory_spec is not None else "Fine-tune + classifier"
        if features and not classifier and self.memory_spec is None:
            return "CaSSLe + classifier"
        label = self.label + ("" if features and classifier else " (no feature KD)" if classifier
                              else " (no classifier KD)")
        return label if self.replay_fraction == 0.01 else f"{label}, replay {100 * self.replay_fraction:g}%"

    # --- data ----------------------------------------------------------------------------------
    def with_data(self, data):
        return dataclasses.replace(self, num_classes=data.num_classes)

    def memory_selection(self, data):
        """The first (or random) ``replay_fraction`` of each class of each phase, ``int(fraction · n_c)``
        per class as the reference."""
        saved = [per_class_subset(indices, data.labels, self.replay_fraction, first=self.replay_selection == "first",
                                  key=key) for indices, key in zip(data.phase_indices, data.memory_keys)]
        if len(saved[0]) == 0:
            smallest = np.unique(data.labels[data.phase_indices[0]], return_counts=True)[1].min()
            raise ConfigError(f"strategy.kaizen.replay_fraction={self.replay_fraction} keeps no sample of the first "
                              f"task (its smallest class has {smallest} training samples); raise it, or 0 for no replay")
        return saved

    def train_labels(self, data):
        """Each phase keeps ``round(labelled_fraction · n_c)`` labels per class, drawn from the ``data``
        stream; the others become -1."""
        if self.labelled_fraction >= 1.0:
            return data.labels
        labels = np.full_like(data.labels, -1)
        for phase, indices in enumerate(data.phase_indices):
            keep = per_class_subset(indices, data.labels, self.labelled_fraction, first=False,
                                    key=jax.random.fold_in(data.data_key, phase), rounding=round)
            labels[keep] = data.labels[keep]
        return labels

    # --- modules -------------------------------------------------------------------------------
    @property
    def head(self) -> MLPHead:
        """The classifier ``g``: ``[Dense-ReLU] × len(classifier_hidden)``, ``Dense(num_classes)``."""
        return MLPHead(hidden_dims=self.classifier_hidden, out_dim=self.num_classes, use_bn=False)

    def init_modules(self, key, method):
        key_distill, key_classifier = jax.random.split(key)
        modules = super().init_modules(key_distill, method) if self.feature_distill_weight > 0 else {}
        variables = self.head.init(key_classifier, jnp.zeros((2, feature_dim(method.model.backbone))), train=False)
        modules["classifier"] = {"params": variables["params"], "batch_stats": {}}
        return modules

    def param_rules(self):
        return ParamRules(lr_mults=(("classifier/.*", self.classifier_lr_mult),),
                          wd_mults=(("classifier/.*", self.classifier_wd_mult),))

    def init_state(self, params):
        return {"old_classifier": jax.tree_util.tree_map(jnp.array, params["classifier"])}

    def task_end(self, ctx):
        """Snapshot the classifier for the next task's ``L_C^KD`` (a copy: the state is donated)."""
        old = jax.tree_util.tree_map(jnp.copy, ctx.params["classifier"])
        return TaskEndResult({**ctx.strategy_state, "old_classifier": old}, ctx.memory)

    # --- losses --------------------------------------------------------------------------------
    def classify(self, head_params, features: jax.Array) -> jax.Array:
        return self.head.apply({"params": head_params}, features, train=False)

    def _predict(self, params, state, z: jax.Array):
        """``h(z)`` in train mode, its BatchNorm statistics threaded through ``state``."""
        variables = {"params": params["distill"], "batch_stats": state.batch_stats["distill"]}
        predicted, updates = self.distill_predictor.apply(variables, z, train=True, mutable=["batch_stats"])
        return predicted, state.replace(batch_stats={**state.batch_stats, "distill": updates["batch_stats"]})

    def first_task_loss(self, method, params, state, batch, ctx):
        """``w_SSL·L_SSL + L_C^CT`` on the current batch."""
        return self._loss(method, params, state, batch, ctx, later=False)

    def loss(self, method, params, state, batch, ctx):
        return self._loss(method, params, state, batch, ctx, later=True)

    def _loss(self, method, params, state, batch, ctx, *, later: bool):
        x1, x2, labels = batch.view1, batch.view2, batch.labels
        if later and batch.memory1 is not None:
            x1, x2 = concat(x1, batch.memory1), concat(x2, batch.memory2)
            labels = concat(labels, batch.memory_labels)
        e1, state = online(method, params, state, x1)
        e2, state = online(method, params, state, x2)
        ssl, _, state = ssl_term(method, state, e1, e2, x1, x2)
        logits = [self.classify(params["classifier"], jax.lax.stop_gradient(e.features)) for e in (e1, e2)]
        ce = masked_cross_entropy(logits[0], labels) + masked_cross_entropy(logits[1], labels)
        total, metrics = self.ssl_weight * ssl + ce, {"ssl": ssl, "ce": ce}
        if not later or (self.feature_distill_weight == 0 and self.classifier_distill_weight == 0):
            return total, (metrics, state)
        old = [old_embed(method, ctx.old, x, self.old_model_bn) for x in (x1, x2)]
        if self.feature_distill_weight > 0:
            predicted = []
            for e in (e1, e2):
                z = l2_normalize(e.projection) if self.normalise_projection else e.projection
                p, state = self._predict(params, state, z)
                predicted.append(p)
            distill = feature_distillation(self.distance, *predicted, old[0].projection, old[1].projection,
                                           self.distill_temperature)
            total, metrics["distill"] = total + self.feature_distill_weight * distill, distill
        if self.classifier_distill_weight > 0:
            teacher = jax.lax.stop_gradient(ctx.strategy_state["old_classifier"])
            classifier_distill = 0.5 * sum(
                soft_label_distillation(y, self.classify(teacher, o.features), self.classifier_temperature)
                for y, o in zip(logits, old))
            total = total + self.classifier_distill_weight * classifier_distill
            metrics["classifier_distill"] = classifier_distill
        return total, (metrics, state)

    # --- evaluation and export -----------------------------------------------------------------
    def predictors(self, method, params, batch_stats, preprocess):
        variables = {"params": params["model"], "batch_stats": batch_stats["model"]}

        def logits(images: jax.Array) -> jax.Array:
            return _classifier_logits(method, self.head, variables, params["classifier"], preprocess(images))

        return {"logits": logits}

    def classifier(self, params):
        return {"hidden_dims": list(self.classifier_hidden), "num_classes": self.num_classes}, params["classifier"]
