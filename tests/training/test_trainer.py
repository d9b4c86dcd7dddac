"""The Trainer: history, evaluation metrics, modes, per-sample weights, per-batch events."""

import math

import numpy as np
import pytest
from training_helpers import make_trainer

from ermlab import losses, nn, optim
from ermlab.training import Callback, Trainer, metrics


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer, logs):
        self.events.append(("train_begin", dict(logs)))

    def on_epoch_begin(self, trainer, logs):
        self.events.append(("epoch_begin", dict(logs)))

    def on_batch_end(self, trainer, logs):
        self.events.append(("batch_end", dict(logs)))

    def on_epoch_end(self, trainer, logs):
        self.events.append(("epoch_end", dict(logs)))

    def on_train_end(self, trainer, logs):
        self.events.append(("train_end", dict(logs)))


def test_history_has_one_entry_per_epoch(data):
    x, y, xv, yv = data
    trainer = make_trainer(top_k=(2,))
    history = trainer.fit(x, y, epochs=3, batch_size=32, validation_data=(xv, yv))
    assert history["epoch"] == [1, 2, 3]
    for key in ("loss", "lr", "time", "val_loss", "val_accuracy", "val_top_2_accuracy"):
        assert len(history[key]) == 3, key
    assert history["lr"] == [0.1] * 3
    assert history["loss"][-1] < history["loss"][0]
    assert trainer.epoch == 3 and trainer.step == 9


def test_epoch_loss_is_the_size_weighted_mean_of_the_batch_losses(data):
    x, y, _, _ = data
    recorder = Recorder()
    trainer = make_trainer(callbacks=[recorder])
    trainer.fit(x[:90], y[:90], epochs=1, batch_size=40)  # batches of 40, 40, 10
    batch_logs = [logs for event, logs in recorder.events if event == "batch_end"]
    assert [b["size"] for b in batch_logs] == [40, 40, 10]
    expected = sum(b["loss"] * b["size"] for b in batch_logs) / 90
    assert trainer.history["loss"][0] == pytest.approx(expected, rel=1e-12)


def test_events_come_in_order_with_batch_indices(data):
    x, y, _, _ = data
    recorder = Recorder()
    make_trainer(callbacks=[recorder]).fit(x, y, epochs=2, batch_size=40)  # 3 batches
    names = [event for event, _ in recorder.events]
    epoch = ["epoch_begin", "batch_end", "batch_end", "batch_end", "epoch_end"]
    assert names == ["train_begin", *epoch, *epoch, "train_end"]
    assert recorder.events[0][1] == {"epochs": 2, "initial_epoch": 0, "steps_per_epoch": 3}
    batches = [(logs["epoch"], logs["batch"]) for event, logs in recorder.events
               if event == "batch_end"]
    assert batches == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]


def test_evaluate_reports_loss_accuracy_and_top_k(data):
    x, y, xv, yv = data
    trainer = make_trainer()
    trainer.fit(x, y, epochs=2, batch_size=16)
    result = trainer.evaluate(xv, yv, top_k=(1, 2))
    scores = trainer.predict_scores(xv).astype(np.float64)
    log_prob = scores - scores.max(1, keepdims=True)
    log_prob -= np.log(np.exp(log_prob).sum(1, keepdims=True))
    assert result["loss"] == pytest.approx(-log_prob[np.arange(len(yv)), yv].mean(), rel=1e-5)
    assert result["accuracy"] == np.mean(scores.argmax(1) == yv)
    assert result["top_1_accuracy"] == result["accuracy"]
    assert result["top_2_accuracy"] == metrics.top_k_accuracy(yv, scores, 2)
    assert set(result) == {"loss", "accuracy", "top_1_accuracy", "top_2_accuracy"}


def test_confusion_matrix_of_the_predictions(data):
    x, y, xv, yv = data
    trainer = make_trainer()
    trainer.fit(x, y, epochs=2)
    table = trainer.confusion_matrix(xv, yv)
    assert table.shape == (3, 3) and table.sum() == len(yv)
    assert np.trace(table) == np.sum(trainer.predict(xv) == yv)


@pytest.mark.parametrize("mode", [True, False])
def test_predict_and_evaluate_restore_the_model_mode(data, mode):
    x, y, _, _ = data
    trainer = make_trainer()
    trainer.model.train(mode)
    trainer.predict(x)
    trainer.evaluate(x, y)
    assert all(m.training is mode for m in trainer.model.modules())


def test_predict_restores_the_mode_even_when_forward_fails(data):
    trainer = make_trainer()
    trainer.model.train()
    with pytest.raises(ValueError):
        trainer.predict(np.zeros((3, 5), np.float32))  # wrong width
    assert trainer.model.training


def full_batch_step(x, y, sample_weight=None):
    model = nn.mlp([4, 8, 3], activation="tanh", rng=3, dtype=np.float64)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.5))
    trainer.fit(x, y, epochs=1, batch_size=None, sample_weight=sample_weight, rng=0)
    return trainer


def test_weight_zero_on_half_the_data_is_training_on_the_other_half(data):
    x, y, _, _ = data
    x = x.astype(np.float64)
    y_noise = np.random.default_rng(9).integers(0, 3, len(y))  # labels the weights must hide
    keep = np.arange(len(x)) % 2 == 0
    weight = keep.astype(np.float64)
    weighted = full_batch_step(x, np.where(keep, y, y_noise), weight)
    subset = full_batch_step(x[keep], y[keep])
    unweighted = full_batch_step(x, np.where(keep, y, y_noise))
    for (name, a), b, c in zip(weighted.model.state_dict().items(),
                               subset.model.state_dict().values(),
                               unweighted.model.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)
        assert not np.allclose(a, c), name
    assert weighted.history["loss"][0] == pytest.approx(subset.history["loss"][0], rel=1e-12)


def test_integer_weights_count_examples_that_many_times(data):
    x, y, _, _ = data
    x = x[:30].astype(np.float64)
    y = y[:30]
    counts = np.arange(30) % 3
    weighted = full_batch_step(x, y, counts.astype(np.float64))
    repeated = full_batch_step(np.repeat(x, counts, axis=0), np.repeat(y, counts))
    for a, b in zip(weighted.model.state_dict().values(), repeated.model.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_batches_of_zero_weight_make_no_update(data):
    x, y, _, _ = data
    trainer = make_trainer()
    before = trainer.model.state_dict()
    trainer.fit(x, y, epochs=1, batch_size=8, sample_weight=np.zeros(len(x)))
    after = trainer.model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert trainer.step == 0 and math.isnan(trainer.history["loss"][0])


def test_the_trainer_owns_its_shuffling_generator(data):
    x, y, _, _ = data
    a, b = make_trainer(rng=5), make_trainer(rng=5)
    a.fit(x, y, epochs=2)
    b.fit(x, y, epochs=1)
    b.fit(x, y, epochs=1)  # continues the same stream of permutations
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(v, b.model.state_dict()[k])


def test_regularizer_projection_runs_after_each_step(data):
    from ermlab.regularizers import MaxNorm

    x, y, _, _ = data
    trainer = make_trainer(lr=1.0)
    trainer.regularizer = MaxNorm(0.5, axis=1)
    trainer.fit(x, y, epochs=1, batch_size=16)
    weight = trainer.model.state_dict()["0.weight"]
    assert np.linalg.norm(weight, axis=1).max() <= 0.5 + 1e-6


def test_mismatched_lengths_are_named(data):
    x, y, _, _ = data
    trainer = make_trainer()
    with pytest.raises(ValueError, match="different lengths: 96 and 95"):
        trainer.fit(x, y[:-1])
    with pytest.raises(ValueError, match="sample_weight has 3 entries; x has 96"):
        trainer.fit(x, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="batch_size must be an integer ≥ 1"):
        trainer.fit(x, y, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be an integer ≥ 0"):
        trainer.fit(x, y, epochs=-1)


@pytest.mark.parametrize("weighted", [False, True])
def test_training_accuracy_is_the_accuracy_of_the_epochs_forward_passes(data, weighted):
    """With lr = 0 the weights never move, so the running training accuracy over an epoch
    equals the (weighted) accuracy of the model on the whole training set."""
    x, y, _, _ = data
    w = np.random.default_rng(3).uniform(0, 2, len(y)) if weighted else None
    trainer = make_trainer(lr=0.0, momentum=0.0)
    history = trainer.fit(x, y, epochs=2, batch_size=7, sample_weight=w)
    expected = metrics.accuracy(y, trainer.predict(x), w)
    assert 0.1 < expected < 0.9  # not a trivial model
    np.testing.assert_allclose(history["accuracy"], [expected, expected], rtol=1e-12)
