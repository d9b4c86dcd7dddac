"""Downpour SGD on the in-process server: equality with single-process training, the
client's n_fetch / n_push rule by hand, measured staleness, shards, bad options."""

import numpy as np
import pytest
from strategy_helpers import blobs, linear_grad, linear_trainer, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import Downpour


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.Adagrad(p, lr=0.1),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
], ids=["adagrad", "sgd-momentum"])
def test_one_worker_no_delay_is_single_process_training(make_opt):
    x, y = blobs(90)
    single = mlp_trainer(optimizer=make_opt)
    down = mlp_trainer(optimizer=make_opt, strategy=Downpour(workers=1, n_fetch=1, n_push=1))
    h1 = single.fit(x, y, epochs=4, batch_size=8)
    h2 = down.fit(x, y, epochs=4, batch_size=8)
    for k, v in weights(single).items():
        assert np.array_equal(v, weights(down)[k]), k
    assert h1["loss"] == h2["loss"] and h1["accuracy"] == h2["accuracy"]
    assert h2["staleness_max"] == [0] * 4 and h2["server_updates"][-1] == single.step


def test_round_robin_workers_give_staleness_workers_minus_one():
    x, y = blobs(96)
    down = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.1), strategy=Downpour(workers=3))
    history = down.fit(x, y, epochs=2, batch_size=8)  # 24 pushes
    assert down.strategy.staleness() == {0: 3, 2: 21}
    assert history["staleness_max"] == [2, 2]
    assert history["staleness_mean"][1] == 2.0


@pytest.mark.parametrize("delay", [1, 4])
def test_simulated_delay_makes_every_gradient_delay_updates_stale(delay):
    x, y = blobs(96)
    down = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.1),
                       strategy=Downpour(workers=1, delay=delay))
    down.fit(x, y, epochs=1, batch_size=8)  # 12 pushes
    assert down.strategy.staleness() == {**{t: 1 for t in range(delay)}, delay: 12 - delay}


def test_delayed_gradients_by_hand():
    """delay 1, one worker, SGD: θ_{t+1} = θ_t − γ g(θ_{t−1}) (θ_{−1} = θ_0)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    trainer = linear_trainer(Downpour(workers=1, delay=1), lr=0.1)
    trainer.fit(x, y, epochs=4, batch_size=None)
    w_prev = w = np.array([1.0, -2.0])
    for _ in range(4):
        w, w_prev = w - 0.1 * linear_grad(w_prev, x, y), w
    np.testing.assert_allclose(trainer.model.weight.data[0], w, rtol=1e-12)


def test_n_push_sends_the_sum_of_the_accrued_gradients_by_hand():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    trainer = linear_trainer(Downpour(workers=1, n_push=2), lr=0.1)
    trainer.fit(x, y, epochs=4, batch_size=None)  # full batch: 2 pushes of 2 gradients each
    w = np.array([1.0, -2.0])
    for _ in range(2):
        w = w - 0.1 * 2 * linear_grad(w, x, y)
    np.testing.assert_allclose(trainer.model.weight.data[0], w, rtol=1e-12)
    assert trainer.strategy.staleness() == {0: 2}


def test_n_fetch_and_local_steps_by_hand():
    """n_fetch = 2, local_lr α: the second gradient is taken at θ_0 − α g(θ_0), 1 update stale."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 2)), rng.normal(size=(20, 1))
    trainer = linear_trainer(Downpour(workers=1, n_fetch=2, local_lr=0.05), lr=0.1)
    trainer.fit(x, y, epochs=2, batch_size=None)
    w0 = np.array([1.0, -2.0])
    g0 = linear_grad(w0, x, y)
    expected = w0 - 0.1 * g0 - 0.1 * linear_grad(w0 - 0.05 * g0, x, y)
    np.testing.assert_allclose(trainer.model.weight.data[0], expected, rtol=1e-12)
    assert trainer.strategy.staleness() == {0: 1, 1: 1}


def test_sharded_servers_equal_one_server():
    x, y = blobs(96)
    runs = []
    for shards in (1, 2, 4):
        trainer = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.1),
                              strategy=Downpour(workers=2, n_push=2, shards=shards))
        trainer.fit(x, y, epochs=2, batch_size=8)
        runs.append(weights(trainer))
    for other in runs[1:]:
        assert all(np.array_equal(runs[0][k], other[k]) for k in runs[0])


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers to be an integer ≥ 1; got 0"),
    ({"n_fetch": 0}, "n_fetch to be an integer ≥ 1; got 0"),
    ({"n_push": 1.5}, "n_push to be an integer ≥ 1; got 1.5"),
    ({"local_lr": -0.1}, r"local_lr in \[0.0, ∞\); got -0.1"),
    ({"delay": -1}, "delay to be an integer ≥ 0; got -1"),
    ({"shards": True}, "shards to be an integer ≥ 1; got True"),
])
def test_bad_options_are_refused_before_anything_starts(options, message):
    with pytest.raises(ValueError, match=message):
        Downpour(**options)


def test_bad_combinations_are_refused_when_the_trainer_is_built():
    with pytest.raises(ValueError, match="shards=9 is more than the model's 4 parameter arrays"):
        mlp_trainer(strategy=Downpour(shards=9))
    with pytest.raises(ValueError, match="LBFGS needs the full-batch closure"):
        mlp_trainer(strategy=Downpour(), optimizer=lambda p: optim.LBFGS(p))


def test_learning_rate_schedules_reach_sharded_servers():
    """Each shard runs its own optimizer copy; the Trainer's schedule still sets their lr."""
    from ermlab.optim.schedules import ExponentialLR
    from ermlab.training.callbacks import LearningRateScheduler

    x, y = blobs(64)
    runs = []
    for shards in (1, 2):
        trainer = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.3),
                              strategy=Downpour(workers=2, shards=shards))
        trainer.callbacks = [LearningRateScheduler(ExponentialLR(trainer.optimizer, gamma=0.1))]
        trainer.fit(x, y, epochs=3, batch_size=8)
        runs.append(weights(trainer))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])
