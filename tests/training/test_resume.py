"""Resuming continues bit for bit: 4 epochs in one go = 2 + save + fresh objects + load + 2."""

import numpy as np
import pytest
from training_helpers import Scripted, Snapshots, make_trainer, weights_equal

from ermlab import optim
from ermlab.optim.schedules import CosineAnnealingLR, StepLR
from ermlab.regularizers import L2
from ermlab.training import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    Trainer,
    read_checkpoint,
)


def sgd(params):
    return optim.SGD(params, lr=0.2, momentum=0.9, nesterov=True)


def adam(params):
    return optim.Adam(params, lr=0.01, betas=(0.8, 0.95))


def build(optimizer, seed, rng, schedule, callbacks=(), interval="update"):
    """A fresh run: new model (own init), optimizer, schedule and shuffling generator."""
    trainer = make_trainer(optimizer=optimizer, seed=seed, rng=rng)
    trainer.regularizer = L2(1e-3)
    trainer.callbacks = [LearningRateScheduler(schedule(trainer.optimizer), interval),
                         *callbacks]
    return trainer


def assert_identical(a, b):
    assert weights_equal(a.model.state_dict(), b.model.state_dict())
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]  # includes the scheduled lr
    for i in sa["state"]:
        for key, value in sa["state"][i].items():
            assert np.array_equal(value, sb["state"][i][key]), (i, key)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert a.epoch == b.epoch and a.step == b.step
    assert {k: v for k, v in a.history.items() if k != "time"} == {
        k: v for k, v in b.history.items() if k != "time"}


CASES = {
    "sgd-nesterov-steplr-per-update": (sgd, lambda o: StepLR(o, 7, 0.7), "update"),
    "adam-cosine-per-epoch": (adam, lambda o: CosineAnnealingLR(o, T_max=6), "epoch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_plus_two_epochs_equal_four(data, tmp_path, case):
    optimizer, schedule, interval = CASES[case]
    if optimizer is adam and not hasattr(optim, "Adam"):
        pytest.skip("Adam not available")
    x, y, xv, yv = data
    fit = dict(batch_size=10, validation_data=(xv, yv))
    straight = build(optimizer, seed=0, rng=42, schedule=schedule, interval=interval)
    straight.fit(x, y, epochs=4, **fit)

    first = build(optimizer, seed=0, rng=42, schedule=schedule, interval=interval)
    first.fit(x, y, epochs=2, **fit)
    first.save(tmp_path / "run.safetensors")
    resumed = build(optimizer, seed=123, rng=7, schedule=schedule, interval=interval)
    assert not weights_equal(resumed.model.state_dict(), first.model.state_dict())
    resumed.fit(x, y, epochs=2, resume_from=tmp_path / "run.safetensors", **fit)

    assert_identical(straight, resumed)
    assert resumed.history["epoch"] == [1, 2, 3, 4]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(data, tmp_path):
    """Early stopping, a plateau schedule and ModelCheckpoint's state all carry over."""
    x, y, xv, yv = data
    fit = dict(batch_size=16, validation_data=(xv, yv))

    def run(directory, seed, rng):
        trainer = build(sgd, seed, rng, lambda o: StepLR(o, 3, 0.9), callbacks=[
            EarlyStopping(patience=50), ReduceLROnPlateau(patience=0, factor=0.5, threshold=0.2),
            ModelCheckpoint(directory)])
        return trainer

    straight = run(tmp_path / "a", seed=0, rng=1)
    straight.fit(x, y, epochs=6, **fit)
    interrupted = run(tmp_path / "b", seed=0, rng=1)
    interrupted.fit(x, y, epochs=3, **fit)  # its final weights are early stopping's best ...
    resumed = run(tmp_path / "b", seed=99, rng=2)
    resumed.resume(tmp_path / "b" / "last.safetensors")  # ... the checkpoint holds epoch 3's
    resumed.fit(x, y, epochs=3, **fit)

    assert_identical(straight, resumed)
    assert min(straight.history["lr"]) < 0.1  # the plateau schedule did reduce the rate
    stop_a, stop_b = straight.callbacks[1], resumed.callbacks[1]
    assert (stop_a.best, stop_a.best_epoch) == (stop_b.best, stop_b.best_epoch)
    for name in ("best.safetensors", "last.safetensors"):
        a, b = read_checkpoint(tmp_path / "a" / name), read_checkpoint(tmp_path / "b" / name)
        assert a.epoch == b.epoch and weights_equal(a.model, b.model), name


def test_trainer_resume_then_fit_equals_fit_resume_from(data, tmp_path):
    x, y, _, _ = data
    first = make_trainer(rng=3)
    first.fit(x, y, epochs=1)
    path = first.save(tmp_path / "c.safetensors")
    a, b = make_trainer(seed=1), make_trainer(seed=2)
    a.resume(path)
    a.fit(x, y, epochs=1)
    b.fit(x, y, epochs=1, resume_from=path)
    assert weights_equal(a.model.state_dict(), b.model.state_dict())
    assert isinstance(a, Trainer) and a.epoch == b.epoch == 2


def test_dropout_masks_continue_after_a_resume(data, tmp_path):
    from ermlab import losses, nn

    x, y, _, _ = data

    def build_dropout(seed, dropout_rng, rng):
        gen = np.random.default_rng(seed)
        model = nn.Sequential(nn.Linear(4, 16, rng=gen), nn.ReLU(),
                              nn.Dropout(0.5, rng=dropout_rng), nn.Linear(16, 3, rng=gen))
        return Trainer(model, losses.SoftmaxCrossEntropy(), sgd(model.parameters()), rng=rng)

    straight = build_dropout(0, 10, 1)
    straight.fit(x, y, epochs=4, batch_size=16)
    first = build_dropout(0, 10, 1)
    first.fit(x, y, epochs=2, batch_size=16)
    path = first.save(tmp_path / "c.safetensors")
    resumed = build_dropout(5, 77, 2)
    resumed.fit(x, y, epochs=2, batch_size=16, resume_from=path)
    assert_identical(straight, resumed)


class Strict(Callback):
    def __init__(self, key):
        self.key = key

    def state_dict(self):
        return {self.key: 1}

    def load_state_dict(self, state):
        self.value = state[self.key]


def test_a_mismatched_callback_state_is_named(data, tmp_path):
    x, y, _, _ = data
    saved = make_trainer(callbacks=[Strict("a")])
    saved.fit(x, y, epochs=1)
    path = saved.save(tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="state for callback Strict does not fit"):
        make_trainer(callbacks=[Strict("b")]).fit(x, y, epochs=1, resume_from=path)
    other = make_trainer(callbacks=[Strict("a")])
    other.fit(x, y, epochs=1, resume_from=path)
    assert other.callbacks[0].value == 1


def _stopping_run(snapshots):
    """A run whose scripted val_loss is best at epoch 4 of 8: EarlyStopping (patience 10)
    restores epoch 4's weights whenever a fit ends after it."""
    trainer = make_trainer(optimizer=adam, seed=3, rng=5)
    trainer.callbacks = [Scripted("val_loss", [5, 4, 3, 1, 2, 3, 4, 5]),
                         EarlyStopping(patience=10), snapshots]
    return trainer


def test_save_after_early_stopping_restored_the_best_weights_resumes_as_one_run(data,
                                                                                tmp_path):
    """fit(6) restores epoch 4's weights; save(); resume for 2 more epochs trains on from
    epoch 6's weights (those its optimizer state and shuffling belong to), as fit(8) does."""
    x, y, _, _ = data
    straight_snapshots, resumed_snapshots = Snapshots(), Snapshots()
    straight = _stopping_run(straight_snapshots)
    straight.fit(x, y, epochs=8, batch_size=16)
    first = _stopping_run(Snapshots())
    first.fit(x, y, epochs=6, batch_size=16)
    assert weights_equal(first.model.state_dict(), straight_snapshots.weights[4])
    first.save(tmp_path / "ckpt.safetensors")
    resumed = _stopping_run(resumed_snapshots)
    resumed.fit(x, y, epochs=2, batch_size=16, resume_from=tmp_path / "ckpt.safetensors")
    for epoch in (7, 8):
        assert weights_equal(resumed_snapshots.weights[epoch], straight_snapshots.weights[epoch])
    assert_identical(resumed, straight)  # both end on epoch 4's weights


def test_a_second_fit_after_early_stopping_trains_on_from_the_last_epoch(data):
    x, y, _, _ = data
    straight_snapshots, twice_snapshots = Snapshots(), Snapshots()
    _stopping_run(straight_snapshots).fit(x, y, epochs=8, batch_size=16)
    twice = _stopping_run(twice_snapshots)
    twice.fit(x, y, epochs=6, batch_size=16)
    twice.fit(x, y, epochs=2, batch_size=16)
    assert weights_equal(twice_snapshots.weights[8], straight_snapshots.weights[8])
