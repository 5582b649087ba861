"""Tests for jaxcssl.data.splits: disjointness, coverage, class-to-task maps, determinism, errors."""
import numpy as np
import pytest

from jaxcssl.data import splits
from jaxcssl.data.datasets import Dataset


def _labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int32)


Y_TRAIN = _labels(100, 7, 0)
Y_TEST = _labels(100, 3, 1)


def _check_class_incremental(split: splits.TaskSplit, sizes, y_train=Y_TRAIN, y_test=Y_TEST):
    assert split.kind == "class_incremental" and split.num_tasks == len(sizes)
    assert [len(c) for c in split.task_classes] == list(sizes)
    all_classes = np.concatenate(split.task_classes)
    np.testing.assert_array_equal(np.sort(all_classes), np.arange(len(split.class_to_task)))  # disjoint + cover
    for t in range(split.num_tasks):
        np.testing.assert_array_equal(split.class_to_task[split.task_classes[t]], t)
        for idx, y in ((split.train_indices[t], y_train), (split.test_indices[t], y_test)):
            assert idx.dtype == np.int32 and np.all(np.diff(idx) > 0)
            np.testing.assert_array_equal(idx, np.flatnonzero(np.isin(y, split.task_classes[t])))  # all, and only, its classes
    for idx, y in ((split.train_indices, y_train), (split.test_indices, y_test)):
        np.testing.assert_array_equal(np.sort(np.concatenate(idx)), np.arange(len(y)))  # disjoint + cover


@pytest.mark.parametrize("sizes", [[20] * 5, [10] * 10, [50, 10, 10, 10, 10, 10], [1] * 100, [100]])
@pytest.mark.parametrize("order", ["natural", "permuted", "cassle"])
def test_class_incremental_partitions(sizes, order):
    split = splits.class_incremental(Y_TRAIN, Y_TEST, 100, sizes, class_order=order, seed=3)
    _check_class_incremental(split, sizes)
    if order == "natural":
        np.testing.assert_array_equal(split.task_classes[0], np.arange(sizes[0]))


def test_cassle_order_gives_its_published_cifar100_tasks():
    split = splits.class_incremental(Y_TRAIN, Y_TEST, 100, [20] * 5, class_order="cassle")
    # CaSSLe's torch.manual_seed(5); torch.randperm(100), as its first two tasks are listed by Kaizen's code.
    assert split.task_classes[0].tolist() == sorted([11, 22, 39, 23, 42, 30, 78, 81, 64, 20, 29, 79, 15, 69, 86,
                                                     63, 55, 53, 73, 68])
    assert split.task_classes[4].tolist() == sorted([21, 33, 32, 88, 93, 70, 44, 47, 26, 57, 90, 95, 48, 65, 43,
                                                     10, 9, 56, 24, 41])
    with pytest.raises(ValueError, match="class_order 'cassle' is CIFAR-100's"):
        splits.class_incremental(*(np.arange(10).repeat(2),) * 2, 10, [5, 5], class_order="cassle")


def test_class_incremental_small_uneven_and_explicit_order():
    y_train, y_test = _labels(10, 5, 2), _labels(10, 2, 3)
    split = splits.class_incremental(y_train, y_test, 10, [5, 5])
    _check_class_incremental(split, [5, 5], y_train, y_test)
    order = [9, 2, 4, 0, 7, 1, 3, 8, 5, 6]
    split = splits.class_incremental(y_train, y_test, 10, [3, 2, 5], class_order=order)
    _check_class_incremental(split, [3, 2, 5], y_train, y_test)
    assert [c.tolist() for c in split.task_classes] == [[2, 4, 9], [0, 7], [1, 3, 5, 6, 8]]
    np.testing.assert_array_equal(split.class_to_task, [1, 2, 0, 2, 0, 2, 2, 1, 2, 0])


def test_class_incremental_permutation_is_seeded():
    a = splits.class_incremental(Y_TRAIN, Y_TEST, 100, [10] * 10, "permuted", seed=5)
    b = splits.class_incremental(Y_TRAIN, Y_TEST, 100, [10] * 10, "permuted", seed=5)
    c = splits.class_incremental(Y_TRAIN, Y_TEST, 100, [10] * 10, "permuted", seed=6)
    np.testing.assert_array_equal(a.class_to_task, b.class_to_task)
    assert not np.array_equal(a.class_to_task, c.class_to_task)
    assert any(np.any(np.diff(t) > 1) for t in a.task_classes)  # non-contiguous class ids within a task


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes_per_task=[20, 20, 20]), r"classes_per_task \[20, 20, 20\] sums to 60 but the dataset has 100 classes"),
    (dict(classes_per_task=[50, 0, 50]), r"classes_per_task \[50, 0, 50\] must be a non-empty list of positive"),
    (dict(classes_per_task=[]), r"classes_per_task \[\] must be a non-empty list"),
    (dict(classes_per_task=[100], class_order="shuffled"), "class_order 'shuffled' is not one of"),
    (dict(classes_per_task=[100], class_order=[0] * 100), "is not a permutation of the 100 class ids"),
    (dict(classes_per_task=[100], num_classes=50), r"y_train has labels in \[0, 99\] but num_classes is 50"),
])
def test_class_incremental_errors(kwargs, message):
    kwargs = {"num_classes": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        splits.class_incremental(Y_TRAIN, Y_TEST, **kwargs)


def test_class_incremental_rejects_a_task_without_training_examples():
    y_train = np.array([0, 0, 1, 1], np.int32)  # class 2 has no training example
    with pytest.raises(ValueError, match=r"tasks \[1\] have no training examples \(classes \[2\]"):
        splits.class_incremental(y_train, y_train, 3, [2, 1])


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 7])
def test_data_incremental_is_stratified_disjoint_and_balanced(num_tasks):
    split = splits.data_incremental(Y_TRAIN, Y_TEST, 100, num_tasks, seed=4)
    assert split.kind == "data_incremental" and split.num_tasks == num_tasks
    np.testing.assert_array_equal(np.sort(np.concatenate(split.train_indices)), np.arange(len(Y_TRAIN)))
    sizes = [len(i) for i in split.train_indices]
    assert max(sizes) - min(sizes) <= 1
    per_task_counts = np.stack([np.bincount(Y_TRAIN[i], minlength=100) for i in split.train_indices])
    assert per_task_counts.min() >= 1  # every task holds every class
    assert (per_task_counts.max(0) - per_task_counts.min(0)).max() <= 1  # stratified: 7 per class dealt evenly
    for t in range(num_tasks):
        np.testing.assert_array_equal(split.test_indices[t], np.arange(len(Y_TEST)))
        np.testing.assert_array_equal(split.task_classes[t], np.arange(100))
    np.testing.assert_array_equal(split.class_to_task, -1)


def test_data_incremental_is_seeded():
    a, b, c = (splits.data_incremental(Y_TRAIN, Y_TEST, 100, 5, seed=s) for s in (1, 1, 2))
    for x, y in zip(a.train_indices, b.train_indices, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train_indices[0], c.train_indices[0])


def test_data_incremental_errors():
    with pytest.raises(ValueError, match="num_tasks=0 must be a positive integer"):
        splits.data_incremental(Y_TRAIN, Y_TEST, 100, 0)
    with pytest.raises(ValueError, match="num_tasks=8 needs >= 8 training examples per class, but class 0 has 7"):
        splits.data_incremental(Y_TRAIN, Y_TEST, 100, 8)


@pytest.fixture(scope="module")
def dataset():
    x = np.zeros((len(Y_TRAIN), 2, 2, 3), np.uint8)
    return Dataset("toy", x, Y_TRAIN, x[: len(Y_TEST)], Y_TEST, tuple(str(c) for c in range(100)))


def test_make_split(dataset):
    equal = splits.make_split(dataset, "class_incremental", num_tasks=10, class_order="permuted", seed=1)
    listed = splits.make_split(dataset, "class_incremental", classes_per_task=[10] * 10, class_order="permuted", seed=1)
    np.testing.assert_array_equal(equal.class_to_task, listed.class_to_task)
    dil = splits.make_split(dataset, "data_incremental", num_tasks=5, seed=1)
    assert dil.num_tasks == 5 and dil.kind == "data_incremental"
    with pytest.raises(ValueError, match="num_tasks dividing the 100 classes of 'toy' \\(got num_tasks=3\\)"):
        splits.make_split(dataset, "class_incremental", num_tasks=3)
    with pytest.raises(ValueError, match=r"num_tasks=4 disagrees with classes_per_task \[50, 50\]"):
        splits.make_split(dataset, "class_incremental", classes_per_task=[50, 50], num_tasks=4)
    with pytest.raises(ValueError, match=r"drop classes_per_task \[50, 50\]"):
        splits.make_split(dataset, "data_incremental", classes_per_task=[50, 50], num_tasks=2)
    with pytest.raises(ValueError, match="split kind 'task_incremental' is not one of"):
        splits.make_split(dataset, "task_incremental", num_tasks=2)


def test_step_task_schedule():
    np.testing.assert_array_equal(splits.step_task_schedule(3, 7), [0, 1, 2, 0, 1, 2, 0])
    block = splits.step_task_schedule(4, 10, mode="block")
    np.testing.assert_array_equal(block, np.sort(block))
    assert np.bincount(block).tolist() == [3, 2, 3, 2]
    assert splits.step_task_schedule(10, 0).shape == (0,)
    with pytest.raises(ValueError, match="schedule mode 'random' is not one of"):
        splits.step_task_schedule(3, 7, mode="random")
    with pytest.raises(ValueError, match="num_tasks=0 must be >= 1"):
        splits.step_task_schedule(0, 7)
