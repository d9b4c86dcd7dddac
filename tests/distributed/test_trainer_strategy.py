"""Trainer(strategy=...): the strategy replaces the update, everything else stays: callbacks,
early stopping, history, validation, checkpoints (with the strategy's state) and resuming."""

import numpy as np
import pytest
from strategy_helpers import blobs

from ermlab import losses, nn, optim
from ermlab.distributed import (
    EASGD,
    DelayTolerantAdagrad,
    Downpour,
    Hogwild,
    OnRay,
    SyncDataParallel,
)
from ermlab.training import Trainer
from ermlab.training.callbacks import EarlyStopping
from ermlab.training.checkpoint import CheckpointError

CASES = {
    "downpour-dt-adagrad": (lambda: Downpour(workers=3, n_fetch=2, n_push=2, delay=2),
                            lambda p: DelayTolerantAdagrad(p, lr=0.1)),
    "downpour-sharded": (lambda: Downpour(workers=2, n_push=2, shards=2),
                         lambda p: optim.Adam(p, lr=0.01)),
    "eamsgd-async-delay": (lambda: EASGD(workers=3, tau=2, momentum=0.5, delay=3),
                           lambda p: optim.SGD(p, lr=0.05)),
    "easgd-sync": (lambda: EASGD(workers=2, asynchronous=False),
                   lambda p: optim.SGD(p, lr=0.05)),
    "sync": (lambda: SyncDataParallel(workers=3), lambda p: optim.SGD(p, lr=0.1, momentum=0.9)),
}


def build(case, callbacks=()):
    make_strategy, make_opt = CASES[case]
    model = nn.mlp([4, 16, 3], dropout=0.2, rng=0, dtype=np.float64)
    return Trainer(model, losses.SoftmaxCrossEntropy(), make_opt(model.parameters()), rng=1,
                   callbacks=callbacks, strategy=make_strategy())


def without_time(history):
    return {k: v for k, v in history.items() if k != "time"}


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_round_trip_resumes_bit_for_bit(case, tmp_path):
    x, y = blobs(60)
    val = blobs(30, seed=5)
    whole = build(case)
    whole.fit(x, y, epochs=4, batch_size=8, validation_data=val)
    first = build(case)
    first.fit(x, y, epochs=2, batch_size=8, validation_data=val)
    first.save(tmp_path / "ckpt.safetensors")
    resumed = build(case)
    resumed.fit(x, y, epochs=2, batch_size=8, validation_data=val,
                resume_from=tmp_path / "ckpt.safetensors")
    for k, v in whole.model.state_dict().items():
        assert np.array_equal(v, resumed.model.state_dict()[k]), k
    assert without_time(whole.history) == without_time(resumed.history)
    assert resumed.epoch == 4 and resumed.step == whole.step
    if isinstance(whole.strategy, Downpour):
        assert whole.strategy.staleness() == resumed.strategy.staleness()
        assert max(whole.strategy.staleness()) >= 1  # stale gradients were in flight


def test_resuming_needs_the_same_strategy(tmp_path):
    x, y = blobs(40)
    trainer = build("sync")
    trainer.fit(x, y, epochs=1, batch_size=8)
    trainer.save(tmp_path / "c.safetensors")
    other = build("easgd-sync")
    with pytest.raises(CheckpointError, match="saved with strategy SyncDataParallel; this run "
                                              "uses EASGD"):
        other.resume(tmp_path / "c.safetensors")


def test_early_stopping_sees_the_strategys_logs():
    """Staleness grows from 1.5 (first round unstale) to 2 with 3 workers: patience 0 stops."""
    x, y = blobs(96)
    stop = EarlyStopping(monitor="staleness_mean", mode="min", patience=0)
    model = nn.mlp([4, 8, 3], rng=0, dtype=np.float64)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.Adagrad(model.parameters()),
                      callbacks=[stop], rng=1, strategy=Downpour(workers=3))
    history = trainer.fit(x, y, epochs=10, batch_size=8)
    assert history["staleness_mean"] == [1.5, 2.0]
    assert trainer.epoch == 2 and trainer.stop_training


def test_default_trainer_has_no_strategy_and_saves_none(tmp_path):
    from ermlab.training.checkpoint import read_checkpoint

    x, y = blobs(40)
    model = nn.mlp([4, 8, 3], rng=0, dtype=np.float64)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, y, epochs=1, batch_size=8)
    assert trainer.strategy is None
    assert read_checkpoint(trainer.save(tmp_path / "c.safetensors")).strategy is None


ALGORITHMS = {  # name recorded in the state: a strategy of that algorithm
    "Downpour": lambda: Downpour(workers=2),
    "EASGD": lambda: EASGD(workers=2),
    "EASGD (synchronous)": lambda: EASGD(workers=2, asynchronous=False),
    "SyncDataParallel": lambda: SyncDataParallel(workers=2),
    "Hogwild": lambda: Hogwild(workers=1),
}


def saved_state(name):
    """The state of a fitted run (Hogwild!'s holds the algorithm alone: no fit needed)."""
    strategy = ALGORITHMS[name]()
    if name != "Hogwild":
        model = nn.mlp([4, 8, 3], rng=0, dtype=np.float64)
        trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                          optim.SGD(model.parameters(), lr=0.1), rng=1, strategy=strategy)
        trainer.fit(*blobs(24), epochs=1, batch_size=8)
    return strategy.state_dict()


@pytest.mark.parametrize("saved", list(ALGORITHMS))
def test_a_state_of_another_algorithm_is_refused_naming_both(saved):
    """Each strategy records its algorithm in its state; every other one refuses it in
    load_state_dict, in one line naming both, and takes nothing (the Trainer's resume turns
    this into a CheckpointError, as for the shard count)."""
    state = saved_state(saved)
    assert state["algorithm"] == saved
    for name, make in ALGORITHMS.items():
        strategy = make()
        before = strategy.state_dict()
        if name == saved:
            strategy.load_state_dict(state)
            continue
        with pytest.raises(ValueError) as error:
            strategy.load_state_dict(state)
        message = str(error.value)
        assert message == (f"the saved state was written by {saved}; this run is {name} — "
                           f"resume it with {saved}")
        assert strategy.state_dict() == before


@pytest.mark.parametrize("saved, other", [("Downpour", "EASGD"), ("EASGD", "Downpour"),
                                          ("Downpour", "SyncDataParallel")])
def test_onray_refuses_a_state_of_another_algorithm_naming_both(saved, other):
    """OnRay's checkpoints are of one class whatever it runs: the algorithm recorded decides
    (no Ray started: load_state_dict only; through a resume: test_ray.py's round trip)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    state = {"algorithm": saved, "clock": 3, "server": {"version": 3, "staleness_counts": {}}}
    assert OnRay(ALGORITHMS[saved]()).state_dict() == {"algorithm": saved}
    refusing = OnRay(ALGORITHMS[other]())
    with pytest.raises(ValueError, match=rf"^the saved state was written by OnRay\({saved}\); "
                                         rf"this run is OnRay\({other}\) — resume it with "
                                         rf"OnRay\({saved}\)$"):
        refusing.load_state_dict(state)
    assert refusing.state_dict() == {"algorithm": other}  # nothing taken
    ray_run = OnRay(ALGORITHMS[saved]())
    ray_run.load_state_dict(state)
    assert ray_run.state_dict() == state


def test_a_state_saved_before_the_algorithm_was_recorded_still_loads():
    """Checkpoints written before the algorithm was recorded carry none: not checked."""
    state = saved_state("Downpour")
    del state["algorithm"]
    strategy = Downpour(workers=2)
    strategy.load_state_dict(state)
    assert strategy._pending is state
    Hogwild(workers=1).load_state_dict({})
