"""What fit checks before its first update, and the callbacks' edge cases: NaN inputs, bad
labels named by their row, validation data, the logged rate, "auto" modes, a monitor that is
never finite, an empty DP batch under the progress bar."""

import io

import numpy as np
import pytest
from training_helpers import Scripted, make_trainer

from ermlab.optim.schedules import StepLR
from ermlab.training import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
)


class Steps(Callback):
    """Counts the updates made (on_batch_end)."""

    def __init__(self):
        self.count = 0

    def on_batch_end(self, trainer, logs):
        self.count += 1


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_is_refused_before_any_update_naming_its_row(data, value):
    x, y, _, _ = data
    x = x.copy()
    x[57, 1] = value
    steps = Steps()
    with pytest.raises(ValueError, match=r"^x has NaN or infinite values \(first in row 57\)"):
        make_trainer([steps]).fit(x, y, epochs=1, batch_size=8)
    assert steps.count == 0


def test_non_finite_validation_inputs_are_refused_before_any_update(data):
    x, y, xv, yv = data
    xv = xv.copy()
    xv[3, 0] = np.nan
    steps = Steps()
    with pytest.raises(ValueError, match=r"validation_data's x_val has NaN .* row 3\)"):
        make_trainer([steps]).fit(x, y, epochs=1, validation_data=(xv, yv))
    assert steps.count == 0


def test_the_finite_check_reads_inputs_in_blocks_and_finds_a_row_past_the_first():
    from ermlab.training.trainer import _check_finite

    x = np.zeros((1000, 7), np.float32)
    x[613, 6] = np.nan
    with pytest.raises(ValueError, match=r"row 613\)"):
        _check_finite(x, "x", chunk_bytes=280)  # blocks of 10 rows
    _check_finite(np.zeros((5, 3), np.int64), "x")  # integers are finite


def test_an_out_of_range_label_is_named_by_its_row_of_y_with_at_most_one_update(data):
    """The first batch tells the number of classes; the whole y is checked then."""
    x, y, _, _ = data
    y = y.copy()
    y[50] = 7
    steps = Steps()
    trainer = make_trainer([steps])
    with pytest.raises(ValueError, match=r"^y: labels must be integers in \[0, 3\); got 7 "
                                         r"at index 50$"):
        trainer.fit(x, y, epochs=1, batch_size=8)
    assert steps.count <= 1 and trainer.step <= 1


def test_a_bad_label_in_the_first_batch_is_named_by_its_row_of_y_before_its_update(data):
    x, y, _, _ = data
    y = y.copy()
    y[:] = np.where(np.arange(len(y)) == 31, -1, y)
    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"^y: .*got -1 at index 31$"):
        trainer.fit(x, y, epochs=1, batch_size=None)  # one batch: the whole set
    assert trainer.step == 0


def test_validation_labels_are_checked_with_the_training_labels(data):
    x, y, xv, yv = data
    yv = yv.copy()
    yv[5] = 3
    trainer = make_trainer()
    with pytest.raises(ValueError, match=r"^validation_data's y_val: .*got 3 at index 5$"):
        trainer.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv))
    assert trainer.epoch == 0 and trainer.step == 1


@pytest.mark.parametrize("validation, error, message", [
    (lambda xv, yv: xv, TypeError, r"validation_data must be a pair \(x_val, y_val\); got "
                                   r"ndarray"),
    (lambda xv, yv: (xv,), TypeError, r"got tuple of length 1"),
    (lambda xv, yv: (xv.tolist(), yv), TypeError, r"x_val must be an array"),
    (lambda xv, yv: (xv, yv[:-1]), ValueError, r"different lengths: 48 and 47"),
    (lambda xv, yv: (xv[:, :3], yv), ValueError, r"rows of shape \(3,\) .* x has \(4,\)"),
    (lambda xv, yv: (xv.astype(np.float64), yv), ValueError,
     r"dtype float64; x has \(4,\) and float32"),
])
def test_bad_validation_data_is_refused_before_any_update(data, validation, error, message):
    x, y, xv, yv = data
    steps = Steps()
    with pytest.raises(error, match=message):
        make_trainer([steps]).fit(x, y, epochs=1, validation_data=validation(xv, yv))
    assert steps.count == 0


class Rates(Callback):
    """The rate each update used (read before the schedule steps after it)."""

    order = -10

    def __init__(self):
        self.used = {}

    def on_batch_end(self, trainer, logs):
        self.used.setdefault(logs["epoch"], []).append(trainer.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("interval, step_size", [("update", 3), ("epoch", 1)])
def test_the_logged_rate_is_the_one_of_the_epochs_last_update(data, interval, step_size):
    x, y, _, _ = data
    rates = Rates()
    trainer = make_trainer([rates], lr=1.0, momentum=0.0)  # 96 / 32: 3 updates an epoch
    trainer.callbacks.append(LearningRateScheduler(StepLR(trainer.optimizer, step_size, 0.5),
                                                   interval))
    history = trainer.fit(x, y, epochs=3, batch_size=32)
    assert history["lr"] == [rates.used[epoch][-1] for epoch in (1, 2, 3)] == [1.0, 0.5, 0.25]


def test_early_stopping_on_a_monitor_never_finite_stops_with_a_reason(data):
    x, y, _, _ = data
    trainer = make_trainer([Scripted("score", [float("nan")] * 5),
                            EarlyStopping("score", patience=2)])
    trainer.fit(x, y, epochs=5)
    assert trainer.epoch == 2
    assert trainer.stop_reason == ("early stopping: score did not improve for 2 epochs; "
                                   "no finite value yet")


@pytest.mark.parametrize("monitor, mode", [("val_accuracy", "max"), ("accuracy", "max"),
                                           ("val_top_5_accuracy", "max"), ("val_loss", "min"),
                                           ("loss", "min")])
def test_auto_mode_reads_the_monitor_name_as_keras_does(monitor, mode, tmp_path):
    assert EarlyStopping(monitor).mode == mode
    assert ModelCheckpoint(tmp_path, monitor).mode == mode
    assert ReduceLROnPlateau(monitor).options["mode"] == mode
    assert EarlyStopping(monitor, mode="min").mode == "min"  # an explicit mode stays


def test_early_stopping_on_accuracy_keeps_the_best_accuracy_by_default(data):
    x, y, _, _ = data
    stopper = EarlyStopping("val_accuracy", patience=1)
    trainer = make_trainer([Scripted("val_accuracy", [0.5, 0.6, 0.7, 0.8]), stopper])
    trainer.fit(x, y, epochs=4)
    assert (stopper.best, stopper.best_epoch, trainer.epoch) == (0.8, 4, 4)


def test_a_bad_mode_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"mode must be 'min' .*'max' .*'auto'"):
        EarlyStopping(mode="up")


def test_the_progress_bar_survives_an_empty_dp_batch_at_the_start_of_an_epoch(data):
    from ermlab.privacy import DPSGD

    x, y, _, _ = data
    out = io.StringIO()
    trainer = make_trainer([ProgressBar(force=True, file=out, mininterval=0)], rng=RNG,
                           privacy=DPSGD(1.0, noise_multiplier=1.0, delta=1e-3))
    sizes = []
    trainer.callbacks.append(_Sizes(sizes))
    trainer.fit(x, y, epochs=3, batch_size=1)  # Poisson rate 1/96: a third of batches empty
    assert 0 in (sizes[0], sizes[96], sizes[192]) and trainer.epoch == 3
    assert "epoch   3/3" in out.getvalue()


RNG = 7  # a seed whose first Poisson batch is empty


class _Sizes(Callback):
    """The size of every batch (DP-SGD's Poisson batches vary)."""

    def __init__(self, sizes):
        self.sizes = sizes

    def on_batch_end(self, trainer, logs):
        self.sizes.append(logs["size"])
