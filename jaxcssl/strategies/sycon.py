r"""Sy-CON / PNR (Cha, Cho & Moon): plasticity and stability terms with symmetric pseudo-negatives.

arXiv 2306.05101 v1 ("Sy-CON: Symmetric Contrastive Loss for Continual Self-Supervised
Representation Learning") became v2 / ICML 2024 ("Regularizing with Pseudo-Negatives for Continual
Self-Supervised Learning", PNR), which keeps the contrastive loss of v1 and adds an extension to
non-contrastive objectives. This module follows **v2 as released by the authors**
(github.com/csm9493/PNR, commit e4b3a7a: ``cassle/losses/pnr.py``, ``cassle/distillers/*_pnr.py``,
``main_continual.py``). The paper's body could not be read here (only its abstract), so the
equations below carry our labels (P), (S), (N), each tied to the function of the release it
reimplements, not the paper's equation numbers.

Notation: ``z_i`` the current model's projection of view ``i`` (``2N`` views of ``N`` images),
``i'`` the other view of the same image, ``z̄_i`` the frozen past model's projection of the same view,
``g`` the CaSSLe predictor (``distill_predictor``), ``s(a, b)`` the cosine similarity, ``τ`` the
temperature. After the first task:

InfoNCE objectives. The plain SSL loss is *replaced* (``--pnr_loss`` in ``main_continual.py``) by

* SimCLR (``simclr_moco_loss_func``), over all ``2N`` anchors, in-batch negatives of both models:

  (P) ``L_P = mean_i −log e^{s(z_i, z_i')/τ} / (Σ_{j≠i} e^{s(z_i, z_j)/τ} + Σ_{j≠i} e^{s(z_i, z̄_j)/τ})``

  (S) ``L_S = mean_i −log e^{s(g(z_i), z̄_i)/τ} / (Σ_j e^{s(g(z_i), z̄_j)/τ} + Σ_{j≠i} e^{s(g(z_i), z_j)/τ})``

* MoCo v2+ (``moco_pnr_loss_func`` in ``mocov2plus_pnr.py``), negatives from the key queues ``Qᵛ``
  and a second pair of queues ``Q̄ᵛ`` of past-model embeddings, one of each per view, filled at
  earlier steps (``q_v`` query, ``k_v`` EMA key of view ``v``, ``v'`` the other view). As in the
  release, both terms of the direction whose query is view ``v`` take the queues of view ``v'``:

  (P) ``L_P = ½ Σ_v InfoNCE(q_v → k_v'; Q^v' ∪ Q̄^v')``,  (S) ``L_S = ½ Σ_v InfoNCE(g(q_v) → z̄_v; Q^v' ∪ Q̄^v')``

  and ``L = L_P + w_S L_S`` with ``w_S = stability_weight`` (1: the paper's sum without a trade-off
  weight). ``Q̄`` lives in the ``"distill"`` slot of the MoCo loss state (``[2, K, D]`` like ``Q``);
  after the loss each view's keys enter ``Qᵛ`` and its past-model embeddings ``Q̄ᵛ``, as in the release.

Non-contrastive objectives (PNR extension, ``barlow_pnr.py``, ``byol_pnr.py``, ``vicreg_pnr.py``):
the pseudo-negative of ``g(z_v)`` is the past model's output for the *other* view,

  (N) ``L = L_SSL(z¹, z²) + w_S · ½ Σ_v L_distill(g(z_v), z̄_v) − λ · ½ Σ_v D(g(z_v), z̄_v')``

with ``L_distill`` the method's CaSSLe distiller (:meth:`SSLMethod.distill`) and ``D`` the release's
negative term: Barlow Twins ``−cos`` (SimSiam's loss), BYOL ``2 − 2 cos``, VICReg the mean squared
error; ``λ = negative_weight`` defaults to the release's CIFAR-100 values 1.0, 0.5 and 23.0.

Other objectives (CorInfoMax, SimSiam, SwAV, W-MSE) have no Sy-CON/PNR form and are refused at
construction. Deliberate differences from the release: (S) for SimCLR keeps its positive in the
denominator (the release reuses the (P) mask, which drops it; its MoCo loss keeps it); the past
model's BatchNorm follows ``old_model_bn`` (the release uses running statistics); ``g`` takes the
unnormalised projection for every method.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcssl.errors import ConfigError
from jaxcssl.losses import (
    byol,
    info_nce,
    mocov2_enqueue,
    simsiam,
    vicreg_invariance_per_sample,
)
from jaxcssl.strategies.base import (
    Distilling,
    concat,
    make_distill_predictor,
    old_embed,
    online,
    ssl_term,
    target_keys,
)

CONTRASTIVE = ("simclr", "mocov2")


def _mean_squared_error(p: jax.Array, z: jax.Array) -> jax.Array:
    return jnp.mean(vicreg_invariance_per_sample(p, jax.lax.stop_gradient(z)))


# D and the default λ of (N), from the release's distillers and CIFAR-100 scripts.
PSEUDO_NEGATIVE: dict[str, tuple[Callable[[jax.Array, jax.Array], jax.Array], float]] = {
    "barlow_twins": (simsiam, 1.0),
    "byol": (byol, 0.5),
    "vicreg": (_mean_squared_error, 23.0),
}
SUPPORTED = CONTRASTIVE + tuple(PSEUDO_NEGATIVE)


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def masked_info_nce(
    queries: jax.Array, candidates: jax.Array, positive: jax.Array, excluded: jax.Array, temperature: float
) -> jax.Array:
    """Mean over queries of ``−log softmax_j(s(q_i, c_j)/τ)[positive_i]`` over candidates not excluded.

    ``queries`` ``[N, D]``, ``candidates`` ``[M, D]``, ``positive`` ``[N]`` indices into the
    candidates, ``excluded`` ``[N, M]`` boolean. InfoNCE with per-anchor exclusions (SimCLR's ``2N``
    views), which :func:`jaxcssl.losses.info_nce` with shared negatives cannot express.
    """
    logits = jnp.matmul(
        _normalize(queries), _normalize(candidates).T, precision=jax.lax.Precision.HIGHEST
    ) / temperature
    logits = jnp.where(excluded, -jnp.inf, logits)
    positive_logit = jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive_logit)


def in_batch_terms(
    z1: jax.Array, z2: jax.Array, old1: jax.Array, old2: jax.Array,
    predicted1: jax.Array, predicted2: jax.Array, temperature: float,
) -> tuple[jax.Array, jax.Array]:
    """(P) and (S) of the SimCLR form on two views' current, past-model and predicted embeddings."""
    n2 = 2 * z1.shape[0]
    current, old, predicted = concat(z1, z2), concat(old1, old2), concat(predicted1, predicted2)
    rows = jnp.arange(n2)
    self_mask = jnp.eye(n2, dtype=bool)
    # (P): candidates [z; z̄]; drop z_i itself and z̄_i (the positive of the stability term).
    plasticity = masked_info_nce(
        current, concat(current, old), (rows + n2 // 2) % n2, jnp.concatenate([self_mask, self_mask], axis=1),
        temperature,
    )
    # (S): candidates [z̄; z]; drop z_i, whose prediction g(z_i) is the anchor.
    stability = masked_info_nce(
        predicted, concat(old, current), rows, jnp.concatenate([jnp.zeros_like(self_mask), self_mask], axis=1),
        temperature,
    )
    return plasticity, stability


@dataclasses.dataclass(frozen=True)
class SyCON(Distilling):
    """Sy-CON / PNR for ``ssl_method`` (one of :data:`SUPPORTED`); see the module docstring.

    Attributes:
      ssl_method: the SSL objective's registry name (``config.ssl.method``), checked here.
      temperature: ``τ`` of (P) and (S).
      stability_weight: ``w_S`` (1 = the paper's unweighted sum).
      negative_weight: ``λ`` of (N) for non-contrastive objectives; ``None`` = the release's default.
    """

    name = "sycon"
    label = "Sy-CON"
    CONFIG = dict(
        temperature=0.2,        # τ of the InfoNCE plasticity and stability terms (the release's 0.2)
        stability_weight=1.0,   # w_S of the stability term (1: the paper's unweighted sum)
        negative_weight=None,   # λ of the pseudo-negative term, non-contrastive objectives (None: the release's)
    )

    ssl_method: str = dataclasses.field(kw_only=True)
    temperature: float = 0.2
    stability_weight: float = 1.0
    negative_weight: float | None = None

    def __post_init__(self):
        if self.ssl_method not in SUPPORTED:
            raise ValueError(
                f"strategy 'sycon' has no form for ssl.method={self.ssl_method!r}; supported: {', '.join(SUPPORTED)}"
            )
        if self.temperature <= 0:
            raise ValueError(f"strategy 'sycon': temperature={self.temperature} must be > 0")
        if self.negative_weight is not None and self.ssl_method in CONTRASTIVE:
            raise ValueError(
                f"strategy 'sycon': negative_weight applies to non-contrastive objectives, not {self.ssl_method!r}"
            )

    @classmethod
    def check(cls, config):
        if config.ssl.method not in SUPPORTED:
            raise ConfigError(f"ssl.method (with strategy 'sycon')={config.ssl.method!r} is not one of: "
                              f"{', '.join(SUPPORTED)}")
        s = config.strategy.sycon
        if not s.temperature > 0:
            raise ConfigError(f"strategy.sycon.temperature={s.temperature!r} must be > 0")
        if s.negative_weight is not None and config.ssl.method in CONTRASTIVE:
            raise ConfigError(f"strategy.sycon.negative_weight applies to non-contrastive objectives, "
                              f"not {config.ssl.method!r}")

    @classmethod
    def from_config(cls, config, method):
        s = config.strategy.sycon
        return cls(
            old_model_bn=config.strategy.old_model_bn, distill_predictor=make_distill_predictor(config, method),
            ssl_method=config.ssl.method, temperature=s.temperature, stability_weight=s.stability_weight,
            negative_weight=s.negative_weight,
        )

    def loss(self, method, params, state, batch, ctx):
        if method.name != self.ssl_method:
            raise ValueError(f"strategy 'sycon' was built for {self.ssl_method!r} but got SSL method {method.name!r}")
        views = (batch.view1, batch.view2)
        current, old, predicted = [], [], []
        for x in views:
            embedding, state = online(method, params, state, x)
            prediction, state = self._predict(params, state, embedding.projection)
            current.append(embedding)
            predicted.append(prediction)
            old.append(old_embed(method, ctx.old, x, self.old_model_bn).projection)

        if self.ssl_method == "simclr":
            plasticity, stability = in_batch_terms(
                current[0].projection, current[1].projection, *old, *predicted, self.temperature
            )
        elif self.ssl_method == "mocov2":
            plasticity, stability, state = self._queue_terms(method, state, views, current, old, predicted)
        else:
            return self._pseudo_negative(method, state, views, current, old, predicted)
        total = plasticity + self.stability_weight * stability
        return total, ({"plasticity": plasticity, "stability": stability}, state)

    def _predict(self, params, state, z):
        """``g(z)`` in train mode; its BatchNorm statistics are threaded through ``state``."""
        variables = {"params": params["distill"], "batch_stats": state.batch_stats["distill"]}
        prediction, updates = self.distill_predictor.apply(variables, z, train=True, mutable=["batch_stats"])
        return prediction, state.replace(batch_stats={**state.batch_stats, "distill": updates["batch_stats"]})

    def _queue_terms(self, method, state, views, current, old, predicted):
        """(P) and (S) of the MoCo form, then the key and past-model queues are updated."""
        keys = []
        for x, embedding in zip(views, current):
            target, state = target_keys(method, state, x)
            keys.append(method.key_embedding(embedding, target))
        key_queue, old_queue = state.loss_state["ssl"], state.loss_state["distill"]

        def nce(queries, positives, other_view):  # the queues of the view the query does not come from
            negatives = concat(key_queue["queue"][other_view], old_queue["queue"][other_view])
            return info_nce(queries, positives, self.temperature, extra_negatives=negatives, key_negatives=False)

        plasticity = 0.5 * (nce(current[0].projection, keys[1], 1) + nce(current[1].projection, keys[0], 0))
        stability = 0.5 * (nce(predicted[0], old[0], 1) + nce(predicted[1], old[1], 0))
        updated = {}
        for slot, queue, entries in (("ssl", key_queue, keys), ("distill", old_queue, old)):
            buffer, ptr = mocov2_enqueue(queue["queue"], queue["ptr"], jnp.stack(entries))
            updated[slot] = {"queue": buffer, "ptr": ptr}
        return plasticity, stability, state.replace(loss_state={**state.loss_state, **updated})

    def _pseudo_negative(self, method, state, views, current, old, predicted):
        """(N): the SSL loss, the CaSSLe distillation and the other view's past output as a negative."""
        ssl, _, state = ssl_term(method, state, current[0], current[1], *views)
        distill_state, distill = state.loss_state["distill"], 0.0
        for prediction, old_projection in zip(predicted, old):
            term, distill_state = method.distill(prediction, old_projection, distill_state)
            distill = distill + 0.5 * term
        state = state.replace(loss_state={**state.loss_state, "distill": distill_state})
        dissimilarity, default_weight = PSEUDO_NEGATIVE[self.ssl_method]
        weight = default_weight if self.negative_weight is None else self.negative_weight
        negative = 0.5 * (dissimilarity(predicted[0], old[1]) + dissimilarity(predicted[1], old[0]))
        total = ssl + self.stability_weight * distill - weight * negative
        return total, ({"ssl": ssl, "stability": distill, "pseudo_negative": negative}, state)
