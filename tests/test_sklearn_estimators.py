"""scikit-learn estimators: the estimator checks, and use in Pipeline, GridSearchCV, CV."""

from __future__ import annotations

import numpy
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ermlab.sklearn import EXPECTED_FAILED_CHECKS, MLPClassifier, MLPRegressor


@parametrize_with_checks(
    [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01),
        MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=0.01,
                      solver="sgd", learning_rate="adaptive", early_stopping=True,
                      dropout=0.1, l1=1e-4, max_norm=3.0),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def test_pipeline_on_digits(digits):
    x_train, x_test, y_train, y_test = digits
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier((64,), max_iter=40, learning_rate_init=3e-3, random_state=0),
    )
    assert model.fit(x_train, y_train).score(x_test, y_test) >= 0.95


def test_grid_search_cv_on_iris(iris):
    x, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=60, random_state=0))
    grid = {"mlpclassifier__hidden_layer_sizes": [(), (16,)],
            "mlpclassifier__learning_rate_init": [1e-5, 1e-2]}
    search = GridSearchCV(pipe, grid, cv=3).fit(x, y)
    assert search.best_score_ >= 0.9
    assert search.best_params_["mlpclassifier__learning_rate_init"] == 1e-2
    scores = search.cv_results_["mean_test_score"]
    assert scores.min() < 0.8  # lr 1e-5 does not learn in 60 epochs: the search had a choice


def test_cross_val_score_on_iris(iris):
    x, y = iris
    model = make_pipeline(StandardScaler(),
                          MLPClassifier((16,), max_iter=100, learning_rate_init=1e-2,
                                        random_state=0))
    scores = cross_val_score(model, x, y, cv=5)
    assert len(scores) == 5 and scores.mean() >= 0.9


def test_string_labels_and_probabilities(iris):
    x, y = iris
    names = numpy.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier((16,), max_iter=50, learning_rate_init=1e-2, random_state=0)
    clf.fit(x, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    proba = clf.predict_proba(x)
    assert proba.shape == (150, 3)
    numpy.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (clf.predict(x) == clf.classes_[proba.argmax(axis=1)]).all()
    # oracle: softmax of the model's float64 scores, by scipy
    from scipy.special import softmax

    model = clf.model_
    model.eval()
    scores = model.forward(x.astype(numpy.float32)).astype(numpy.float64)
    numpy.testing.assert_allclose(proba, softmax(scores, axis=1), rtol=1e-5, atol=1e-7)
    numpy.testing.assert_allclose(clf.predict_log_proba(x), numpy.log(proba))


def test_regressor_multi_output_and_shapes():
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((300, 4))
    y = numpy.stack([x @ [1.0, -1.0, 0.5, 0.0], numpy.tanh(x[:, 0]) + x[:, 1]], axis=1)
    reg = MLPRegressor((32,), max_iter=150, learning_rate_init=1e-2, random_state=0,
                       early_stopping=True, n_iter_no_change=20).fit(x, y)
    assert reg.n_outputs_ == 2 and reg.predict(x).shape == (300, 2)
    assert r2_score(y, reg.predict(x)) > 0.95
    assert len(reg.validation_loss_curve_) == reg.n_iter_ == len(reg.loss_curve_)
    single = MLPRegressor((8,), max_iter=5, random_state=0).fit(x, y[:, 0])
    assert single.n_outputs_ == 1 and single.predict(x).shape == (300,)


def test_random_state_makes_fits_reproducible(iris):
    x, y = iris
    fit = lambda seed: MLPClassifier((8,), max_iter=5, random_state=seed).fit(x, y)  # noqa: E731
    numpy.testing.assert_array_equal(fit(1).predict_proba(x), fit(1).predict_proba(x))
    assert not numpy.array_equal(fit(1).predict_proba(x), fit(2).predict_proba(x))


def test_integer_and_float64_inputs_train_in_float32(digits):
    x_train, _, y_train, _ = digits
    as_int = MLPClassifier((8,), max_iter=3, random_state=0).fit(x_train.astype(int), y_train)
    as_f32 = MLPClassifier((8,), max_iter=3, random_state=0).fit(
        x_train.astype(numpy.float32), y_train)
    assert as_int.model_.parameters()[0].data.dtype == numpy.float32
    numpy.testing.assert_array_equal(as_int.predict_proba(x_train), as_f32.predict_proba(x_train))


def test_integer_sample_weights_equal_repeated_rows(iris):
    """Weighted mean loss: weight 2 = the row twice (full batch, so the same updates)."""
    x, y = iris
    weights = numpy.random.default_rng(0).integers(0, 3, len(y))
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=20, batch_size=1000, random_state=0,
                  learning_rate_init=1e-2)
    weighted = MLPClassifier(**kwargs).fit(x, y, sample_weight=weights)
    repeated = MLPClassifier(**kwargs).fit(numpy.repeat(x, weights, axis=0),
                                           numpy.repeat(y, weights))
    numpy.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x),
                                  rtol=1e-4, atol=1e-6)
    unweighted = MLPClassifier(**kwargs).fit(x, y)
    assert not numpy.allclose(weighted.predict_proba(x), unweighted.predict_proba(x), rtol=1e-3)


def test_hyperparameters_map_to_ermlab_objects(iris):
    x, y = iris
    sgd = MLPClassifier((8, 4), activation="logistic", solver="sgd", momentum=0.8,
                        learning_rate_init=0.05, alpha=1e-3, l1=1e-4, batch_size=16,
                        max_iter=2, random_state=0).fit(x, y)
    config = sgd.config_
    assert config["hidden"] == (8, 4) and config["activation"] == "sigmoid"
    assert (config["optimizer"], config["lr"], config["momentum"], config["nesterov"]) == (
        "sgd", 0.05, 0.8, True)
    assert (config["l2"], config["l1"], config["batch_size"]) == (1e-3, 1e-4, 16)
    assert [type(m).__name__ for m in sgd.model_] == [
        "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    adam = MLPClassifier(beta_1=0.8, epsilon=1e-6, max_iter=1, random_state=0).fit(x, y)
    assert adam.config_["betas"] == (0.8, 0.999) and adam.config_["eps"] == 1e-6
    rms = MLPClassifier(solver="rmsprop", optimizer_params={"alpha": 0.9}, max_iter=1,
                        random_state=0).fit(x, y)
    assert rms.config_["optimizer"] == "rmsprop" and rms.config_["alpha"] == 0.9


def test_alpha_shrinks_the_weights(iris):
    x, y = iris
    norm = lambda clf: sum(float((p.data ** 2).sum())  # noqa: E731
                           for p in clf.model_.parameters() if p.regularize)
    kwargs = dict(hidden_layer_sizes=(16,), max_iter=60, learning_rate_init=1e-2,
                  random_state=0, n_iter_no_change=100)
    free = MLPClassifier(alpha=0.0, **kwargs).fit(x, y)
    decayed = MLPClassifier(alpha=0.05, **kwargs).fit(x, y)
    assert norm(decayed) < 0.5 * norm(free)


def test_early_stopping_stops_and_keeps_the_best_epoch(digits):
    x_train, _, y_train, _ = digits
    clf = MLPClassifier((32,), learning_rate_init=0.05, max_iter=200, early_stopping=True,
                        n_iter_no_change=3, random_state=0).fit(x_train / 16, y_train)
    assert clf.n_iter_ < 200
    assert clf.best_loss_ == pytest.approx(min(clf.validation_loss_curve_))


def test_invscaling_learning_rate_follows_scikit_learns_formula(iris):
    """α after epoch e = α₀ / (e·n + 1)^power_t, t counting examples seen."""
    x, y = iris
    clf = MLPClassifier((8,), solver="sgd", learning_rate="invscaling", power_t=0.25,
                        learning_rate_init=0.1, max_iter=4, random_state=0).fit(x, y)
    expected = [0.1 / (150 * epoch + 1) ** 0.25 for epoch in range(4)]
    numpy.testing.assert_allclose(clf.history_["lr"], expected, rtol=1e-12)


def test_adaptive_learning_rate_divides_by_five_then_stops(iris):
    x, y = iris
    clf = MLPClassifier((8,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.5,
                        n_iter_no_change=2, max_iter=500, random_state=0).fit(x, y)
    rates = numpy.array(clf.history_["lr"])
    ratios = rates[1:] / rates[:-1]
    assert numpy.isin(numpy.round(ratios, 12), [1.0, 0.2]).all()
    assert (ratios < 1).sum() >= 2  # divided at least twice
    # stopped by the rate floor: the last epoch's rate, divided once more, is ≤ 1e-6
    assert clf.n_iter_ < 500 and rates[-1] > 1e-6 >= 0.2 * rates[-1]


def test_divergence_is_a_clear_error(iris):
    from ermlab.training import DivergenceError

    x, y = iris
    error = pytest.raises(DivergenceError, match="training diverged: loss nan at epoch 2")
    with error, numpy.errstate(over="ignore", invalid="ignore"):
        MLPClassifier((), solver="sgd", learning_rate_init=1e38, max_iter=3,
                      random_state=0).fit(x, y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"solver": "lbfgs"}, "solver='lbfgs' is not supported"),
        ({"solver": "newton-cg"}, "unknown optimizer 'newton-cg'"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"batch_size": "all"}, "batch_size must be a positive integer or 'auto'"),
        ({"learning_rate": "optimal"}, "learning_rate must be 'constant', 'invscaling'"),
        ({"hidden_layer_sizes": (0,)}, "positive layer widths"),
        ({"alpha": -1.0}, "'l2' must be a finite number ≥ 0"),
        ({"early_stopping": True, "validation_fraction": 1.0}, "validation_fraction"),
        ({"optimizer_params": {"nonsense": 1}}, "unknown config key"),
    ],
)
def test_bad_hyperparameters_are_clear_errors(iris, params, message):
    x, y = iris
    with pytest.raises(ValueError, match=message):
        MLPClassifier(max_iter=1, **params).fit(x, y)


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(max_iter=1).fit(numpy.ones((5, 2)), ["a"] * 5)


def test_the_expected_failure_is_declared_where_users_find_it():
    """scikit-learn ≥ 1.6 lets only the caller of check_estimator declare expected failures
    (the _xfail_checks tag is gone): ermlab.sklearn exports the one check and the reason,
    and README says which check fails and why instead of "pass check_estimator"."""
    from pathlib import Path

    from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data

    import ermlab.sklearn

    assert set(EXPECTED_FAILED_CHECKS) == {"check_sample_weight_equivalence_on_dense_data"}
    assert "float32" in EXPECTED_FAILED_CHECKS["check_sample_weight_equivalence_on_dense_data"]
    with pytest.raises(AssertionError, match="not equivalent"):  # the declaration is needed
        check_sample_weight_equivalence_on_dense_data("MLPClassifier", MLPClassifier())
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    for text in (readme, " ".join(ermlab.sklearn.__doc__.split())):
        assert "check_sample_weight_equivalence_on_dense_data" in text
        assert "EXPECTED_FAILED_CHECKS" in text


@pytest.mark.parametrize(
    "params",
    [
        {"hidden_layer_sizes": numpy.int64(8)},
        {"hidden_layer_sizes": numpy.array([8, 4])},
        {"hidden_layer_sizes": [numpy.int32(8)], "batch_size": numpy.int64(16),
         "max_iter": numpy.int64(3), "n_iter_no_change": numpy.uint8(2),
         "random_state": numpy.int64(1)},
        {"learning_rate": "adaptive", "n_iter_no_change": numpy.int64(1)},
    ],
)
def test_numpy_integers_are_integers(iris, params):
    x, y = iris
    kwargs = {"max_iter": 3, "random_state": 0, **params}
    clf = MLPClassifier(**kwargs).fit(x, y)
    plain = MLPClassifier(**{key: value.tolist() if hasattr(value, "tolist") else value
                             for key, value in kwargs.items()}).fit(x, y)
    assert clf.config_ == plain.config_
    assert all(type(width) is int for width in clf.config_["hidden"])
    numpy.testing.assert_array_equal(clf.predict_proba(x), plain.predict_proba(x))


def test_grid_search_over_a_numpy_range_of_widths(iris):
    x, y = iris
    search = GridSearchCV(MLPClassifier(max_iter=5, random_state=0),
                          {"hidden_layer_sizes": numpy.arange(8, 24, 8)}, cv=2,
                          error_score="raise").fit(x, y)
    assert search.best_estimator_.config_["hidden"] in ((8,), (16,))


@pytest.mark.parametrize("width", [True, 8.0, "wide", (8, 2.5)])
def test_hidden_layer_sizes_that_are_not_integers_are_refused(iris, width):
    x, y = iris
    with pytest.raises(ValueError, match="positive layer widths"):
        MLPClassifier(hidden_layer_sizes=width, max_iter=1).fit(x, y)


class _EpochCounter:  # duck-typed: an event method, no Callback base class
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, trainer, logs):
        self.epochs += 1


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        ([1], r"callbacks\[0\] is not a callback: got 1 \(int\)"),
        (["progress"], r"callbacks\[0\] is not a callback: got 'progress'"),
        (_EpochCounter(), r"callbacks must be a list of callbacks"),
    ],
)
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_callbacks_that_are_not_callbacks_are_refused(iris, estimator, callbacks, message):
    x, y = iris
    with pytest.raises(TypeError, match=message):
        estimator(max_iter=1, callbacks=callbacks).fit(x, y)
    counter = _EpochCounter()
    estimator(max_iter=2, callbacks=[counter]).fit(x, y)
    assert counter.epochs == 2


def test_regressor_ravels_a_column_vector_y_as_scikit_learn_does():
    from sklearn.exceptions import DataConversionWarning
    from sklearn.neural_network import MLPRegressor as SklearnMLPRegressor

    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    y = x @ [1.0, -2.0, 0.5]
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        column = MLPRegressor(**kwargs).fit(x, y[:, None])
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        oracle = SklearnMLPRegressor(**kwargs).fit(x, y[:, None])
    assert column.predict(x).shape == oracle.predict(x).shape == (50,)
    assert column.n_outputs_ == 1
    numpy.testing.assert_array_equal(column.predict(x), MLPRegressor(**kwargs).fit(x, y).predict(x))


@pytest.mark.parametrize(
    ("estimator", "inputs", "message"),
    [
        (MLPClassifier, lambda x, y: (x * 1e300, y, None),
         r"X has a value beyond float32's range \(±3.403e\+38\): 5.1e\+300 at index \(0, 0\)"),
        (MLPRegressor, lambda x, y: (x, y * 1e300 + 1e39, None),
         r"y has a value beyond float32's range .*: 1e\+39 at index 0,"),
        (MLPClassifier, lambda x, y: (x, y, numpy.full(len(y), 1e39)),
         r"sample_weight has a value beyond float32's range"),
    ],
)
def test_values_beyond_float32_are_refused_at_fit(iris, estimator, inputs, message):
    x, y = iris
    x, y, weight = inputs(x, y.astype(float))
    with pytest.raises(ValueError, match=message):
        estimator(max_iter=1).fit(x, y, sample_weight=weight)


def test_convergence_warning_when_max_iter_ends_the_run(iris):
    """As scikit-learn's MLP: a warning when max_iter epochs ran and no stopping criterion
    (n_iter_no_change epochs without a tol improvement, the adaptive rate's floor) was met."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    x, y = iris
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        MLPClassifier((8,), max_iter=3, random_state=0).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        stopped = MLPClassifier((8,), max_iter=500, n_iter_no_change=1, tol=1.0,
                                random_state=0).fit(x, y)
        floored = MLPClassifier((8,), solver="sgd", learning_rate="adaptive",
                                learning_rate_init=0.5, n_iter_no_change=1, tol=1.0,
                                max_iter=500, random_state=0).fit(x, y)
    assert stopped.n_iter_ < 500 and floored.n_iter_ < 500
