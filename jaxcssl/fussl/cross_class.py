"""The cross-class study (FUSSL Sec. 5, Table 4): pre-train on half of the classes of every superclass,
evaluate on the other half.

CIFAR-100 has 20 superclasses of 5 classes; the paper pre-trains on 50 classes "across all
superclasses" and evaluates on the other 50, without saying which. Here every superclass gives
half of its classes to pre-training, the lowest class ids first (or a random half with ``seed >=
0``); of the superclasses with an odd number of classes, every other one (in the order of their
ids) gives the extra class to pre-training, so CIFAR-100 pre-trains on 3 classes of the even
superclasses and 2 of the odd ones: 50 classes.
"""
from __future__ import annotations

import numpy as np


def superclasses_from_labels(fine: np.ndarray, coarse: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes]`` superclass of every class from per-sample fine and coarse labels of one dataset.

    Raises ``ValueError`` when a class has samples in two superclasses or none at all.
    """
    fine, coarse = np.asarray(fine), np.asarray(coarse)
    if fine.shape != coarse.shape:
        raise ValueError(f"fine labels {fine.shape} and coarse labels {coarse.shape} differ in shape")
    superclass = np.full(num_classes, -1, np.int64)
    for c in range(num_classes):
        found = np.unique(coarse[fine == c])
        if len(found) != 1:
            raise ValueError(f"class {c} has samples in {len(found)} superclasses {found.tolist()[:5]}; expected one")
        superclass[c] = found[0]
    return superclass


def superclasses_by_block(num_classes: int, classes_per_superclass: int) -> np.ndarray:
    """``[num_classes]``: classes ``c`` with equal ``c // classes_per_superclass`` form a superclass."""
    if classes_per_superclass < 1:
        raise ValueError(f"classes_per_superclass={classes_per_superclass} must be >= 1")
    return np.arange(num_classes) // classes_per_superclass


def split_classes(superclass: np.ndarray, seed: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(pre-training classes, evaluation classes)``, sorted, from each class's superclass (module docstring)."""
    superclass = np.asarray(superclass)
    rng = np.random.default_rng(seed) if seed >= 0 else None
    pretrain, held_out, odd_seen = [], [], 0
    for s in np.unique(superclass):
        members = np.flatnonzero(superclass == s)
        if rng is not None:
            members = rng.permutation(members)
        take = len(members) // 2
        if len(members) % 2:
            take += odd_seen % 2 == 0
            odd_seen += 1
        pretrain += members[:take].tolist()
        held_out += members[take:].tolist()
    return np.sort(np.asarray(pretrain, np.int32)), np.sort(np.asarray(held_out, np.int32))
