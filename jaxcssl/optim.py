"""Optimisers (CroMo-Mixup appendix D.1, Table 5) and parameter groups selected by path.

The reference trains Barlow Twins, SimCLR and BYOL with the solo-learn LARS (eta 0.02,
``clip_lr=True``, bias and normalisation parameters excluded from weight decay and from the trust
ratio) and CorInfoMax with SGD; the learning rate is ``base_lr * batch / 256``. Schedules live in
:mod:`jaxcssl.engine.schedules` and reach the optimiser as injected hyper-parameters
(:func:`make`: ``learning_rate`` and ``momentum`` in ``opt_state.hyperparams``).

Parameter groups follow big_vision's ``optax.make``: rules map a regular expression on the
``/``-joined parameter path (``model/backbone/stage1_block0/conv1/kernel``, ``distill/dense1/bias``)
to a learning-rate multiplier, a weight-decay multiplier, or freezing (the update is set to zero);
the first matching rule of each kind wins. LARS trust ratios stay per leaf.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def exclude_bias_and_norm(params: Any) -> Any:
    """Mask that is True for weights (ndim > 1) and False for biases and norm scales/offsets."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


class LarsState(NamedTuple):
    count: jax.Array


def _current(learning_rate: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def scale_by_lars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float,
    eta: float = 0.02,
    clip_lr: bool = True,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """LARS trust ratio with weight decay, as solo-learn's LARS used by the reference.

    For a weight ``p`` with gradient ``g``: ``r = eta·‖p‖ / (‖g‖ + wd·‖p‖ + eps)``, with
    ``clip_lr`` ``r ← min(r / lr_t, 1)`` (LARC clipping), and the update direction is
    ``(g + wd·p)·r``. Where ``‖p‖`` or ``‖g‖`` is zero the gradient passes unchanged, as in the
    reference. Apply it under a mask so that biases and norm parameters bypass it.
    """

    def init_fn(params):
        del params
        return LarsState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params):
        lr = _current(learning_rate, state.count)

        def one(g, p):
            p_norm = jnp.linalg.norm(p)
            g_norm = jnp.linalg.norm(g)
            ratio = eta * p_norm / (g_norm + weight_decay * p_norm + eps)
            if clip_lr:
                ratio = jnp.minimum(ratio / lr, 1.0)
            scaled = (g + weight_decay * p) * ratio
            return jnp.where((p_norm > 0) & (g_norm > 0), scaled, g)

        updates = jax.tree_util.tree_map(one, updates, params)
        return updates, LarsState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    clip_lr: bool = True,
    exclude_bias_and_norm_params: bool = True,
) -> optax.GradientTransformation:
    """The reference LARS: trust ratio on weights, heavy-ball momentum, then the learning rate.

    Matches ``torch`` SGD momentum semantics: ``buf = m·buf + d``; ``p ← p − lr_t·buf``.
    """
    trust = scale_by_lars(learning_rate, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr)
    if exclude_bias_and_norm_params:
        trust = optax.masked(trust, exclude_bias_and_norm)
    return optax.chain(trust, optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate))


def sgd(
    learning_rate: optax.ScalarOrSchedule, *, weight_decay: float, momentum: float = 0.9
) -> optax.GradientTransformation:
    """SGD with coupled weight decay (``g + wd·p``) and momentum, as ``torch.optim.SGD``."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum),
        optax.scale_by_learning_rate(learning_rate),
    )


def peak_learning_rate(
    base_lr: float, batch_size: int, task_id: int, *, base_batch: int = 256, later_task_factor: float = 1.0
) -> float:
    """``base_lr · batch / base_batch``, times ``later_task_factor`` after the first task.

    The reference scales by batch/256 and optionally divides the rate by 10 for later tasks
    (``same_lr=False``); ``later_task_factor=0.1`` reproduces that.
    """
    lr = base_lr * batch_size / base_batch
    return lr * later_task_factor if task_id > 0 else lr


OPTIMIZERS = ("lars", "sgd", "adam")


def adam(
    learning_rate: optax.ScalarOrSchedule, *, weight_decay: float, momentum: float = 0.9, b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """``torch.optim.Adam`` with coupled (L2) weight decay ``g + wd·p``; ``momentum`` is β₁."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=momentum, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def make_optimizer(
    name: str,
    schedule: optax.ScalarOrSchedule,
    *,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    clip_lr: bool = True,
) -> optax.GradientTransformation:
    """``name`` is "lars" (Barlow Twins, SimCLR, BYOL), "sgd" (CorInfoMax) or "adam" (FUSSL)."""
    if name == "lars":
        return lars(schedule, weight_decay=weight_decay, momentum=momentum, eta=eta, clip_lr=clip_lr)
    if name == "sgd":
        return sgd(schedule, weight_decay=weight_decay, momentum=momentum)
    if name == "adam":
        return adam(schedule, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


# --- parameter groups ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParamRules:
    """Per-path optimiser rules; patterns are regular expressions matched against the whole path.

    ``lr_mults``: ``(pattern, m)``, the leaf's learning rate is ``m × lr``; ``wd_mults``: ``(pattern, m)``,
    its weight decay ``m × wd``; ``frozen``: patterns whose leaves are not updated at all.
    """

    lr_mults: tuple[tuple[str, float], ...] = ()
    wd_mults: tuple[tuple[str, float], ...] = ()
    frozen: tuple[str, ...] = ()

    def __add__(self, other: "ParamRules") -> "ParamRules":
        """``self``'s rules first (they win), then ``other``'s."""
        return ParamRules(self.lr_mults + other.lr_mults, self.wd_mults + other.wd_mults, self.frozen + other.frozen)

    def check(self) -> None:
        for kind, rules in (("lr_mults", self.lr_mults), ("wd_mults", self.wd_mults)):
            for rule in rules:
                if len(rule) != 2 or not isinstance(rule[0], str) or not float(rule[1]) >= 0:
                    raise ValueError(f"optim.{kind}: {rule!r} must be a (pattern, multiplier >= 0) pair")
                re.compile(rule[0])
        for pattern in self.frozen:
            if not isinstance(pattern, str):
                raise ValueError(f"optim.frozen: {pattern!r} must be a pattern string")
            re.compile(pattern)


def param_path(path: tuple) -> str:
    """``model/backbone/conv_init/kernel`` from a ``jax.tree_util`` key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _first(rules: Sequence[tuple[str, float]], path: str, default: float) -> float:
    return next((float(m) for pattern, m in rules if re.fullmatch(pattern, path)), default)


def leaf_settings(params: Any, rules: ParamRules) -> Any:
    """Per leaf ``(lr_mult, wd_mult, frozen)``, the first matching rule of each kind."""
    def settings(path, _):
        p = param_path(path)
        return (_first(rules.lr_mults, p, 1.0), _first(rules.wd_mults, p, 1.0),
                any(re.fullmatch(pattern, p) for pattern in rules.frozen))

    return jax.tree_util.tree_map_with_path(settings, params)


def make(
    name: str,
    params: Any,
    rules: ParamRules = ParamRules(),
    *,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    clip_lr: bool = True,
) -> optax.GradientTransformation:
    """The optimiser ``name`` over ``params``, with ``learning_rate`` and ``momentum`` injected.

    Set them per step in ``opt_state.hyperparams`` (a schedule's output). Leaves sharing the same
    ``(lr_mult, wd_mult, frozen)`` form one group; without rules there is one group and the
    transformation is the plain optimiser.
    """
    rules.check()
    settings = leaf_settings(params, rules)
    groups = sorted(set(jax.tree_util.tree_leaves(settings, is_leaf=lambda x: isinstance(x, tuple))))

    def one_group(learning_rate, momentum, lr_mult: float, wd_mult: float, frozen: bool):
        if frozen:
            return optax.set_to_zero()
        return make_optimizer(name, learning_rate * lr_mult, weight_decay=weight_decay * wd_mult,
                              momentum=momentum, eta=eta, clip_lr=clip_lr)

    def factory(learning_rate, momentum):
        if groups == [(1.0, 1.0, False)]:
            return one_group(learning_rate, momentum, *groups[0])
        labels = jax.tree_util.tree_map(lambda s: f"group{groups.index(s)}", settings,
                                        is_leaf=lambda x: isinstance(x, tuple))
        transforms = {f"group{i}": one_group(learning_rate, momentum, *g) for i, g in enumerate(groups)}
        return optax.multi_transform(transforms, labels)

    return optax.inject_hyperparams(factory)(learning_rate=0.0, momentum=momentum)
