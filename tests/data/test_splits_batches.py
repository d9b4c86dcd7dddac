"""Stratified, reproducible splits; k-fold; batches that visit every example once; curricula."""

import math

import numpy
import pytest

from ermlab.data import (
    batches,
    curriculum_batches,
    curriculum_order,
    kfold_indices,
    splits,
    train_val_test_split,
    train_validation_split,
)

Y = numpy.repeat(numpy.arange(4), [100, 200, 300, 400])      # class proportions .1 .2 .3 .4


def test_split_is_a_stratified_partition():
    split = train_val_test_split(Y, validation=0.1, test=0.2, seed=5)
    assert (len(split.train), len(split.validation), len(split.test)) == (700, 100, 200)
    everything = numpy.concatenate(split)
    numpy.testing.assert_array_equal(numpy.sort(everything), numpy.arange(len(Y)))
    for part in split:
        numpy.testing.assert_allclose(numpy.bincount(Y[part]) / len(part), [.1, .2, .3, .4],
                                      atol=0.01)


def test_split_is_reproducible_from_the_seed_and_changes_with_it():
    a = train_val_test_split(Y, 0.1, 0.2, seed=5)
    b = train_val_test_split(Y, 0.1, 0.2, seed=5)
    c = train_val_test_split(Y, 0.1, 0.2, seed=6)
    for x, y in zip(a, b):
        numpy.testing.assert_array_equal(x, y)
    assert not numpy.array_equal(a.validation, c.validation)


def test_split_without_test_part_and_array_helper():
    split = train_val_test_split(Y, validation=0.25, seed=0)
    assert len(split.test) == 0 and len(split.validation) == 250
    x = numpy.arange(len(Y) * 2).reshape(-1, 2)
    x_train, y_train, x_val, y_val = train_validation_split(x, Y, 0.25, seed=0)
    numpy.testing.assert_array_equal(x_val[:, 0] // 2, split.validation)
    numpy.testing.assert_array_equal(y_val, Y[split.validation])


def test_split_errors():
    with pytest.raises(ValueError, match="leave no training examples"):
        train_val_test_split(Y, 0.5, 0.5)
    with pytest.raises(ValueError, match="pass stratify=False"):
        train_val_test_split([0, 0, 0, 1], validation=0.25)
    assert len(train_val_test_split([0, 0, 0, 1], 0.25, stratify=False).validation) == 1


def labels(kind):
    rng = numpy.random.default_rng(3)
    return {"proportions": Y,
            "random": rng.integers(0, 10, 10007),
            "ties": numpy.repeat([5, 1, 9], 7),  # equal remainders: ties drawn at random
            "sparse": rng.choice(numpy.array([3, 7, 100], numpy.uint8), 503, p=[.6, .3, .1]),
            "pairs": numpy.repeat(numpy.arange(30), 2),
            "bool": rng.random(401) < 0.3,
            "many": rng.integers(0, 400, 20000)}[kind]


@pytest.mark.parametrize("kind", ["proportions", "random", "ties", "sparse", "pairs", "bool",
                                  "many"])
def test_stratified_split_is_scikit_learns_part_for_part(kind):
    """The split drawn here is ``train_test_split``'s (the oracle), in order, and the
    two-stage split (test, then validation from the rest) is too; where it cannot
    stratify, neither can this one."""
    from sklearn.model_selection import train_test_split

    y = labels(kind)
    n, compared = len(y), 0
    for seed, (validation, test) in zip(range(7), [(0.1, 0.2), (0.25, 0.0), (0.0, 0.3),
                                                  (0.5, 0.1), (0.05, 0.05), (0.3, 0.3),
                                                  (0.5, 0.0)]):
        n_val, n_test = int(round(validation * n)), int(round(test * n))
        count = n_val or n_test
        try:
            expected = train_test_split(numpy.arange(n), test_size=count, random_state=seed,
                                        stratify=y)
        except ValueError:
            with pytest.raises(ValueError):
                splits.stratified_shuffle_split(y, count, seed)
            continue
        for got, want in zip(splits.stratified_shuffle_split(y, count, seed), expected,
                             strict=True):
            numpy.testing.assert_array_equal(got, want)
        try:
            rest, parts = numpy.arange(n), {}
            for what, size in (("test", n_test), ("validation", n_val)):
                parts[what] = numpy.arange(0)
                if size:
                    rest, parts[what] = train_test_split(rest, test_size=size,
                                                         random_state=seed, stratify=y[rest])
        except ValueError:
            with pytest.raises(ValueError, match="cannot stratify"):
                train_val_test_split(y, n_val, n_test, seed)
            continue
        split = train_val_test_split(y, n_val, n_test, seed)
        for got, want in zip(split, (rest, parts["validation"], parts["test"]), strict=True):
            numpy.testing.assert_array_equal(got, numpy.sort(want))
        compared += 1
    assert compared >= 1


def test_stratified_split_names_what_cannot_be_stratified():
    with pytest.raises(ValueError, match=r"class 4 has only 1 example.*pass stratify=False"):
        train_val_test_split([0, 0, 4, 0, 1, 1], validation=2)
    with pytest.raises(ValueError, match=r"2 examples cannot hold one of each of 3 classes"):
        train_val_test_split(numpy.repeat([0, 1, 2], 5), validation=2)


def test_stratified_kfold_validates_every_example_once():
    folds = kfold_indices(Y, k=5, seed=1)
    seen = numpy.concatenate([validation for _, validation in folds])
    numpy.testing.assert_array_equal(numpy.sort(seen), numpy.arange(len(Y)))
    for train, validation in folds:
        assert len(numpy.intersect1d(train, validation)) == 0
        numpy.testing.assert_array_equal(numpy.bincount(Y[validation]), [20, 40, 60, 80])
    again = kfold_indices(Y, k=5, seed=1)
    assert all(numpy.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    with pytest.raises(ValueError, match="k must be in"):
        kfold_indices(Y, k=1)


@pytest.mark.parametrize("batch_size", [1, 7, 32, 100, None, 1000])
def test_batches_cover_every_index_once_per_epoch(batch_size):
    rng = numpy.random.default_rng(0)
    epochs = [list(batches(100, batch_size, rng=rng)) for _ in range(2)]
    for epoch in epochs:
        numpy.testing.assert_array_equal(numpy.sort(numpy.concatenate(epoch)), numpy.arange(100))
        size = 100 if batch_size is None else min(batch_size, 100)
        assert [len(b) for b in epoch[:-1]] == [size] * (len(epoch) - 1)
    if batch_size in (1, 7):
        assert not numpy.array_equal(numpy.concatenate(epochs[0]), numpy.concatenate(epochs[1]))


def test_full_batch_and_unshuffled_order():
    assert [b.tolist() for b in batches(5, None, shuffle=False)] == [[0, 1, 2, 3, 4]]
    assert [b.tolist() for b in batches(5, 2, shuffle=False)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="batch_size must be ≥ 1"):
        list(batches(5, 0))


def test_curriculum_visits_easy_to_hard_then_shuffles():
    difficulty = numpy.array([0.9, 0.1, 0.5, 0.1, 0.7, 0.3])
    order = curriculum_order(difficulty, epoch=0, sorted_epochs=2, rng=0)
    assert difficulty[order].tolist() == sorted(difficulty)
    assert set(order[:2].tolist()) == {1, 3}
    later = [curriculum_order(difficulty, epoch=2, sorted_epochs=2, rng=s) for s in range(20)]
    assert all(sorted(o.tolist()) == list(range(6)) for o in later)
    assert any(difficulty[o].tolist() != sorted(difficulty) for o in later)
    chunks = list(curriculum_batches(difficulty, 4, epoch=0, rng=0))
    assert [len(c) for c in chunks] == [4, 2] and max(difficulty[chunks[0]]) <= 0.5
    with pytest.raises(ValueError, match="must be finite"):
        curriculum_order([0.1, numpy.nan], epoch=0)


def test_impossible_stratified_folds_name_the_python_and_command_line_fix():
    y = numpy.array([0] * 10 + [1])
    with pytest.raises(ValueError, match=r"pass stratify=False or a smaller k \(command line: "
                                         r"a smaller cv in \[search\]\)"):
        kfold_indices(numpy.array([0, 0, 1, 1]), k=3)
    with pytest.raises(ValueError, match=r"pass stratify=False \(command line: "
                                         r"--validation-fraction\)"):
        train_validation_split(numpy.zeros((11, 2)), y, validation=0.1)


def test_a_fraction_counts_as_scikit_learns_test_size():
    """⌈f·n⌉, as ``train_test_split(test_size=f)``: the same examples, part for part (it was
    round(f·n), one fewer for n = 10, f = 0.25). Both parts: two draws of ⌈f·n⌉ each."""
    from sklearn.model_selection import train_test_split

    rng = numpy.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(20, 300))
        y = rng.integers(0, 3, n)
        y[:6] = [0, 0, 1, 1, 2, 2]
        f = float(rng.choice([0.1, 0.15, 0.25, 0.3, 0.33, 0.45]))
        stratify = trial % 2 == 0
        train, held = train_test_split(numpy.arange(n), test_size=f, random_state=trial,
                                       stratify=y if stratify else None)
        for got, part in ((train_val_test_split(y, f, 0, trial, stratify), "validation"),
                          (train_val_test_split(y, 0, f, trial, stratify), "test")):
            numpy.testing.assert_array_equal(got.train, numpy.sort(train))
            numpy.testing.assert_array_equal(getattr(got, part), numpy.sort(held))
        both = train_val_test_split(y, f / 2, 0.2, trial, stratify)
        rest, test = train_test_split(numpy.arange(n), test_size=0.2, random_state=trial,
                                      stratify=y if stratify else None)
        rest, validation = train_test_split(rest, test_size=math.ceil(f / 2 * n),
                                            random_state=trial,
                                            stratify=y[rest] if stratify else None)
        for got, want in zip(both, (rest, validation, test), strict=True):
            numpy.testing.assert_array_equal(got, numpy.sort(want))


def test_split_errors_advise_the_change_that_helps():
    y = numpy.arange(1000) % 5
    with pytest.raises(ValueError, match=r"use a smaller validation fraction \(it leaves 1 of "
                                         r"1000 examples for 5 classes\)"):
        train_val_test_split(y, 0.999)
    with pytest.raises(ValueError, match="use a larger validation fraction"):
        train_val_test_split(y, 0.002)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"validation must be a fraction in \[0, 1\) or a "
                                             rf"whole count; got {bad}"):
            train_val_test_split(y, bad)
    with pytest.raises(ValueError, match="test must be a fraction"):
        train_val_test_split(y, 0.1, float("nan"))
    with pytest.raises(ValueError, match=r"larger test fraction or pass stratify=False \(or "
                                         r"give the data a test set of its own\)") as error:
        train_val_test_split(y, 0.0, 0.002)
    assert ".npz" not in str(error.value)  # a CSV has no x_test


def test_stratified_kfold_refuses_a_class_smaller_than_k():
    """scikit-learn only warns, and the class is missing from k − 1 of the folds."""
    with pytest.raises(ValueError, match=r"class 1 has 1 example\(s\), and each class needs at "
                                         r"least 3; no k ≥ 2 puts it in every fold"):
        kfold_indices(numpy.array([0] * 10 + [1]), 3)
    with pytest.raises(ValueError, match=r"class 7 has 2 example\(s\), and each class needs at "
                                         r"least 3; pass stratify=False or a smaller k"):
        kfold_indices(numpy.array([3] * 10 + [7] * 2), 3)
    assert len(kfold_indices(numpy.array([0] * 10 + [1]), 3, stratify=False)) == 3
