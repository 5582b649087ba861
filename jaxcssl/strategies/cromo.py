"""CroMo-Mixup (Mushtaq et al., ECCV 2024), Eq. 3–5 of the paper.

For each view ``v`` of the current batch ``x_t`` and a memory batch ``x_M`` (``R`` samples):

* cross-task data mixup (Eq. 3): ``x_mix = λ x_t[:R] + (1 − λ) x_M``;
* cross-model feature mixup (Eq. 4): ``L_CroMo = λ L(z_mix, z_t) + (1 − λ) L(z_mix, z̄_M)`` with
  ``z_mix``, ``z_t`` from the current model and ``z̄_M`` from the frozen old model;
* total (Eq. 5): ``L_SSL(z¹_t, z²_t) + ζ Σ_v L(z̄ᵛ_t, h(zᵛ_t)) + Σ_v L_CroMo(zᵛ_mix, zᵛ_t, z̄ᵛ_M)``.

As in the official code, current and mixed samples of a view go through the current model in one
batch, and current and memory samples through the old model (BatchNorm in training mode) in one
batch. ``mixup_weight`` multiplies the two ``L_CroMo`` terms (1 in Eq. 5; the official code uses
0.5), ``distill_weight`` is ζ on the sum over both views (the official code averages the views, i.e.
ζ = 0.5 reproduces it). The Table 3 ablations are options: ``input_mixup="within_task"`` pairs current samples with
other current samples, ``output_mixup="same_model"`` embeds the partner with the current model.
ζ = 0 gives CroMo-Mixup* of Table 2.

Where the official trainers depart from Eq. 4–5 in more than a weight, an option reproduces them:

* ``mixup_loss="barlow_twins"`` (official CorInfoMax): ``L`` in Eq. 4 is the Barlow Twins loss
  (λ 5e-3, scale 0.1) on L2-normalised embeddings instead of the SSL objective;
* ``distill_form="split_views"`` (official CorInfoMax): the distillation is one CorInfoMax loss split
  across the views, its invariance term on view 2 and its log-det term on view 1
  (:meth:`~jaxcssl.methods.corinfomax.CorInfoMax.distill_split_views`), with ``h`` fed L2-normalised
  projections, instead of the whole loss on each view;
* ``distill_input="current_and_mixed"`` (official BYOL): ``h`` runs on the current and mixed rows
  together (its BatchNorm statistics span both) before the current rows are distilled.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxcssl import mixup
from jaxcssl.errors import ConfigError
from jaxcssl.losses import barlow_twins
from jaxcssl.losses._common import l2_normalize
from jaxcssl.methods import barlow_twins as barlow_twins_method
from jaxcssl.strategies.base import (
    Distilling,
    MemorySpec,
    check_memory,
    concat,
    make_distill_predictor,
    memory_from_config,
    old_embed,
    online,
    split,
    ssl_term,
    target_keys,
)

_CHOICES = {"lam": ("fixed", "batch", "sample"), "input": ("cross_task", "within_task"),
            "output": ("cross_model", "same_model"), "loss": ("ssl", "barlow_twins")}
_DISTILL_CHOICES = {"distill_form": ("per_view", "split_views"), "distill_input": ("current", "current_and_mixed")}


@dataclasses.dataclass(frozen=True)
class CroMoMixup(Distilling):
    name = "cromo"
    label = "CroMo-Mixup"
    CONFIG = dict(
        distill_weight=1.0,          # ζ of Eq. 5 on the sum over both views; 0 = CroMo-Mixup* (Table 2)
        distill_form="per_view",     # per_view (Eq. 5) | split_views (CorInfoMax, the official trainer)
        distill_input="current",     # current (Eq. 5) | current_and_mixed (h's BatchNorm; the official BYOL trainer)
        mixup=dict(
            lam="fixed",             # fixed | batch (one Beta draw per batch) | sample (one per pair)
            value=0.7,               # λ when fixed (the official Barlow Twins code)
            alpha=1.0,               # Beta(α, α) (the official SimCLR/BYOL/CorInfoMax code: Beta(1, 1))
            input="cross_task",      # cross_task (memory partner) | within_task (Table 3 ablation)
            output="cross_model",    # cross_model (old model embeds the partner) | same_model (Table 3)
            weight=1.0,              # multiplies the two L_CroMo terms (Eq. 5: 1; the official code: 0.5)
            loss="ssl",              # L of Eq. 4: ssl (the objective) | barlow_twins (the official CorInfoMax trainer)
        ),
    )

    memory_spec: MemorySpec = MemorySpec(samples_per_task=500, replay_batch=64)
    distill_weight: float = 1.0
    distill_form: str = "per_view"
    distill_input: str = "current"
    lam_mode: str = "fixed"
    lam_value: float = 0.7
    alpha: float = 1.0
    input_mixup: str = "cross_task"
    output_mixup: str = "cross_model"
    mixup_weight: float = 1.0
    mixup_loss: str = "ssl"

    @classmethod
    def check(cls, config):
        s = config.strategy.cromo
        check_memory(config, cls.name, mixes=True)
        for key, allowed in _CHOICES.items():
            if s.mixup[key] not in allowed:
                raise ConfigError(f"strategy.cromo.mixup.{key}={s.mixup[key]!r} is not one of: {', '.join(allowed)}")
        for key, allowed in _DISTILL_CHOICES.items():
            if s[key] not in allowed:
                raise ConfigError(f"strategy.cromo.{key}={s[key]!r} is not one of: {', '.join(allowed)}")
        if s.distill_form == "split_views" and config.ssl.method != "corinfomax":
            raise ConfigError(f"strategy.cromo.distill_form='split_views' splits CorInfoMax's loss across the views; "
                              f"ssl.method={config.ssl.method!r} has no such form")
        if not 0.0 <= s.mixup.value <= 1.0:
            raise ConfigError(f"strategy.cromo.mixup.value={s.mixup.value} must lie in [0, 1]")
        if not s.mixup.alpha > 0:
            raise ConfigError(f"strategy.cromo.mixup.alpha={s.mixup.alpha!r} must be > 0")
        for key in ("distill_weight",):
            if not s[key] >= 0:
                raise ConfigError(f"strategy.cromo.{key}={s[key]!r} must be >= 0")
        if not s.mixup.weight >= 0:
            raise ConfigError(f"strategy.cromo.mixup.weight={s.mixup.weight!r} must be >= 0")
        if s.distill_weight > 0:
            super().check(config)

    @classmethod
    def from_config(cls, config, method):
        s = config.strategy.cromo
        m = s.mixup
        return cls(
            old_model_bn=config.strategy.old_model_bn, distill_predictor=make_distill_predictor(config, method),
            memory_spec=memory_from_config(config), distill_weight=s.distill_weight, distill_form=s.distill_form,
            distill_input=s.distill_input, lam_mode=m.lam, lam_value=m.value, alpha=m.alpha, input_mixup=m.input,
            output_mixup=m.output, mixup_weight=m.weight, mixup_loss=m.loss,
        )

    def report_label(self) -> str:
        return self.label + ("*" if self.distill_weight == 0 else "")

    def init_modules(self, key, method):
        return super().init_modules(key, method) if self.distill_weight > 0 else {}

    def loss(self, method, params, state, batch, ctx):
        num_current, num_mixed = batch.view1.shape[0], batch.memory1.shape[0]
        key_lam, key_partner = jax.random.split(ctx.key)
        lam = mixup.sample_lambda(key_lam, self.lam_mode, num_mixed, value=self.lam_value, alpha=self.alpha)
        views = (batch.view1, batch.view2)
        if self.input_mixup == "cross_task":
            partners = (batch.memory1, batch.memory2)
        else:  # each sample's partner is its successor in a random cycle: never itself
            order = jax.random.permutation(key_partner, num_current)
            successor = jnp.zeros_like(order).at[order].set(jnp.roll(order, -1))
            partners = tuple(x[successor[:num_mixed]] for x in views)

        current, mixed = [], []
        for x, partner in zip(views, partners):
            embedding, state = online(method, params, state, concat(x, mixup.mix(x[:num_mixed], partner, lam)))
            cur, mix = split(embedding, num_current)
            current.append(cur)
            mixed.append(mix)
        ssl, current_keys, state = ssl_term(method, state, current[0], current[1], *views)

        cromo, old_keys = 0.0, []
        for x, partner, mix, cur_key in zip(views, partners, mixed, current_keys):
            old_current = None
            if self.output_mixup == "cross_model":
                old = old_embed(method, ctx.old, concat(x, partner), self.old_model_bn)
                old_current, old_partner = split(old, num_current)
                partner_key = method.key_embedding(old_partner, old_partner)
            else:
                partner_embedding, state = online(method, params, state, partner)
                partner_target, state = target_keys(method, state, partner)
                partner_key = method.key_embedding(partner_embedding, partner_target)
            to_current, mixup_state = self._mixup_term(method, mix, cur_key[:num_mixed], state.loss_state["mixup"])
            to_partner, mixup_state = self._mixup_term(method, mix, partner_key, mixup_state)
            state = state.replace(loss_state={**state.loss_state, "mixup": mixup_state})
            cromo = cromo + mixup.cromo_combination(to_current, to_partner, lam)
            if self.distill_weight > 0:
                if old_current is None:
                    old_current = old_embed(method, ctx.old, x, self.old_model_bn)
                old_keys.append(method.key_embedding(old_current, old_current))
        distill = 0.0
        if self.distill_weight > 0:
            distill, state = self._distill(method, params, state, current, mixed, old_keys)
        total = ssl + self.distill_weight * distill + self.mixup_weight * cromo
        return total, ({"ssl": ssl, "distill": distill, "cromo": cromo, "lambda": lam.mean()}, state)

    def _mixup_term(self, method, query, key, state):
        """One ``L`` of Eq. 4: the SSL criterion, or the official CorInfoMax trainer's Barlow Twins loss."""
        if self.mixup_loss == "barlow_twins":
            bt = barlow_twins_method.DEFAULTS["loss"]
            return barlow_twins(l2_normalize(query.projection), l2_normalize(key), **bt), state
        return method.criterion(query, key, state)

    def _distill(self, method, params, state, current, mixed, old_keys):
        """ζ's sum of Eq. 5, ``Σ_v L(z̄ᵛ, h(zᵛ))``, or the official CorInfoMax loss split across the views."""
        predicted = []
        for cur, mix in zip(current, mixed):
            z = cur.projection
            if self.distill_input == "current_and_mixed":
                z = concat(z, mix.projection)
            if self.distill_form == "split_views":  # the official CorInfoMax trainer normalises z before h
                z = l2_normalize(z)
            variables = {"params": params["distill"], "batch_stats": state.batch_stats["distill"]}
            prediction, updates = self.distill_predictor.apply(variables, z, train=True, mutable=["batch_stats"])
            state = state.replace(batch_stats={**state.batch_stats, "distill": updates["batch_stats"]})
            predicted.append(prediction[: cur.projection.shape[0]])
        distill_state = state.loss_state["distill"]
        if self.distill_form == "split_views":
            distill, distill_state = method.distill_split_views(*predicted, *old_keys, distill_state)
        else:
            distill = 0.0
            for prediction, old_key in zip(predicted, old_keys):
                term, distill_state = method.distill(prediction, old_key, distill_state)
                distill = distill + term
        return distill, state.replace(loss_state={**state.loss_state, "distill": distill_state})
