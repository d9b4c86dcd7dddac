"""Delay-tolerant AdaGrad (AdaptiveRevision): the update by hand, AdaGrad without delays,
and better than AdaGrad under the same large delays."""

import math

import numpy as np
import pytest
from strategy_helpers import blobs, linear_trainer, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import DelayTolerantAdagrad, Downpour
from ermlab.nn.parameter import Parameter


def test_update_by_hand_with_a_backlog():
    """γ = 0.5. g₁ = 2 read at ḡ = 0, no backlog: z = z' = 4, θ = 1 − γ·2/2.
    g₂ = 3 read before g₁ (ḡ^old = 0, ḡ^bck = 2): η_old = γ/2, z = 4 + 9 + 12 = 25,
    η = γ/5, θ ← θ − (γ/5)·3 + (γ/2 − γ/5)·2 (= θ).
    g₃ = −4 read after g₁ (ḡ^old = 2, ḡ = 5, ḡ^bck = 3): z = 25 + 16 − 24 = 17 < z' = 25,
    η = η_old = γ/5, θ ← θ + (γ/5)·4."""
    gamma = 0.5
    p = Parameter(np.array([1.0]))
    opt = DelayTolerantAdagrad([p], lr=gamma, eps=0.0, initial_accumulator_value=1e-300)
    read0 = opt.read_state()
    p.grad[...] = 2.0
    opt.step(read_state=read0)
    read1 = opt.read_state()
    np.testing.assert_allclose(p.data, [1 - gamma], rtol=1e-14)
    p.grad[...] = 3.0
    opt.step(read_state=read0)
    np.testing.assert_allclose(p.data, [1 - gamma - gamma / 5 * 3 + (gamma / 2 - gamma / 5) * 2],
                               rtol=1e-14)
    p.grad[...] = -4.0
    opt.step(read_state=read1)
    state = opt.state[p]
    np.testing.assert_allclose([state["z"][0], state["z_max"][0], state["gbar"][0]], [17, 25, 1])
    np.testing.assert_allclose(p.data, [1 - gamma + gamma / 5 * 4], rtol=1e-14)


def test_without_delay_it_is_adagrad_bit_for_bit():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4))
    a, b = Parameter(start.copy()), Parameter(start.copy())
    ada, dt = optim.Adagrad([a], lr=0.1), DelayTolerantAdagrad([b], lr=0.1)
    for _ in range(20):
        g = rng.normal(size=(3, 4))
        a.grad[...] = g
        b.grad[...] = g
        ada.step()
        dt.step(read_state=dt.read_state())
        assert np.array_equal(a.data, b.data)


def test_downpour_without_delay_equals_adagrad_training():
    x, y = blobs(64)
    plain = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.2))
    dt = mlp_trainer(optimizer=lambda p: DelayTolerantAdagrad(p, lr=0.2),
                     strategy=Downpour(workers=1))
    plain.fit(x, y, epochs=3, batch_size=8)
    dt.fit(x, y, epochs=3, batch_size=8)
    assert all(np.array_equal(v, weights(dt)[k]) for k, v in weights(plain).items())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lr", [1.0, 3.0])
def test_beats_adagrad_under_the_same_large_delays(seed, lr):
    """Linear least squares, every gradient 64 updates stale (McMahan & Streeter's regime
    of long delays): plain AdaGrad overshoots, the revised rates keep the loss ≥ 4× lower."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 2))
    y = (x @ np.array([3.0, -1.0]))[:, None] + 0.1 * rng.normal(size=(64, 1))
    losses = []
    for make in (lambda p: optim.Adagrad(p, lr=lr), lambda p: DelayTolerantAdagrad(p, lr=lr)):
        trainer = linear_trainer(Downpour(workers=1, delay=64), optimizer=make)
        trainer.fit(x, y, epochs=10, batch_size=4)
        losses.append(trainer.evaluate(x, y)["loss"])
    assert losses[1] < losses[0] / 4, losses


def test_bad_options():
    p = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="eps > 0 or initial_accumulator_value > 0"):
        DelayTolerantAdagrad(p, eps=0.0)
    with pytest.raises(ValueError, match="eps ≥ 0"):
        DelayTolerantAdagrad(p, eps=-1.0)


def _inverse_rate_form(w, grads, reads, alpha, beta, z0):
    """An independent transcription of AdaptiveRevision in the inverse-rate form of the dmlc
    parameter server's ``DTAdaGradHandle2`` (per coordinate, plain floats), with
    η⁻¹ = (√z' + β)/α:  w ← (η⁻¹ w − g + ḡ^bck (η⁻¹/η_old⁻¹ − 1)) / η⁻¹."""
    w = [float(v) for v in w]
    gbar, z, zmax = [0.0] * len(w), [z0] * len(w), [z0] * len(w)
    history = [list(gbar)]
    for g, read in zip(grads, reads):
        old = history[read]
        for i, gi in enumerate(g):
            bck = gbar[i] - old[i]
            z[i] += gi * gi + 2 * gi * bck
            inv_old = (math.sqrt(zmax[i]) + beta) / alpha
            zmax[i] = max(zmax[i], z[i])
            inv = (math.sqrt(zmax[i]) + beta) / alpha
            gbar[i] += gi
            w[i] = (inv * w[i] - gi + bck * (inv / inv_old - 1)) / inv
        history.append(list(gbar))
    return w


def test_random_delays_match_an_independent_inverse_rate_transcription():
    """30 updates of 5 coordinates, each gradient read 0–6 updates before it is applied."""
    rng = np.random.default_rng(3)
    start = rng.normal(size=5)
    grads = rng.normal(size=(30, 5)) * rng.uniform(0.1, 3.0, size=(30, 1))
    reads = [max(0, i - int(rng.integers(0, 7))) for i in range(30)]
    p = Parameter(start.copy())
    opt = DelayTolerantAdagrad([p], lr=0.4, eps=1e-3, initial_accumulator_value=0.5)
    states = [opt.read_state()]
    for g, read in zip(grads, reads):
        p.grad[...] = g
        opt.step(read_state=states[read])
        states.append(opt.read_state())
    expected = _inverse_rate_form(start, grads, reads, alpha=0.4, beta=1e-3, z0=0.5)
    np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)
    assert sum(i - r for i, r in enumerate(reads)) > 60  # the backlogs were not empty
