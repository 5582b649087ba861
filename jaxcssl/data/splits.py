"""Continual task splits: which training and test examples, and which classes, each task holds.

* Class-incremental (CIL, CroMo-Mixup Sec. 5): tasks hold disjoint class sets covering all classes,
  in natural, seeded-permuted or explicit class order; sizes may be uneven (``[20]*5``, ``[5, 5]``,
  ``[50, 10, 10, 10, 10, 10]``). Class ids need not be contiguous within a task.
* Data-incremental (DIL, CroMo-Mixup App. B): every task holds all classes and a disjoint,
  class-stratified share of the training set; the test set is shared by all tasks.
* ``step_task_schedule``: the task-confusion study (Sec. 3, App. B), where tasks change after
  every gradient step and are revisited.

Splits are index sets into the dataset's arrays and carry no images, so the device-resident data
and the host pipeline both gather by these indices. Streams for online SSL (a sequence of small
batches drawn once from such a split) are built on top of these index sets.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

KINDS = ("class_incremental", "data_incremental")
CLASS_ORDERS = ("natural", "permuted", "cassle")
# CaSSLe's CIFAR-100 class order, ``torch.manual_seed(5); torch.randperm(100)`` (also Kaizen's and the
# online-SSL paper's "CIFAR-100 as CaSSLe"): its 5 tasks of 20 are consecutive slices.
CASSLE_CIFAR100_ORDER = (
    11, 22, 39, 23, 42, 30, 78, 81, 64, 20, 29, 79, 15, 69, 86, 63, 55, 53, 73, 68,
    89, 67, 58, 97, 96, 92, 37, 14, 75, 51, 54, 7, 3, 6, 50, 40, 45, 4, 83, 98,
    27, 12, 8, 99, 60, 87, 28, 5, 84, 34, 82, 16, 72, 49, 59, 31, 71, 35, 66, 76,
    61, 17, 36, 62, 13, 2, 38, 94, 80, 19, 25, 18, 0, 1, 46, 74, 85, 91, 52, 77,
    21, 33, 32, 88, 93, 70, 44, 47, 26, 57, 90, 95, 48, 65, 43, 10, 9, 56, 24, 41,
)
SCHEDULE_MODES = ("cycle", "block")


@dataclasses.dataclass(frozen=True, eq=False)
class TaskSplit:
    """Per-task index sets. ``class_to_task[c]`` is the task holding class c (CIL), -1 for DIL."""
    kind: str
    train_indices: tuple[np.ndarray, ...]  # per task, sorted int32 indices into x_train
    test_indices: tuple[np.ndarray, ...]  # per task, sorted int32 indices into x_test
    task_classes: tuple[np.ndarray, ...]  # per task, sorted int32 class ids it holds
    class_to_task: np.ndarray  # int32 [num_classes]

    @property
    def num_tasks(self) -> int:
        return len(self.train_indices)

    @property
    def num_classes(self) -> int:
        return len(self.class_to_task)

    def __repr__(self) -> str:
        return (f"TaskSplit({self.kind!r}, num_tasks={self.num_tasks}, "
                f"train_sizes={[len(i) for i in self.train_indices]}, "
                f"classes_per_task={[len(c) for c in self.task_classes]})")


def _check_labels(y: np.ndarray, num_classes: int, key: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{key} is {y.dtype} {y.shape}; expected integer labels of shape [N]")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{key} has labels in [{y.min()}, {y.max()}] but num_classes is {num_classes}")
    return y


def _class_order(num_classes: int, class_order: str | Sequence[int], seed: int) -> np.ndarray:
    if isinstance(class_order, str):
        if class_order not in CLASS_ORDERS:
            raise ValueError(f"class_order '{class_order}' is not one of {CLASS_ORDERS} or a permutation of class ids")
        if class_order == "natural":
            return np.arange(num_classes)
        if class_order == "cassle":
            if num_classes != len(CASSLE_CIFAR100_ORDER):
                raise ValueError(f"class_order 'cassle' is CIFAR-100's (100 classes), the dataset has {num_classes}")
            return np.asarray(CASSLE_CIFAR100_ORDER)
        return np.random.default_rng(seed).permutation(num_classes)
    order = np.asarray(class_order)
    if order.shape != (num_classes,) or not np.array_equal(np.sort(order), np.arange(num_classes)):
        raise ValueError(f"class_order {list(order)[:10]}... is not a permutation of the {num_classes} class ids")
    return order


def class_incremental(y_train: np.ndarray, y_test: np.ndarray, num_classes: int, classes_per_task: Sequence[int],
                      class_order: str | Sequence[int] = "natural", seed: int = 0) -> TaskSplit:
    """Splits classes into tasks of ``classes_per_task[t]`` classes, taken in ``class_order``.

    ``class_order``: "natural" (0, 1, ...), "permuted" (a permutation drawn from ``seed``), "cassle"
    (:data:`CASSLE_CIFAR100_ORDER`) or an explicit permutation of the class ids. Every task must hold at least one training example.
    """
    y_train = _check_labels(y_train, num_classes, "y_train")
    y_test = _check_labels(y_test, num_classes, "y_test")
    sizes = [int(s) for s in classes_per_task]
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"classes_per_task {sizes} must be a non-empty list of positive class counts")
    if sum(sizes) != num_classes:
        raise ValueError(f"classes_per_task {sizes} sums to {sum(sizes)} but the dataset has {num_classes} classes")
    order = _class_order(num_classes, class_order, seed)
    task_classes = tuple(np.sort(c).astype(np.int32) for c in np.split(order, np.cumsum(sizes)[:-1]))
    class_to_task = np.empty(num_classes, np.int32)
    for t, classes in enumerate(task_classes):
        class_to_task[classes] = t
    train = tuple(np.flatnonzero(class_to_task[y_train] == t).astype(np.int32) for t in range(len(sizes)))
    test = tuple(np.flatnonzero(class_to_task[y_test] == t).astype(np.int32) for t in range(len(sizes)))
    empty = [t for t, idx in enumerate(train) if len(idx) == 0]
    if empty:
        raise ValueError(f"tasks {empty} have no training examples (classes {task_classes[empty[0]].tolist()} "
                         "are absent from y_train)")
    return TaskSplit("class_incremental", train, test, task_classes, class_to_task)


def data_incremental(y_train: np.ndarray, y_test: np.ndarray, num_classes: int, num_tasks: int,
                     seed: int = 0) -> TaskSplit:
    """Splits the training set into ``num_tasks`` disjoint, class-stratified parts of all classes.

    Each class's examples are shuffled with ``seed`` and dealt into ``num_tasks`` parts whose sizes
    differ by at most one; the parts that get the extra example rotate from class to class, so task
    sizes also differ by at most one. ``num_tasks`` need not divide anything, but every class must
    have at least ``num_tasks`` training examples so that every task holds every class. All tasks
    share the whole test set.
    """
    y_train = _check_labels(y_train, num_classes, "y_train")
    y_test = _check_labels(y_test, num_classes, "y_test")
    if int(num_tasks) != num_tasks or num_tasks < 1:
        raise ValueError(f"num_tasks={num_tasks} must be a positive integer")
    counts = np.bincount(y_train, minlength=num_classes)
    if counts.min() < num_tasks:
        c = int(counts.argmin())
        raise ValueError(f"data_incremental with num_tasks={num_tasks} needs >= {num_tasks} training examples per "
                         f"class, but class {c} has {counts[c]}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_tasks)]
    offset = 0  # first task to receive an extra example of the current class
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(y_train == c))
        base, extra = divmod(len(members), num_tasks)
        sizes = np.full(num_tasks, base)
        sizes[(offset + np.arange(extra)) % num_tasks] += 1
        offset = (offset + extra) % num_tasks
        for t, chunk in enumerate(np.split(members, np.cumsum(sizes)[:-1])):
            parts[t].append(chunk)
    train = tuple(np.sort(np.concatenate(p)).astype(np.int32) for p in parts)
    test = (np.arange(len(y_test), dtype=np.int32),) * num_tasks
    all_classes = np.arange(num_classes, dtype=np.int32)
    return TaskSplit("data_incremental", train, test, (all_classes,) * num_tasks,
                     np.full(num_classes, -1, np.int32))


def make_split(dataset, kind: str, classes_per_task: Sequence[int] = (), num_tasks: int = 0,
               class_order: str | Sequence[int] = "natural", seed: int = 0) -> TaskSplit:
    """The split of a ``Dataset`` that a config asks for.

    CIL takes ``classes_per_task``, or ``num_tasks`` equal tasks when it is empty (``num_tasks`` must
    then divide the number of classes). DIL takes ``num_tasks`` and no ``classes_per_task``.
    """
    if kind not in KINDS:
        raise ValueError(f"split kind '{kind}' is not one of {KINDS}")
    num_classes = dataset.num_classes
    if kind == "class_incremental":
        if not classes_per_task:
            if num_tasks < 1 or num_classes % num_tasks:
                raise ValueError(f"class_incremental needs classes_per_task, or num_tasks dividing the "
                                 f"{num_classes} classes of '{dataset.name}' (got num_tasks={num_tasks})")
            classes_per_task = [num_classes // num_tasks] * num_tasks
        elif num_tasks and num_tasks != len(classes_per_task):
            raise ValueError(f"num_tasks={num_tasks} disagrees with classes_per_task {list(classes_per_task)}")
        return class_incremental(dataset.y_train, dataset.y_test, num_classes, classes_per_task, class_order, seed)
    if classes_per_task:
        raise ValueError(f"data_incremental tasks hold all classes; drop classes_per_task {list(classes_per_task)}")
    return data_incremental(dataset.y_train, dataset.y_test, num_classes, num_tasks, seed)


def step_task_schedule(num_tasks: int, num_steps: int, mode: str = "cycle") -> np.ndarray:
    """int32 [num_steps]: the task each training step samples its minibatch from.

    "cycle": step s uses task s % num_tasks, the 10x10 CIL/DIL-minibatch setting of the task
    confusion study (CroMo-Mixup Sec. 3, App. B): tasks change after every step and are revisited.
    "block": the usual sequential schedule, ``num_steps / num_tasks`` consecutive steps per task.
    """
    if mode not in SCHEDULE_MODES:
        raise ValueError(f"schedule mode '{mode}' is not one of {SCHEDULE_MODES}")
    if num_tasks < 1 or num_steps < 0:
        raise ValueError(f"num_tasks={num_tasks} must be >= 1 and num_steps={num_steps} >= 0")
    steps = np.arange(num_steps)
    if mode == "cycle":
        return (steps % num_tasks).astype(np.int32)
    return (steps * num_tasks // max(num_steps, 1)).astype(np.int32)
