"""Ensembles: probability averaging by hand, and the snapshot schedule of Huang et al. (2017)."""

import math

import numpy as np
import pytest

from ermlab import nn
from ermlab.ensemble import Ensemble, SnapshotEnsemble, softmax
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.optim.sgd import SGD
from ermlab.training import Callback, Trainer


def model(seed, dropout=0.0):
    layers = [nn.Linear(4, 8, rng=seed, dtype=np.float64), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout, rng=seed))
    return nn.Sequential(*layers, nn.Linear(8, 3, rng=seed + 100, dtype=np.float64))


def np_softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_average_of_member_probabilities():
    members = [model(s) for s in range(3)]
    x = np.random.default_rng(0).standard_normal((10, 4))
    probs = [np_softmax(m.forward(x)) for m in members]
    ensemble = Ensemble(members)
    np.testing.assert_allclose(ensemble.predict_proba(x, batch_size=3), np.mean(probs, axis=0),
                               rtol=1e-14)
    weighted = Ensemble(members, weights=[1, 0, 3]).predict_proba(x)
    np.testing.assert_allclose(weighted, 0.25 * probs[0] + 0.75 * probs[2], rtol=1e-14)
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0, rtol=1e-14)
    assert np.array_equal(ensemble.predict(x), np.mean(probs, axis=0).argmax(axis=1))
    same = Ensemble([members[0]], to_probabilities=None).predict_proba(x)
    np.testing.assert_allclose(same, members[0].forward(x), rtol=1e-14)


def test_members_run_in_eval_mode_and_keep_their_mode():
    member = model(0, dropout=0.5)
    x = np.random.default_rng(1).standard_normal((6, 4))
    ensemble = Ensemble([member])
    first = ensemble.predict_proba(x)
    np.testing.assert_array_equal(ensemble.predict_proba(x), first)  # no dropout noise
    assert member.training
    member.eval()
    np.testing.assert_allclose(first, softmax(member.forward(x)), rtol=1e-14)
    ensemble.predict_proba(x)
    assert not member.training


def test_from_snapshots_copies_the_model():
    base = model(0)
    states = [model(1).state_dict(), model(2).state_dict()]
    ensemble = Ensemble.from_snapshots(base, states)
    x = np.random.default_rng(2).standard_normal((5, 4))
    expected = (np_softmax(model(1).forward(x)) + np_softmax(model(2).forward(x))) / 2
    np.testing.assert_allclose(ensemble.predict_proba(x), expected, rtol=1e-14)
    np.testing.assert_array_equal(base.state_dict()["0.weight"], model(0).state_dict()["0.weight"])


class Recorder(Callback):
    order = -1  # before SnapshotEnsemble: sees the rate the update just used

    def __init__(self):
        self.lrs, self.states = [], []

    def on_batch_end(self, trainer, logs):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, trainer, logs):
        self.states.append(trainer.model.state_dict())


def test_snapshot_ensemble_schedule_and_snapshots():
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 4))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    net = model(0)
    lr0, cycle_epochs, epochs, steps = 0.2, 2, 6, 4
    snapshot, recorder = SnapshotEnsemble(cycle_epochs), Recorder()
    trainer = Trainer(net, SoftmaxCrossEntropy(), SGD(net.parameters(), lr=lr0),
                      callbacks=[snapshot, recorder])
    trainer.fit(x, y, epochs=epochs, batch_size=10, rng=0)
    C = cycle_epochs * steps  # ⌈T/M⌉ updates per cycle
    paper = [lr0 / 2 * (math.cos(math.pi * ((t - 1) % C) / C) + 1)
             for t in range(1, epochs * steps + 1)]
    np.testing.assert_allclose(recorder.lrs, paper, rtol=1e-12)
    assert recorder.lrs[0] == lr0 and recorder.lrs[C] == lr0  # warm restarts
    assert len(snapshot.snapshots) == epochs // cycle_epochs
    for k, state in enumerate(snapshot.snapshots):
        reference = recorder.states[(k + 1) * cycle_epochs - 1]
        for key in reference:
            np.testing.assert_array_equal(state[key], reference[key])
    ensemble = snapshot.ensemble(net, last=2)
    assert len(ensemble) == 2
    members = [model(0), model(0)]
    members[0].load_state_dict(snapshot.snapshots[1])
    members[1].load_state_dict(snapshot.snapshots[2])
    np.testing.assert_allclose(ensemble.predict_proba(x), Ensemble(members).predict_proba(x),
                               rtol=1e-14)
    restored = SnapshotEnsemble(cycle_epochs)
    restored.load_state_dict(snapshot.state_dict())
    assert len(restored.snapshots) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(ValueError, match="nonnegative"):
        Ensemble([model(0), model(1)], weights=[1, -1])
    with pytest.raises(ValueError, match="2 nonnegative numbers"):
        Ensemble([model(0), model(1)], weights=[1])
    with pytest.raises(ValueError, match="cycle_epochs"):
        SnapshotEnsemble(0)
    with pytest.raises(ValueError, match="no snapshots yet"):
        SnapshotEnsemble(2).ensemble(model(0))


def test_snapshot_ensemble_refuses_a_last_below_one():
    """``snapshots[-0:]`` is every snapshot: last=0 must be refused, not read as "all"."""
    snapshot = SnapshotEnsemble(1)
    snapshot.snapshots = [model(s).state_dict() for s in range(3)]
    for last in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"last must be an integer ≥ 1 .*3 snapshots"):
            snapshot.ensemble(model(0), last=last)
    assert len(snapshot.ensemble(model(0), last=1)) == 1
    assert len(snapshot.ensemble(model(0), last=5)) == 3


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_weights_must_be_finite(bad):
    """A NaN or infinite weight would make every averaged probability NaN."""
    with pytest.raises(ValueError, match=r"2 nonnegative numbers, finite and not all 0"):
        Ensemble([model(0), model(1)], weights=[bad, 1])


def _snapshot_run(cycle_epochs=2):
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 4))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)
    net = model(0)
    snapshot, recorder = SnapshotEnsemble(cycle_epochs), Recorder()
    trainer = Trainer(net, SoftmaxCrossEntropy(), SGD(net.parameters(), lr=0.2),
                      callbacks=[snapshot, recorder], rng=0)
    return trainer, snapshot, recorder, x, y


def _paper_rates(lr0, cycle_updates, updates):
    """Huang et al. (2017): α(t) = (α₀/2)(cos(π mod(t − 1, C) / C) + 1), t = 1, 2, …"""
    return [lr0 / 2 * (math.cos(math.pi * ((t - 1) % cycle_updates) / cycle_updates) + 1)
            for t in range(1, updates + 1)]


def _snapshot_epochs(snapshot, states):
    """The epochs whose end-of-epoch weights (``states``, epoch 1 first) each snapshot holds."""
    return [next(e + 1 for e, state in enumerate(states)
                 if all(np.array_equal(state[k], s[k]) for k in s)) for s in snapshot.snapshots]


def test_snapshot_schedule_continues_across_fit_calls():
    """fit(3) + fit(3) is fit(6): the second call continues the cosine cycle, no restart."""
    trainer, snapshot, recorder, x, y = _snapshot_run()
    trainer.fit(x, y, epochs=3, batch_size=10)
    trainer.fit(x, y, epochs=3, batch_size=10)
    np.testing.assert_allclose(recorder.lrs, _paper_rates(0.2, 2 * 4, 6 * 4), rtol=1e-12)
    assert _snapshot_epochs(snapshot, recorder.states) == [2, 4, 6]


def test_snapshot_schedule_continues_after_a_resume(tmp_path):
    """fit(3), save, resume in a fresh trainer, fit(3): the same rates as fit(6)."""
    trainer, _, first, x, y = _snapshot_run()
    trainer.fit(x, y, epochs=3, batch_size=10)
    trainer.save(tmp_path / "ck.safetensors")
    resumed, snapshot, second, _, _ = _snapshot_run()
    resumed.fit(x, y, epochs=3, batch_size=10, resume_from=tmp_path / "ck.safetensors")
    np.testing.assert_allclose(first.lrs + second.lrs, _paper_rates(0.2, 2 * 4, 6 * 4),
                               rtol=1e-12)
    assert len(snapshot.snapshots) == 3
    assert _snapshot_epochs(snapshot, first.states + second.states) == [2, 4, 6]


def test_snapshot_load_state_dict_sets_the_scheduled_rate():
    """Loading a state part-way through a cycle sets the rate of the next update, α(T_cur + 1)."""
    trainer, snapshot, _, x, y = _snapshot_run()
    trainer.fit(x, y, epochs=1, batch_size=10)  # 4 updates: the rate is now α(5)
    state = snapshot.state_dict()
    fresh_trainer, fresh, _, _, _ = _snapshot_run()
    fresh.on_train_begin(fresh_trainer, {"steps_per_epoch": 4, "initial_epoch": 0})
    fresh.load_state_dict(state)
    assert fresh_trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
        _paper_rates(0.2, 8, 5)[4], rel=1e-12)
