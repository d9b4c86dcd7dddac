"""EASGD / EAMSGD: the update rules against a direct NumPy transcription of the paper's
algorithms on a 2-parameter least-squares problem, the elastic move by hand, bad options."""

import numpy as np
import pytest
from strategy_helpers import blobs, linear_grad, linear_trainer, mlp_trainer

from ermlab.distributed import EASGD, ParameterServer
from ermlab.nn.parameter import Parameter

W0 = np.array([1.0, -2.0])


def problem(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(16, 2)), rng.normal(size=(16, 1))


def reference(x, y, steps, workers, tau, alpha, eta, delta=0.0, synchronous=False):
    """Zhang et al. (2015), Algorithms 1-2 (asynchronous) and Eq. (5)-(6) (synchronous),
    workers taking turns, full-batch gradients."""
    centre = W0.copy()
    xs = [W0.copy() for _ in range(workers)]
    vs = [np.zeros(2) for _ in range(workers)]
    ts = [0] * workers
    round_moves = np.zeros(2)
    for step in range(steps):
        i = step % workers
        x_i = xs[i].copy()
        g = linear_grad(x_i + delta * vs[i], x, y)
        if ts[i] % tau == 0:
            move = alpha * (x_i - centre)
            xs[i] = xs[i] - move
            if synchronous:
                round_moves += move
            else:
                centre = centre + move
        if delta:
            vs[i] = delta * vs[i] - eta * g
            xs[i] = xs[i] + vs[i]
        else:
            xs[i] = xs[i] - eta * g
        ts[i] += 1
        if synchronous and i == workers - 1:
            centre, round_moves = centre + round_moves, np.zeros(2)
    return centre, xs


@pytest.mark.parametrize("workers, tau, delta, synchronous", [
    (2, 1, 0.0, False), (3, 2, 0.0, False), (3, 2, 0.9, False),
    (2, 1, 0.0, True), (3, 2, 0.5, True),
])
def test_update_rules_match_the_paper(workers, tau, delta, synchronous):
    x, y = problem()
    steps, alpha, eta = 12, 0.2, 0.05
    trainer = linear_trainer(EASGD(workers=workers, tau=tau, alpha=alpha, lr=eta,
                                   momentum=delta, asynchronous=not synchronous))
    trainer.fit(x, y, epochs=steps, batch_size=None)
    centre, xs = reference(x, y, steps, workers, tau, alpha, eta, delta, synchronous)
    np.testing.assert_allclose(trainer.model.weight.data[0], centre, rtol=1e-12)
    for worker, expected in zip(trainer.strategy._workers, xs):
        np.testing.assert_allclose(worker.replica.params[0].data[0], expected, rtol=1e-12)
    assert np.abs(centre - W0).max() > 1e-3  # the centre moved


def test_first_elastic_moves_by_hand():
    """Two workers, τ = 1: worker 0 and 1 both step from w₀ (no pull yet: x = x̃); on its
    second turn worker 0 pulls the centre by α (x₀ − w₀) = −αη g(w₀)."""
    x, y = problem(1)
    alpha, eta = 0.3, 0.1
    trainer = linear_trainer(EASGD(workers=2, alpha=alpha, lr=eta))
    trainer.fit(x, y, epochs=3, batch_size=None)
    g0 = linear_grad(W0, x, y)
    np.testing.assert_allclose(trainer.model.weight.data[0], W0 - alpha * eta * g0, rtol=1e-13)


def test_lr_defaults_to_the_trainers_optimizer():
    x, y = problem(2)
    given = linear_trainer(EASGD(workers=2, alpha=0.2, lr=0.07))
    default = linear_trainer(EASGD(workers=2, alpha=0.2), lr=0.07)
    given.fit(x, y, epochs=5, batch_size=None)
    default.fit(x, y, epochs=5, batch_size=None)
    assert np.array_equal(given.model.weight.data, default.model.weight.data)


def test_server_elastic_move_by_hand():
    server = ParameterServer({"w": Parameter(np.array([1.0, 2.0]))})
    moved = server.elastic({"w": np.array([3.0, 0.0])}, 0.25)
    np.testing.assert_allclose(moved["w"], [0.5, -0.5])
    np.testing.assert_allclose(server.params["w"].data, [1.5, 1.5])
    assert server.version == 1


def test_easgd_learns_a_classifier_and_logs_the_distance():
    x, y = blobs(96)
    trainer = mlp_trainer(strategy=EASGD(workers=4, tau=2))
    before = trainer.evaluate(x, y)["loss"]
    history = trainer.fit(x, y, epochs=6, batch_size=8)
    after = trainer.evaluate(x, y)
    assert after["loss"] < before / 3 and after["accuracy"] > 0.8, (before, after)
    assert all(d > 0 for d in history["elastic_distance"])


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers to be an integer ≥ 1"),
    ({"tau": 0}, "tau to be an integer ≥ 1; got 0"),
    ({"alpha": 0.0}, r"alpha in \(0.0, 1.0\); got 0.0"),
    ({"alpha": 1.0}, r"alpha in \(0.0, 1.0\); got 1.0"),
    ({"lr": -1.0}, r"lr in \(0.0, ∞\)"),
    ({"momentum": 1.0}, r"momentum in \[0.0, 1.0\)"),
    ({"asynchronous": "yes"}, "asynchronous to be True or False"),
    ({"workers": 4, "alpha": 0.3, "asynchronous": False}, "workers·alpha < 1"),
    ({"delay": 3, "asynchronous": False}, "only the asynchronous variant"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        EASGD(**options)
