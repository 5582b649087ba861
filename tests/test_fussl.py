"""FUSSL's pure pieces against independent NumPy computations: fuzzy pseudo-labels, member errors, the
soft-target cross-entropy, the cross-class split, the schedules and the projector override.
Nothing here compiles a network step."""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcssl.fussl import cross_class, ensemble
from jaxcssl.fussl import pseudo_labels as pl
from jaxcssl.fussl.schedules import Constant, Continued, StepDecay
from jaxcssl.methods import REGISTRY, build_method, ssl_views
from jaxcssl.models import ResNet
from jaxcssl.models.heads import HeadSpec, scaled


# --- a NumPy reference of the labelling rule, written on dense label distributions ----------------------
def reference_label(classes: list[int], scores: list[float], mode: str, membership: str) -> dict[int, float]:
    """The label of one sample as ``{class: membership}`` ({} = dropped), by counting votes."""
    m = len(classes)
    votes = collections.Counter(classes)
    top = max(votes.values())
    leaders = [c for c, v in votes.items() if v == top]
    positive = np.maximum(np.asarray(scores, np.float64), 0.0)
    mu = [1.0 / m] * m if membership == "equal" or positive.sum() == 0 else list(positive / positive.sum())
    soft = collections.defaultdict(float)
    for c, u in zip(classes, mu):
        soft[c] += u
    if mode == "soft":
        return dict(soft)
    if len(leaders) == 1:
        return {leaders[0]: 1.0}
    if mode == "fuzzy":
        return dict(soft)
    if mode == "hard":
        return {}
    best = max(leaders, key=lambda c: (soft[c], -classes.index(c)))  # hard_all: the tied class of largest mass
    return {best: 1.0}


def dense(labels: pl.PseudoLabels, num_classes: int) -> np.ndarray:
    classes, weights = np.asarray(labels.classes), np.asarray(labels.weights, np.float64)
    out = np.zeros((len(classes), num_classes))
    for n in range(len(classes)):
        np.add.at(out[n], classes[n], weights[n])
    return out


K = 7
# Hand-made votes per ensemble size: (classes, scores) of every sample. Scores include negative values
# and a sample whose scores are all negative (the score membership falls back to equal).
VOTES = {
    1: [([3], [0.5]), ([0], [-0.2])],
    2: [([1, 1], [0.9, 0.4]), ([1, 2], [0.9, 0.3]), ([4, 5], [-0.1, 0.6])],
    3: [([2, 2, 5], [0.5, 0.7, 0.9]), ([0, 1, 2], [0.6, 0.3, 0.1]), ([6, 6, 6], [0.2, 0.2, 0.2]),
        ([0, 3, 4], [-0.5, -0.1, -0.3]), ([1, 4, 1], [0.8, 0.2, -0.4])],
    4: [([0, 0, 1, 1], [0.1, 0.2, 0.9, 0.5]), ([0, 0, 1, 2], [0.3, 0.3, 0.3, 0.3]),
        ([0, 1, 2, 3], [0.4, 0.3, 0.2, 0.1]), ([5, 6, 5, 6], [0.25, 0.25, 0.25, 0.25])],
    5: [([0, 0, 1, 1, 2], [0.2, 0.3, 0.4, 0.15, 0.9]), ([3, 3, 3, 1, 1], [0.1, 0.1, 0.1, 0.9, 0.9])],
}


@pytest.mark.parametrize("m", sorted(VOTES))
@pytest.mark.parametrize("mode", pl.MODES)
@pytest.mark.parametrize("membership", pl.MEMBERSHIPS)
def test_fuzzy_labels_match_a_vote_counting_reference(m, mode, membership):
    rows = VOTES[m]
    votes = pl.Votes(jnp.asarray([r[0] for r in rows], jnp.int32), jnp.asarray([r[1] for r in rows], jnp.float32))
    labels = pl.fuzzy_labels(votes, mode, membership)
    got = dense(labels, K)
    for n, (classes, scores) in enumerate(rows):
        want = np.zeros(K)
        for c, u in reference_label(classes, scores, mode, membership).items():
            want[c] = u
        np.testing.assert_allclose(got[n], want, atol=1e-6, err_msg=f"sample {classes} {scores}")
    # Every member of a label is one of the members' votes, and the classes are the votes.
    np.testing.assert_array_equal(labels.classes, votes.classes)
    kept = np.asarray(pl.kept(labels))
    np.testing.assert_allclose(np.asarray(labels.weights).sum(-1), kept.astype(float), atol=1e-6)
    np.testing.assert_array_equal(pl.single_class(labels), kept & (got.max(-1) > 1 - 1e-6))


def test_the_paper_cases_hard_soft_ties_and_a_single_member():
    votes = pl.Votes(jnp.asarray([[2, 2, 5], [0, 1, 2]]), jnp.asarray([[0.5, 0.7, 0.9], [0.6, 0.3, 0.1]]))
    fuzzy = dense(pl.fuzzy_labels(votes, "fuzzy", "score"), K)
    np.testing.assert_allclose(fuzzy[0], np.eye(K)[2])  # class 2 wins two of three members: hard
    np.testing.assert_allclose(fuzzy[1][:3], [0.6, 0.3, 0.1], atol=1e-6)  # three different winners: soft
    equal = dense(pl.fuzzy_labels(votes, "fuzzy", "equal"), K)
    np.testing.assert_allclose(equal[1][:3], [1 / 3] * 3, atol=1e-6)
    tie = pl.Votes(jnp.asarray([[0, 0, 1, 1]]), jnp.asarray([[0.1, 0.2, 0.9, 0.5]]))
    np.testing.assert_allclose(dense(pl.fuzzy_labels(tie, "fuzzy", "score"), K)[0][:2], [0.3 / 1.7, 1.4 / 1.7],
                               atol=1e-6)  # two classes with two votes each: no winner, soft
    np.testing.assert_allclose(dense(pl.fuzzy_labels(tie, "hard_all", "score"), K)[0], np.eye(K)[1])
    assert float(pl.fuzzy_labels(tie, "hard", "score").weights.sum()) == 0  # dropped
    single = pl.Votes(jnp.asarray([[4], [1]]), jnp.asarray([[0.2], [-0.3]]))
    for mode in pl.MODES:  # m = 1: every label is hard
        np.testing.assert_allclose(dense(pl.fuzzy_labels(single, mode, "score"), K), np.eye(K)[[4, 1]])


def test_votes_are_the_argmax_and_top_value_of_the_normalised_outputs():
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((3, 6, K)) * rng.uniform(0.1, 10, (3, 6, 1))
    votes = pl.member_votes(jnp.asarray(outputs, jnp.float32))
    normalised = outputs / np.linalg.norm(outputs, axis=-1, keepdims=True)
    np.testing.assert_array_equal(votes.classes, normalised.argmax(-1).T)
    np.testing.assert_allclose(votes.scores, normalised.max(-1).T, rtol=1e-5)


def test_member_errors_cross_entropy_and_distinct_classes_against_dense_labels():
    rows = VOTES[3]
    votes = pl.Votes(jnp.asarray([r[0] for r in rows]), jnp.asarray([r[1] for r in rows], jnp.float32))
    for mode in pl.MODES:
        labels = pl.fuzzy_labels(votes, mode, "score")
        target = dense(labels, K)
        kept = target.sum(-1) > 0
        errors = np.asarray(pl.member_errors(labels))
        for i in range(3):
            want = np.where(kept, 1.0 - target[np.arange(len(rows)), np.asarray(votes.classes)[:, i]], 0.0)
            np.testing.assert_allclose(errors[i], want, atol=1e-6)
        logits = np.random.default_rng(1).standard_normal((len(rows), K))
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        np.testing.assert_allclose(pl.soft_cross_entropy(jnp.asarray(logits, jnp.float32), labels),
                                   -(target * log_p).sum(-1), rtol=1e-5, atol=1e-6)
        assert int(pl.distinct_classes(labels, K)) == int((target.sum(0) > 0).sum())
        np.testing.assert_array_equal(np.asarray(pl.top_class(labels))[kept], target.argmax(-1)[kept])


def test_bad_modes_are_refused():
    votes = pl.Votes(jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="pseudo-label mode 'fuzz'"):
        pl.fuzzy_labels(votes, "fuzz")
    with pytest.raises(ValueError, match="membership 'max'"):
        pl.fuzzy_labels(votes, "fuzzy", "max")


# --- the ensemble's stacking and views -------------------------------------------------------------------
def test_stacked_members_are_identical_copies_and_views_are_distinct_pairs():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    stacked = ensemble.stack(tree, 3)
    assert stacked["w"].shape == (3, 2, 3)
    for i in range(3):
        np.testing.assert_array_equal(ensemble.member(stacked, i)["w"], tree["w"])
    views = ssl_views("simclr", 16)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)), jnp.uint8)
    x1, x2 = ensemble.member_views(jax.random.PRNGKey(0), images, views, 3)
    assert x1.shape == x2.shape == (3, 4, 16, 16, 3)
    flat = np.concatenate([np.asarray(x1), np.asarray(x2)]).reshape(6, -1)
    assert len({row.tobytes() for row in flat}) == 6  # 2m distinct views of the batch


# --- schedules --------------------------------------------------------------------------------------------
def test_the_paper_schedule_drops_after_ten_epochs_and_continues_across_phases():
    schedule = StepDecay.create(drop_steps=10, initial_lr=0.2, final_lr=0.001)
    lrs = [float(schedule(jnp.int32(s))["learning_rate"]) for s in (0, 9, 10, 500)]
    np.testing.assert_allclose(lrs, [0.2, 0.2, 0.001, 0.001], rtol=1e-6)
    continued = Continued.create(schedule, offset=8)
    np.testing.assert_allclose([float(continued(jnp.int32(s))["learning_rate"]) for s in (0, 1, 2)],
                               [0.2, 0.2, 0.001], rtol=1e-6)
    assert float(Constant.create(1e-3)(jnp.int32(7))["learning_rate"]) == pytest.approx(1e-3)


# --- cross-class split ------------------------------------------------------------------------------------
def test_cross_class_split_halves_every_cifar100_superclass():
    rng = np.random.default_rng(0)
    superclass = rng.permutation(np.repeat(np.arange(20), 5))  # 20 superclasses of 5, ids scattered
    pretrain, held_out = cross_class.split_classes(superclass)
    assert len(pretrain) == len(held_out) == 50
    assert not set(pretrain) & set(held_out) and sorted([*pretrain, *held_out]) == list(range(100))
    for s in range(20):
        classes = np.flatnonzero(superclass == s)
        taken = np.isin(classes, pretrain)
        assert taken.sum() == (3 if s % 2 == 0 else 2)  # every superclass on both sides
        assert np.array_equal(classes[taken], classes[:taken.sum()])  # the lowest class ids pre-train
    shuffled, _ = cross_class.split_classes(superclass, seed=3)
    assert len(shuffled) == 50 and not np.array_equal(shuffled, pretrain)
    assert all(np.isin(np.flatnonzero(superclass == s), shuffled).sum() in (2, 3) for s in range(20))


def test_superclasses_come_from_the_coarse_labels_or_blocks_of_class_ids():
    fine = np.array([0, 1, 2, 3, 0, 2])
    coarse = np.array([1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(cross_class.superclasses_from_labels(fine, coarse, 4), [1, 0, 1, 0])
    with pytest.raises(ValueError, match="class 2 has samples in 2 superclasses"):
        cross_class.superclasses_from_labels(fine, np.array([1, 0, 1, 0, 1, 0]), 4)
    with pytest.raises(ValueError, match="class 4 has samples in 0 superclasses"):
        cross_class.superclasses_from_labels(fine, coarse, 5)
    np.testing.assert_array_equal(cross_class.superclasses_by_block(6, 3), [0, 0, 0, 1, 1, 1])


# --- the projector override and the latents ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["byol", "simsiam", "swav", "mocov2"])
def test_a_1000_wide_normalised_projector_replaces_every_reference_head(name):
    spec = HeadSpec((1000, 1000), 1000, use_bn=True, l2_normalize=True)
    options = {"queue_size": 32} if name == "mocov2" else {}
    method = build_method(name, dataset="synthetic", backbone=ResNet(stage_sizes=(1,), width=8), head_scale=1 / 64,
                          projector=spec, **options)
    variables = method.init_variables(jax.random.PRNGKey(0), (16, 16, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    embedding, _ = method.embed(variables["params"], variables["batch_stats"], x)
    assert embedding.projection.shape == (4, 16)  # 1000 x 1/64
    np.testing.assert_allclose(np.linalg.norm(embedding.projection, axis=-1), 1.0, rtol=1e-5)
    if REGISTRY.get(name).predictor is not None:  # the predictor maps back to the projection's width
        assert embedding.prediction.shape == (4, 16)
    key = method.key_embedding(embedding, embedding)
    loss, _ = method.ssl_loss(embedding, embedding, key, key, method.init_loss_state())
    assert np.isfinite(float(loss))
    default = build_method(name, dataset="synthetic", backbone=ResNet(stage_sizes=(1,), width=8), head_scale=1 / 64,
                           **options)
    assert default.model.projector.out_dim == scaled(REGISTRY.get(name).projector.out_dim, 1 / 64)
    assert not default.model.projector.l2_normalize
