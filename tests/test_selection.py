"""Model selection: grid/random search pick the known-best setting, reproducibly."""

from __future__ import annotations

import csv
import json
import math

import numpy
import pytest

from ermlab import selection
from ermlab.data import toy

FAST = {"epochs": 30, "optimizer": "sgd", "momentum": 0.9, "batch_size": 16, "patience": 30}


@pytest.fixture(scope="module")
def xor_data():
    return toy.xor(400, noise=0.15, rng=0)


@pytest.fixture(scope="module")
def blobs_data():
    return toy.blobs(300, centers=3, std=0.5, rng=0)


@pytest.fixture(scope="module")
def xor_search(xor_data):
    space = {"hidden": [[], [16]], "lr": [1e-5, 0.1]}
    return selection.grid_search(space, xor_data, base=FAST, seed=1)


def test_grid_search_needs_a_hidden_layer_for_xor(xor_search):
    """XOR is not linearly separable: a linear model scores ≤ 0.75 (it can be right on
    at most 3 of the 4 corners), the 16-unit hidden layer with lr 0.1 nearly 1."""
    table = {(tuple(row["hidden"]), row["lr"]): row["mean_score"] for row in xor_search.table}
    assert len(table) == 4
    assert xor_search.best_params == {"hidden": [16], "lr": 0.1}
    assert xor_search.best_config["hidden"] == (16,)
    assert xor_search.best_config["epochs"] == FAST["epochs"]  # base settings kept
    assert xor_search.best_score > 0.95
    assert max(table[((), 1e-5)], table[((), 0.1)]) <= 0.8
    assert table[((16,), 1e-5)] < 0.8  # lr 1e-5 does not move in 30 epochs


def test_grid_search_prefers_a_usable_learning_rate(blobs_data):
    result = selection.grid_search({"lr": [1e-5, 0.1]}, blobs_data,
                                   base={**FAST, "epochs": 5, "hidden": [16]}, seed=0)
    scores = {row["lr"]: row["mean_score"] for row in result.table}
    assert result.best_params == {"lr": 0.1}
    assert scores[0.1] > 0.95 > scores[1e-5] + 0.2


def test_parallel_search_gives_the_sequential_table(xor_data):
    space = {"hidden": [[8], [16]], "lr": [0.03, 0.1]}
    base = {**FAST, "epochs": 4}
    options = {"base": base, "scoring": "neg_loss", "cv": 2}
    sequential = selection.grid_search(space, xor_data, seed=3, n_jobs=1, **options)
    parallel = selection.grid_search(space, xor_data, seed=3, n_jobs=2, **options)
    drop = lambda row: {k: v for k, v in row.items() if k != "fit_time"}  # noqa: E731
    assert [drop(row) for row in parallel.table] == [drop(row) for row in sequential.table]
    assert parallel.best_index == sequential.best_index
    # a different seed gives different initializations and splits
    other = selection.grid_search(space, xor_data, seed=4, n_jobs=1, **options)
    assert [r["mean_score"] for r in other.table] != [r["mean_score"] for r in sequential.table]


def test_a_searched_epochs_keeps_its_value_beside_the_epochs_trained():
    """Early stopping (patience 1) ends both trials long before 40 epochs: the table's
    ``epochs`` is the searched budget, ``epochs_trained`` what was run."""
    from sklearn.datasets import make_classification

    x, y = make_classification(120, 8, n_informative=5, n_classes=3, random_state=0)
    base = {"hidden": [8], "batch_size": 32, "patience": 1, "lr": 0.05}
    result = selection.grid_search({"epochs": [40, 60]}, (x, y), base=base)
    assert [row["epochs"] for row in result.table] == [40, 60]
    assert all(1 <= row["epochs_trained"] < 40 for row in result.table)
    assert result.best_params == {"epochs": result.best_config["epochs"]}
    assert result.best_params["epochs"] in (40, 60)


def test_no_parameter_can_be_shadowed_by_a_result_column(blobs_data):
    """Every row is ``trial``, the parameters, then ``RESULT_COLUMNS`` and split scores; no
    config key takes one of those names, and a parameter named like one is refused."""
    from ermlab import config

    names = {*config.DEFAULTS, "schedule",
             *(key for name in config.optimizers() for key in config.optimizer_options(name))}
    assert not names & set(selection.RESULT_COLUMNS)
    assert not [name for name in names if name.startswith("split")]
    result = selection.search([{"lr": 0.1}], blobs_data, base={**FAST, "epochs": 1}, cv=2)
    assert list(result.table[0]) == ["trial", "lr", "mean_score", "std_score", "split0_score",
                                     "split1_score", "epochs_trained", "fit_time", "error"]
    for name in ("fit_time", "error", "trial", "split3_score"):
        with pytest.raises(ValueError, match=rf"\['{name}'\] have the name of a result column"):
            selection.search([{name: 1}], blobs_data, base={**FAST, "epochs": 1})


def test_a_list_of_grids_reports_the_winners_own_parameters(blobs_data, tmp_path):
    """As scikit-learn's ``best_params_``: the winner's keys only; the table and CSV have a
    column per key of any grid, empty where a trial's grid lacks it."""
    space = [{"lr": [0.1]}, {"optimizer": ["sgd"], "momentum": [0.0], "lr": [1e-6]}]
    base = {"epochs": 5, "hidden": [8], "batch_size": 16, "patience": 5}
    result = selection.grid_search(space, blobs_data, base=base, seed=0)
    assert result.best_index == 0
    assert result.best_params == {"lr": 0.1}
    assert result.candidates == [{"lr": 0.1}, {"lr": 1e-6, "momentum": 0.0, "optimizer": "sgd"}]
    assert result.table[0]["momentum"] is None and result.table[1]["momentum"] == 0.0
    path = tmp_path / "search.csv"
    result.to_csv(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:4] == ["trial", "lr", "momentum", "optimizer"]
    assert (rows[0]["momentum"], rows[0]["optimizer"]) == ("", "")
    assert (rows[1]["momentum"], rows[1]["optimizer"]) == ("0.0", "sgd")


def test_trials_have_independent_seeds(blobs_data):
    """Two identical candidates get different seeds (spawned), so different results."""
    result = selection.search([{"lr": 1e-3}, {"lr": 1e-3}], blobs_data,
                              base={**FAST, "epochs": 1, "hidden": [4]}, scoring="neg_loss")
    assert result.table[0]["mean_score"] != result.table[1]["mean_score"]


def test_random_search_loguniform_is_in_range_and_reproducible(blobs_data):
    space = {"lr": selection.loguniform(1e-4, 1e-1), "hidden": [[4], [8]]}
    base = {**FAST, "epochs": 1}
    first = selection.random_search(space, 6, blobs_data, base=base, seed=7)
    again = selection.random_search(space, 6, blobs_data, base=base, seed=7)
    other = selection.random_search(space, 6, blobs_data, base=base, seed=8)
    lrs = [row["lr"] for row in first.table]
    assert len(lrs) == 6 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert all(isinstance(lr, float) for lr in lrs)  # plain floats, not numpy scalars
    assert lrs == [row["lr"] for row in again.table]
    assert lrs != [row["lr"] for row in other.table]
    assert {tuple(row["hidden"]) for row in first.table} <= {(4,), (8,)}


def test_loguniform_is_uniform_in_the_logarithm():
    """Kolmogorov–Smirnov of log10 samples against U(−4, −1); a plain uniform fails it."""
    from scipy import stats

    draws = selection.loguniform(1e-4, 1e-1).rvs(size=2000, random_state=0)
    assert draws.min() >= 1e-4 and draws.max() <= 1e-1
    assert stats.kstest(numpy.log10(draws), stats.uniform(-4, 3).cdf).pvalue > 0.01
    flat = selection.uniform(1e-4, 1e-1).rvs(size=2000, random_state=0)
    assert stats.kstest(numpy.log10(flat), stats.uniform(-4, 3).cdf).pvalue < 1e-6


def test_parse_space_from_toml(blobs_data):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python ≥ 3.11")
    spec = tomllib.loads("""
        hidden = [[4], [8, 4]]
        lr = {loguniform = [1e-3, 1e-1]}
        momentum = {uniform = [0.5, 0.9]}
    """)
    space = selection.parse_space(spec)
    result = selection.random_search(space, 3, blobs_data, base={**FAST, "epochs": 1}, seed=0)
    for row in result.table:
        assert 1e-3 <= row["lr"] <= 1e-1 and 0.5 <= row["momentum"] <= 0.9
    with pytest.raises(ValueError, match="distribution is one of"):
        selection.parse_space({"lr": {"lognormal": [0, 1]}})
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        selection.parse_space({"lr": {"uniform": [0, 1, 2]}})


def test_csv_has_one_row_per_trial(xor_search, tmp_path):
    path = tmp_path / "search.csv"
    xor_search.to_csv(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(xor_search.table) == 4
    assert list(rows[0]) == ["trial", "hidden", "lr", "mean_score", "std_score",
                             "epochs_trained", "fit_time", "error"]
    for row, expected in zip(rows, xor_search.table):
        assert json.loads(row["hidden"]) == expected["hidden"]
        assert float(row["lr"]) == expected["lr"]
        assert float(row["mean_score"]) == pytest.approx(expected["mean_score"], rel=1e-12)
        assert float(row["fit_time"]) > 0
        assert row["error"] == ""


def test_a_table_that_cannot_be_written_leaves_the_previous_file(xor_search, tmp_path):
    path = tmp_path / "search.csv"
    path.write_text("previous table\n")
    broken = selection.SearchResult.__new__(selection.SearchResult)
    broken.__dict__.update(xor_search.__dict__)
    broken.table = [*xor_search.table, {"trial": object.__new__(Unprintable)}]
    with pytest.raises(RuntimeError, match="cannot format"):
        broken.to_csv(path)
    assert path.read_text() == "previous table\n"
    assert [p.name for p in tmp_path.iterdir()] == ["search.csv"]


class Unprintable:
    def __str__(self):
        raise RuntimeError("cannot format this cell")


def test_cross_validation_returns_k_scores(blobs_data):
    x, y = blobs_data
    result = selection.cross_validate({**FAST, "epochs": 5, "hidden": [8], "lr": 0.05}, x, y,
                                      k=4, seed=0)
    scores = result.split_scores
    assert len(scores) == 4 and len(result.table) == 1
    assert result.best_score == pytest.approx(numpy.mean(scores))
    assert result.table[0]["std_score"] == pytest.approx(numpy.std(scores))
    assert min(scores) > 0.9  # the blobs are separable


def test_cross_validation_folds_partition_the_data(blobs_data):
    x, y = blobs_data
    problem = selection._problem(*selection._data((x, y), True), True, None, 0.2, 5, 0, None)
    validation = numpy.concatenate([val for _, val in problem.splits])
    assert sorted(validation) == list(range(len(x)))
    for train, val in problem.splits:  # stratified: every class in every fold
        assert set(y[val]) == set(y) and not set(train) & set(val)


def test_explicit_validation_data_is_used(blobs_data):
    x, y = blobs_data
    flipped = (y + 1) % 3  # validation labels that contradict the training labels
    result = selection.grid_search({"lr": [0.1]}, (x[:200], y[:200]),
                                   validation_data=(x[200:], flipped[200:]),
                                   base={**FAST, "epochs": 5, "hidden": [8]})
    assert result.best_score < 0.1


def test_regression_search_scores_by_negative_loss():
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(numpy.float32)
    y = numpy.stack([x @ [1.0, -2.0, 0.5], x[:, 0]], axis=1).astype(numpy.float32)
    result = selection.grid_search({"lr": [1e-5, 0.05]}, (x, y),
                                   base={**FAST, "loss": "mse", "hidden": [], "epochs": 10})
    assert result.scoring == "neg_loss"
    assert result.best_params == {"lr": 0.05}
    assert -0.01 < result.best_score <= 0


def test_build_and_train_is_deterministic(blobs_data):
    x, y = blobs_data
    config = {**FAST, "epochs": 3, "hidden": [8], "lr": 0.01}
    first = selection.build_and_train(config, x[:200], y[:200], x[200:], y[200:], seed=5,
                                      scoring="neg_loss")
    again = selection.build_and_train(config, x[:200], y[:200], x[200:], y[200:], seed=5,
                                      scoring="neg_loss")
    other = selection.build_and_train(config, x[:200], y[:200], x[200:], y[200:], seed=6,
                                      scoring="neg_loss")
    assert isinstance(first, float) and first == again != other
    # float64 images are flattened and cast; a SeedSequence is not consumed by the call
    images = x.astype(numpy.float64).reshape(-1, 2, 1)
    seed = numpy.random.SeedSequence(5)
    runs = [selection.build_and_train(config, images[:200], y[:200], images[200:], y[200:],
                                      seed=seed, scoring="neg_loss") for _ in range(2)]
    assert runs == [first, first]


def test_a_diverging_trial_is_recorded_not_raised(blobs_data):
    """lr = 1e38 overflows float32 in the first updates: NaN score, the guard's message."""
    base = {**FAST, "epochs": 2, "hidden": []}
    result = selection.grid_search({"lr": [1e38, 0.1]}, blobs_data, base=base)
    failed, ok = result.table
    assert math.isnan(failed["mean_score"])
    assert failed["error"].startswith("DivergenceError: training diverged: loss nan at epoch 1")
    assert ok["error"] == "" and result.best_index == 1
    with pytest.raises(ValueError, match="every trial failed; the first: DivergenceError"):
        selection.grid_search({"lr": [1e38]}, blobs_data, base=base)


def test_dataset_objects_are_searched_on_their_training_split():
    from ermlab import data

    dataset = data.load("blobs", n=200)
    result = selection.grid_search({"lr": [0.1]}, dataset, base={**FAST, "epochs": 2})
    assert result.table[0]["mean_score"] > 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: selection.grid_search({"lr": 0.1}, d), r"list of values .*\[0\.1\]"),
        (lambda d: selection.grid_search({"lr": []}, d), "empty list"),
        (lambda d: selection.grid_search({}, d), "non-empty dict"),
        (lambda d: selection.grid_search({"lr": "0.1"}, d), "list of values"),
        (lambda d: selection.grid_search({"learning_rate": [0.1]}, d),
         r"unknown config key\(s\) \['learning_rate'\]"),
        (lambda d: selection.grid_search({"hidden": [[-3]]}, d), "positive layer widths"),
        (lambda d: selection.grid_search({"optimizer": ["lbfgs"]}, d), "unknown optimizer"),
        (lambda d: selection.grid_search({"lr": selection.uniform(0, 1)}, d),
         "use random_search"),
        (lambda d: selection.random_search({"lr": [0.1]}, 0, d), "n_iter ≥ 1"),
        (lambda d: selection.random_search({"lr": 0.1}, 2, d), "list of values"),
        (lambda d: selection.grid_search({"lr": [0.1]}, d, cv=1), "cv must be"),
        (lambda d: selection.grid_search({"lr": [0.1]}, d, validation_fraction=1.5),
         r"validation_fraction must be in \(0, 1\)"),
        (lambda d: selection.grid_search({"lr": [0.1]}, d, n_jobs=0), "n_jobs"),
        (lambda d: selection.grid_search({"lr": [0.1]}, d, scoring="f1"), "unknown scoring"),
        (lambda d: selection.grid_search({"lr": [0.1]}, d[0]), r"data must be \(x, y\)"),
        (lambda d: selection.grid_search({"loss": ["mse", "cross_entropy"]}, d),
         "cannot mix"),
        (lambda d: selection.grid_search({"lr": [0.1]}, (d[0], d[1] + 0.5)),
         "integer labels"),
        (lambda d: selection.loguniform(0, 1), "0 < low < high"),
        (lambda d: selection.uniform(1, 1), "low < high"),
    ],
)
def test_bad_spaces_and_options_are_clear_errors(blobs_data, call, message):
    with pytest.raises(ValueError, match=message):
        call(blobs_data)
