"""Fuzzy pseudo-labels from the votes of an ensemble (FUSSL Sec. 3.2 and 4.1.3).

Each of the ``m`` frozen members embeds an original (un-augmented) image; the argmax of its
L2-normalised projector output is the pseudo-class it votes for, the top normalised value its score.
A class that wins more members than any other class is the sample's *hard* label; otherwise the
sample gets a *soft* label over the ``m`` members' winning classes, with membership scores (the paper
does not define them): ``"equal"`` gives each member ``1/m``, ``"score"`` each member's score,
renormalised over the members (negative scores count 0; all-zero scores fall back to ``equal``).

A label is stored compactly beside the votes: ``classes [N, m]`` are the members' winning classes
and ``weights [N, m]`` a distribution over the members, a class's membership being the summed
weight of the members that chose it. A hard label of class ``c`` puts weight ``1/votes(c)`` on each
member that chose ``c``; a soft label puts its memberships on the members; a dropped sample has zero
weight. Modes (``fussl.labels``; Sec. 5, Table 3 Cases 1-2, Table 4 Cases 4-5):

* ``"fuzzy"``: hard where a class wins, soft otherwise (the method);
* ``"hard"``: hard where a class wins, the soft-labelled samples dropped;
* ``"hard_all"``: every sample hard: ties go to the tied class with the largest membership;
* ``"soft"``: every sample soft over its members' winners (all members agreeing is still one class).

With ``m = 1`` every label is hard, as the paper notes. All functions are pure and jit.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MODES = ("fuzzy", "hard", "hard_all", "soft")
MEMBERSHIPS = ("score", "equal")


class Votes(NamedTuple):
    classes: jax.Array  # int32 [B, m]: each member's pseudo-class (argmax of its normalised output)
    scores: jax.Array  # float32 [B, m]: each member's top normalised value


class PseudoLabels(NamedTuple):
    classes: jax.Array  # int32 [N, m]: the members' pseudo-classes
    weights: jax.Array  # float32 [N, m]: label weight per member; sums to 1 (0: dropped sample)


def member_votes(outputs: jax.Array) -> Votes:
    """``[m, B, D]`` member outputs -> votes ``[B, m]``: argmax and maximum of each L2-normalised output."""
    outputs = outputs.astype(jnp.float32)
    normalised = outputs / jnp.linalg.norm(outputs, axis=-1, keepdims=True).clip(1e-12)
    return Votes(classes=jnp.argmax(normalised, -1).T.astype(jnp.int32), scores=jnp.max(normalised, -1).T)


def memberships(scores: jax.Array, kind: str = "score") -> jax.Array:
    """``[B, m]`` membership of each member's class in a soft label: ``1/m`` or the renormalised scores."""
    if kind not in MEMBERSHIPS:
        raise ValueError(f"membership {kind!r} is not one of {', '.join(MEMBERSHIPS)}")
    equal = jnp.full(scores.shape, 1.0 / scores.shape[-1], jnp.float32)
    if kind == "equal":
        return equal
    positive = jnp.maximum(scores.astype(jnp.float32), 0.0)
    total = positive.sum(-1, keepdims=True)
    return jnp.where(total > 0, positive / jnp.where(total > 0, total, 1.0), equal)


def _same(classes: jax.Array) -> jax.Array:
    """``[B, m, m]``: members i and j chose the same class."""
    return classes[:, :, None] == classes[:, None, :]


def fuzzy_labels(votes: Votes, mode: str = "fuzzy", membership: str = "score") -> PseudoLabels:
    """The pseudo-label of every sample from its members' votes (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"pseudo-label mode {mode!r} is not one of {', '.join(MODES)}")
    classes = votes.classes.astype(jnp.int32)
    same = _same(classes)
    count = same.sum(-1)  # [B, m]: votes for the class of member i
    top = count.max(-1)
    has_winner = (count == top[:, None]).sum(-1) == top  # exactly one class holds the most votes
    mu = memberships(votes.scores, membership)
    if mode == "soft":
        return PseudoLabels(classes, mu)
    # The winning member: the first with the most votes; for hard_all, ties go to the larger membership
    # (mass < 1 <= any difference of counts, so the count decides first).
    mass = (same * mu[:, None, :]).sum(-1)
    key = count + 0.5 * mass if mode == "hard_all" else count
    winner = jnp.argmax(key, -1)
    chose = jnp.take_along_axis(same, winner[:, None, None], axis=1)[:, 0, :]  # [B, m]: chose the winner's class
    hard = chose / chose.sum(-1, keepdims=True)
    if mode == "hard_all":
        return PseudoLabels(classes, hard)
    fallback = mu if mode == "fuzzy" else jnp.zeros_like(mu)
    return PseudoLabels(classes, jnp.where(has_winner[:, None], hard, fallback))


def class_mass(labels: PseudoLabels) -> jax.Array:
    """``[N, m]``: the label's membership of member i's class (the summed weight of the members that chose it)."""
    return (_same(labels.classes) * labels.weights[:, None, :]).sum(-1)


def kept(labels: PseudoLabels) -> jax.Array:
    """``[N]`` bool: the sample has a label (not dropped)."""
    return labels.weights.sum(-1) > 0


def single_class(labels: PseudoLabels) -> jax.Array:
    """``[N]`` bool: one class carries the whole weight of a kept label (a hard label)."""
    return kept(labels) & (class_mass(labels).max(-1) >= 1.0 - 1e-6)


def top_class(labels: PseudoLabels) -> jax.Array:
    """``[N]`` int32: the class of largest membership (the first member's on ties)."""
    return jnp.take_along_axis(labels.classes, jnp.argmax(class_mass(labels), -1)[:, None], axis=1)[:, 0]


def member_errors(labels: PseudoLabels) -> jax.Array:
    """``[m, N]``: ``1 −`` the label's membership of member i's own pseudo-class (0 for dropped samples).

    A member predicts the class it voted for; against a hard label its error is 0 or 1, against a
    soft one ``1 −`` its class's membership. Averaged over the kept samples this is the "overall error
    over initial testing on the pseudo-labeled data" by which phase 2 chooses its member (Sec. 3.3).
    """
    return ((1.0 - class_mass(labels)) * kept(labels)[:, None]).T


def soft_cross_entropy(logits: jax.Array, labels: PseudoLabels) -> jax.Array:
    """``[N]``: ``−Σ_j w_j log softmax(logits)[c_j]``, the cross-entropy against the soft target (0 if dropped)."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -(jnp.take_along_axis(log_p, labels.classes, axis=-1) * labels.weights).sum(-1)


def distinct_classes(labels: PseudoLabels, num_classes: int) -> jax.Array:
    """Number of pseudo-classes that carry weight in some label."""
    carries = (labels.weights.ravel() > 0).astype(jnp.int32)
    return jnp.zeros(num_classes, jnp.int32).at[labels.classes.ravel()].max(carries).sum()
