"""The lab's problems: exact gradients (finite differences, closed forms), known minima,
the published architectures' sizes, any IDX folder, budgets and errors."""

import math

import numpy as np
import pytest

from ermlab import optim
from ermlab.data.idx import write_idx
from ermlab.lab import problems
from ermlab.lab.problems import catalog, functions

FUNCTION_NAMES = sorted(functions.FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_function_gradients_match_central_differences(name):
    f = functions.FUNCTIONS[name].function
    rng = np.random.default_rng(0)
    for point in rng.uniform(-2, 2, size=(5, 2)):
        _, grad = f(point)
        h = 1e-6
        numeric = [(f(point + h * e)[0] - f(point - h * e)[0]) / (2 * h) for e in np.eye(2)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in FUNCTION_NAMES if functions.FUNCTIONS[n].minima])
def test_known_minima_are_stationary_with_the_stated_value(name):
    test = functions.FUNCTIONS[name]
    for minimum in test.minima:
        value, grad = test.function(np.array(minimum))
        assert value == pytest.approx(test.minimum_value, abs=1e-9)
        assert np.abs(grad).max() < 1e-4


def test_saddles_have_zero_gradient_and_indefinite_curvature_at_the_origin():
    for name in ("saddle", "monkey_saddle"):
        f = functions.FUNCTIONS[name].function
        assert np.all(f(np.zeros(2))[1] == 0)
        # along x the function rises (or is flat to second order), along y it falls
        assert f(np.array([0.1, 0.0]))[0] >= 0 and f(np.array([0.1, 0.1]))[0] < \
            f(np.array([0.1, 0.0]))[0]


def test_gradient_descent_on_the_quadratic_follows_the_closed_form():
    """θ_T = (1 − ηλ_i)^T θ_0 per coordinate, λ = (1, κ)."""
    problem = problems.get("quadratic", epochs=3, steps_per_epoch=7)
    eta = 0.03
    curves = problem.train(lambda params: optim.SGD(params, lr=eta), seed=0)
    start = np.array(functions.FUNCTIONS["quadratic"].start)
    lam = np.array([1.0, functions.CONDITION])
    for t, point in enumerate(curves["trajectory"]):
        np.testing.assert_allclose(point, (1 - eta * lam) ** t * start, rtol=1e-12)
    final = (1 - eta * lam) ** 21 * start
    assert curves["train_losses"][-1] == pytest.approx(0.5 * np.sum(lam * final**2), rel=1e-12)
    assert len(curves["train_losses"]) == 4 and len(curves["minibatch_train_losses"]) == 21


def test_any_optimizer_reaches_the_booth_minimum():
    problem = problems.get("booth", epochs=100, steps_per_epoch=20)
    curves = problem.train(lambda params: optim.Adam(params, lr=0.1), seed=0)
    np.testing.assert_allclose(curves["trajectory"][-1], [1, 3], atol=1e-3)


def test_gradient_noise_is_seeded_and_has_the_stated_size():
    problem = problems.get("quadratic_noisy", epochs=1, steps_per_epoch=2000)
    assert problem.noise == 1.0 and problem.problem_name == "quadratic_noisy"

    def run(seed):
        return np.array(problem.train(lambda p: optim.SGD(p, lr=1e-9), seed=seed)["trajectory"])

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    steps = np.diff(a, axis=0) / -1e-9  # the gradients seen, θ barely moves
    noise = steps - np.array([a[0, 0], functions.CONDITION * a[0, 1]])
    assert noise.std(axis=0) == pytest.approx([1.0, 1.0], rel=0.06)
    assert np.abs(noise.mean(axis=0)).max() < 0.1


def test_noisy_quadratic_model_loss_and_gradient_are_the_closed_forms():
    from ermlab import losses

    problem = problems.get("noisy_quadratic", budget="tiny")
    data = problem.split()
    model = catalog.nqm_model(problem, data.x_train.shape[1:], 100, np.random.default_rng(0))
    h = catalog.nqm_curvature()
    d = np.sqrt(100 * h / 2)
    x = data.x_train[:50].astype(np.float64)
    c = x / d
    theta = model.theta.data.astype(np.float64)
    loss = losses.get("mse")
    value = loss.forward(model.forward(data.x_train[:50]), data.y_train[:50])
    expected = np.mean(0.5 * np.sum(h * (theta - c) ** 2, axis=1))
    assert value == pytest.approx(expected, rel=1e-4)
    model.zero_grad()
    model.backward(loss.backward(), input_grad=False)
    np.testing.assert_allclose(model.theta.grad, h * (theta - c.mean(axis=0)), rtol=1e-4,
                               atol=1e-6)


def test_published_architecture_sizes():
    problem = problems.get("fmnist_2c2d", budget="tiny")
    net = catalog.net_2c2d(problem, (1, 28, 28), 10, np.random.default_rng(0))
    # DeepOBS's 2c2d: 832 + 51,264 + 3,212,288 + 10,250 parameters
    assert net.num_parameters() == 3_274_634
    assert net.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    mlp = catalog.mlp_1000(problem, (784,), 10, np.random.default_rng(0))
    assert mlp.num_parameters() == 785 * 1000 + 1001 * 1000 + 1001 * 10
    relu4 = catalog.relu4(problem, (10,), 10, np.random.default_rng(0))
    assert relu4.num_parameters() == 11 * 32 + 2 * 33 * 32 + 33 * 10


def write_tiny_idx(folder, n_train=60, n_test=20, size=8):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 3, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, size, size))
        for image, label in zip(images, labels):  # the class is where the bright block is
            image[:size // 2, :size // 2] += 200 * (label == 0)
            image[:size // 2, size // 2:] += 200 * (label == 1)
            image[size // 2:] += 200 * (label == 2)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_learning_problems_train_on_any_idx_folder(tmp_path):
    write_tiny_idx(tmp_path)
    for name in ("logreg", "fmnist_2c2d"):
        problem = problems.get(name, budget="tiny", data_path=str(tmp_path), n_train=40,
                               n_valid=20, n_test=20, epochs=2, batch_size=8)
        curves = problem.train(lambda p: optim.Adam(p, lr=3e-2), seed=0)
        for key in ("train_losses", "valid_losses", "test_losses", "train_accuracies",
                    "valid_accuracies", "test_accuracies", "train_times"):
            assert len(curves[key]) == 3, key
        assert curves["train_times"][0] == 0 and curves["train_times"][2] > curves[
            "train_times"][1]
        assert len(curves["minibatch_train_losses"]) == 2 * math.ceil(40 / problem.batch_size)
        assert curves["test_accuracies"][-1] > 0.8  # three well-separated classes


def test_the_validation_split_is_held_out_and_the_same_for_every_run(tmp_path):
    write_tiny_idx(tmp_path)
    problem = problems.get("logreg", data_path=str(tmp_path), n_train=30, n_valid=25, n_test=10)
    data = problem.split()
    assert len(data.x_train) == 30 and len(data.x_valid) == 25 and len(data.x_test) == 10
    rows = {row.tobytes() for row in data.x_train}
    assert not any(row.tobytes() in rows for row in data.x_valid)
    again = problems.get("logreg", data_path=str(tmp_path), n_train=30, n_valid=25,
                         n_test=10, epochs=7).split()
    np.testing.assert_array_equal(again.x_valid, data.x_valid)


def test_same_seed_same_run_other_seed_other_run():
    problem = problems.get("relu4", budget="tiny", epochs=1)

    def run(seed):
        return problem.train(lambda p: optim.SGD(p, lr=0.1), seed=seed)["minibatch_train_losses"]

    assert run(3) == run(3) and run(3) != run(4)


def test_divergence_stops_the_run_and_says_so():
    problem = problems.get("relu4", budget="tiny", epochs=3)
    curves = problem.train(lambda p: optim.SGD(p, lr=1e12), seed=0)
    assert curves["diverged"]
    assert len(curves["train_losses"]) == len(curves["train_times"]) < 4


def test_user_problem_from_a_description():
    problem = problems.user_problem({"name": "digits_mlp", "dataset": "digits", "hidden": [16],
                                     "epochs": 2, "batch_size": 64, "n_valid": 200, "l2": 1e-4})
    assert problem.problem_name == "digits_mlp" and problem.weight_decay == 1e-4
    curves = problem.train(lambda p: optim.Adam(p, lr=1e-2), seed=0)
    assert curves["test_accuracies"][-1] > 0.5
    with pytest.raises(ValueError, match="needs 'dataset'"):
        problems.user_problem({"hidden": [16]})


def test_bad_names_budgets_and_settings_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown problem 'nope'.*rosenbrock"):
        problems.get("nope")
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        problems.get("logreg", budget="huge")
    with pytest.raises(ValueError, match="learning problem takes epochs"):
        problems.get("logreg", noise=1.0)
    with pytest.raises(ValueError, match="epochs must be an integer ≥ 1"):
        problems.get("logreg", epochs=0)
    with pytest.raises(ValueError, match="noise is a standard deviation"):
        problems.get("beale", noise=-1.0)
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        problems.get("logreg", data_path=str(tmp_path), n_valid=5).split()
