"""Each callback's behaviour: early stopping, checkpoints, schedules, plateau, progress,
history loggers, the divergence guard."""

import csv
import io
import json
import math
import re

import numpy as np
import pytest
from training_helpers import Scripted, Snapshots, make_trainer, weights_equal

from ermlab.optim.schedules import ExponentialLR, StepLR
from ermlab.training import (
    Callback,
    CSVLogger,
    DivergenceError,
    DivergenceGuard,
    EarlyStopping,
    JSONLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    read_checkpoint,
)

# -- EarlyStopping ----------------------------------------------------------------------


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch(data):
    x, y, _, _ = data
    scores = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 1.0, 0.5]  # best at epoch 3, then 3 worse epochs
    snapshots = Snapshots()
    stopper = EarlyStopping("score", patience=3)
    trainer = make_trainer([Scripted("score", scores), stopper, snapshots])
    trainer.fit(x, y, epochs=8, batch_size=16)
    assert trainer.epoch == 6 and stopper.stopped_epoch == 6 and stopper.best_epoch == 3
    assert "did not improve for 3 epochs; best 3 at epoch 3" in trainer.stop_reason
    assert weights_equal(trainer.model.state_dict(), snapshots.weights[3])
    assert not weights_equal(trainer.model.state_dict(), snapshots.weights[6])


def test_early_stopping_restores_the_best_weights_when_epochs_run_out(data):
    x, y, _, _ = data
    snapshots = Snapshots()
    trainer = make_trainer([Scripted("score", [0.1, 0.9, 0.8, 0.7]),
                            EarlyStopping("score", mode="max", patience=5), snapshots])
    trainer.fit(x, y, epochs=4, batch_size=16)
    assert trainer.epoch == 4 and not trainer.stop_training
    assert weights_equal(trainer.model.state_dict(), snapshots.weights[2])


def test_early_stopping_min_delta_ignores_small_improvements(data):
    x, y, _, _ = data
    stopper = EarlyStopping("score", patience=2, min_delta=0.1)
    trainer = make_trainer([Scripted("score", [1.0, 0.95, 0.92, 0.5]), stopper])
    trainer.fit(x, y, epochs=4)
    assert trainer.epoch == 3 and stopper.best_epoch == 1


def test_early_stopping_names_a_missing_monitor(data):
    x, y, _, _ = data
    with pytest.raises(ValueError, match="monitors 'val_loss'.*pass validation_data"):
        make_trainer([EarlyStopping()]).fit(x, y, epochs=1)


# -- ModelCheckpoint --------------------------------------------------------------------


class BestEpochs(Callback):
    order = 200  # after ModelCheckpoint

    def __init__(self, path):
        self.path, self.seen = path, []

    def on_epoch_end(self, trainer, logs):
        self.seen.append(read_checkpoint(self.path).epoch if self.path.exists() else None)


def test_model_checkpoint_writes_best_only_when_improved(data, tmp_path):
    x, y, _, _ = data
    saver = ModelCheckpoint(tmp_path, monitor="score", every=2)
    best = BestEpochs(saver.best_path)
    trainer = make_trainer([Scripted("score", [3.0, 2.0, 2.5, 1.0, 1.0]), saver, best])
    trainer.fit(x, y, epochs=5)
    assert best.seen == [1, 2, 2, 4, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors", "epoch-0002.safetensors", "epoch-0004.safetensors",
        "last.safetensors"]
    assert read_checkpoint(saver.last_path).epoch == 5
    assert read_checkpoint(saver.epoch_path(2)).history["epoch"] == [1, 2]


def test_model_checkpoint_saves_the_weights_of_its_epoch(data, tmp_path):
    x, y, _, _ = data
    snapshots = Snapshots()
    saver = ModelCheckpoint(tmp_path, monitor="score", mode="max", save_last=False,
                            extra={"config": {"hidden": [8]}})
    trainer = make_trainer([snapshots, saver, Scripted("score", [0.1, 0.5, 0.2])])
    trainer.fit(x, y, epochs=3)
    best = read_checkpoint(saver.best_path)
    assert weights_equal(best.model, snapshots.weights[2])
    assert best.extra == {"config": {"hidden": [8]}}
    assert not saver.last_path.exists()


# -- learning-rate schedules --------------------------------------------------------------


class LRs(Callback):
    """The learning rate each update used (read before the schedule steps)."""

    order = -1

    def __init__(self):
        self.used = []

    def on_batch_end(self, trainer, logs):
        self.used.append(trainer.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("interval", ["update", "epoch"])
def test_schedule_steps_per_update_or_per_epoch(data, interval):
    x, y, _, _ = data
    lrs = LRs()
    trainer = make_trainer([lrs], lr=0.4)
    schedule = ExponentialLR(trainer.optimizer, gamma=0.5)
    trainer.callbacks.append(LearningRateScheduler(schedule, interval=interval))
    trainer.fit(x, y, epochs=3, batch_size=32)  # 3 updates per epoch
    t = np.arange(9) if interval == "update" else np.arange(9) // 3
    np.testing.assert_allclose(lrs.used, 0.4 * 0.5**t, rtol=1e-15)
    assert schedule.get_last_lr() == [pytest.approx(0.4 * 0.5 ** (9 if interval == "update"
                                                                   else 3))]


def test_per_update_schedule_equals_a_hand_written_loop(data):
    from ermlab.data.loader import batches

    x, y, _, _ = data
    trainer = make_trainer(lr=0.3)
    trainer.callbacks.append(LearningRateScheduler(StepLR(trainer.optimizer, 2, 0.5), "update"))
    trainer.fit(x, y, epochs=2, batch_size=32, rng=4)

    manual = make_trainer(lr=0.3)
    schedule = StepLR(manual.optimizer, 2, 0.5)
    rng = np.random.default_rng(4)
    for _ in range(2):
        for index in batches(len(x), 32, rng=rng):
            manual.train_step(x[index], y[index])
            schedule.step()
    assert weights_equal(trainer.model.state_dict(), manual.model.state_dict())


def test_schedule_on_another_optimizer_is_an_error(data):
    x, y, _, _ = data
    other = make_trainer()
    trainer = make_trainer([LearningRateScheduler(ExponentialLR(other.optimizer, 0.5))])
    with pytest.raises(ValueError, match="another optimizer"):
        trainer.fit(x, y, epochs=1)


class EpochLRs(Callback):
    order = 50

    def __init__(self):
        self.lrs = []

    def on_epoch_end(self, trainer, logs):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_reduce_lr_on_plateau_after_patience(data):
    x, y, _, _ = data
    lrs = EpochLRs()
    plateau = ReduceLROnPlateau("score", factor=0.5, patience=2)
    trainer = make_trainer([Scripted("score", [1.0, 0.5] + [0.6] * 6), plateau, lrs], lr=0.2)
    trainer.fit(x, y, epochs=8)
    # best at epoch 2; epochs 3, 4 are tolerated (patience 2), epoch 5 is the third bad one
    assert lrs.lrs == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05])
    assert trainer.history["lr"][5] == pytest.approx(0.1)


# -- ProgressBar ----------------------------------------------------------------------------


def test_progress_bar_shows_epochs_loss_metrics_rate_and_eta_when_forced(data):
    x, y, xv, yv = data
    out = io.StringIO()
    trainer = make_trainer([ProgressBar(force=True, file=out, mininterval=0)])
    trainer.fit(x, y, epochs=3, batch_size=32, validation_data=(xv, yv))
    text = out.getvalue()
    for epoch in (1, 2, 3):
        assert f"epoch {epoch}/3" in text
    final = text.split("epoch 3/3")[-1].split("epoch   3/3")[0]  # the bar of epoch 3
    assert "3/3" in final  # batches done / per epoch
    assert re.search(r"loss=\d\.\d+", final)
    assert re.search(r"batch/s|s/batch", final)  # the rate
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", final)  # elapsed < ETA
    summary = text.splitlines()[-1].split("\r")[-1]
    assert summary.startswith("epoch   3/3  loss ")
    assert re.search(r"val_loss \d\.\d{4}", summary)
    assert re.search(r"val_accuracy \d\.\d{4}", summary)


def _fit_on_a_terminal(data, columns):
    """What ProgressBar writes to a pseudo-terminal of ``columns`` columns (0: size unknown)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    x, y, xv, yv = data
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    chunks = []
    with os.fdopen(follower, "w") as terminal:
        trainer = make_trainer([ProgressBar(file=terminal, mininterval=0)])
        trainer.fit(x, y, epochs=2, batch_size=8, validation_data=(xv, yv))
        terminal.flush()
        os.set_blocking(leader, False)
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("columns", [80, 40, 20, 0])
def test_progress_bar_epoch_summary_is_readable_at_any_terminal_width(data, columns):
    text = _fit_on_a_terminal(data, columns)
    lines = text.replace("\r\n", "\n").split("\n")
    summaries = [line.split("\r")[-1] for line in lines if "val_accuracy" in line]
    assert len(summaries) == 2, text
    for epoch, line in enumerate(summaries, 1):
        assert line.startswith(f"epoch   {epoch}/2  loss ") and "val_loss " in line, line
    drawn = [part for line in lines for part in line.split("\r")]
    assert all(part.strip() for part in lines[:-1]), "no blank lines"
    if columns >= 40:
        assert all(len(part) < columns for part in drawn if "%" in part)
        assert any("%" in part for part in drawn)  # the bar was drawn
    else:
        assert not any("%" in part for part in drawn)


def test_progress_bar_is_silent_when_not_a_terminal(data):
    x, y, _, _ = data
    out = io.StringIO()
    make_trainer([ProgressBar(file=out)]).fit(x, y, epochs=2)
    assert out.getvalue() == ""


def test_progress_bar_counts_epochs_of_a_second_fit_call(data):
    x, y, _, _ = data
    out = io.StringIO()
    trainer = make_trainer([ProgressBar(force=True, file=out)])
    trainer.fit(x, y, epochs=1)
    trainer.fit(x, y, epochs=2)
    assert "epoch 3/3" in out.getvalue()


# -- history loggers ------------------------------------------------------------------------


def test_csv_logger_writes_one_row_per_epoch(data, tmp_path):
    x, y, xv, yv = data
    path = tmp_path / "history.csv"
    trainer = make_trainer([CSVLogger(path)])
    trainer.fit(x, y, epochs=3, validation_data=(xv, yv))
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "lr", "time", "val_loss",
                            "val_accuracy"]
    assert len(rows) == 3
    for key in rows[0]:
        assert [float(row[key]) for row in rows] == trainer.history[key]


def test_csv_logger_appends_for_a_continued_run(data, tmp_path):
    x, y, _, _ = data
    path = tmp_path / "history.csv"
    trainer = make_trainer([CSVLogger(path)])
    trainer.fit(x, y, epochs=2)
    trainer.callbacks = [CSVLogger(path, append=True)]
    trainer.fit(x, y, epochs=1)
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    trainer.callbacks = [CSVLogger(path)]
    trainer.fit(x, y, epochs=1)
    assert path.read_text().count("\n") == 2  # not appending: a fresh file


def test_csv_logger_drops_rows_past_the_checkpoint_when_appending(data, tmp_path):
    """A run killed after writing epoch 3's row but before its checkpoint resumes from
    epoch 2: the stale row (and a torn one) must not stay in the table."""
    x, y, _, _ = data
    path = tmp_path / "history.csv"
    trainer = make_trainer([CSVLogger(path)])
    trainer.fit(x, y, epochs=2)
    checkpoint = trainer.save(tmp_path / "c.safetensors")
    trainer.callbacks = [CSVLogger(path, append=True)]
    trainer.fit(x, y, epochs=1)  # epoch 3: its row is written, then the "crash"
    with path.open("a") as file:
        file.write("4,0.12")  # and half of epoch 4's row
    resumed = make_trainer([CSVLogger(path, append=True)])
    resumed.fit(x, y, epochs=2, resume_from=checkpoint)
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert [float(row["loss"]) for row in rows] == resumed.history["loss"]


def test_json_logger_writes_the_history(data, tmp_path):
    x, y, xv, yv = data
    path = tmp_path / "history.json"
    trainer = make_trainer([JSONLogger(path)])
    trainer.fit(x, y, epochs=2, validation_data=(xv, yv))
    document = json.loads(path.read_text())
    assert document["history"] == trainer.history
    assert document["stop_reason"] is None


# -- DivergenceGuard ------------------------------------------------------------------------


def batch_of(row, n, batch_size, seed, epoch):
    rng = np.random.default_rng(seed)
    for _ in range(epoch):
        order = rng.permutation(n)
    return int(np.flatnonzero(order == row)[0]) // batch_size + 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
class PoisonAtStart(Callback):
    """Writes NaN into x once training has begun (fit refuses a NaN it is given)."""

    def __init__(self, x, row):
        self.x, self.row = x, row

    def on_train_begin(self, trainer, logs):
        self.x[self.row] = np.nan


def test_divergence_guard_names_the_epoch_and_batch_of_a_nan_input(data, tmp_path):
    x, y, _, _ = data
    x = x.copy()
    guard = DivergenceGuard()
    trainer = make_trainer([PoisonAtStart(x, 37), guard, JSONLogger(tmp_path / "h.json")],
                           rng=11)
    trainer.fit(x, y, epochs=5, batch_size=10)
    batch = batch_of(37, len(x), 10, seed=11, epoch=1)
    assert guard.message.startswith(f"training diverged: loss nan at epoch 1, batch {batch} "
                                    "of 10")
    assert trainer.stop_reason == guard.message and trainer.epoch == 1
    assert trainer.step == batch - 1  # the bad batch made no update
    assert all(np.isfinite(v).all() for v in trainer.model.state_dict().values())
    document = json.loads((tmp_path / "h.json").read_text())  # strict JSON: NaN → null
    assert document["stop_reason"] == guard.message and document["history"]["loss"] == [None]


class PoisonAfterEpoch(Callback):
    def __init__(self, x, row, epoch):
        self.x, self.row, self.epoch = x, row, epoch

    def on_epoch_end(self, trainer, logs):
        if logs["epoch"] == self.epoch:
            self.x[self.row] = np.inf


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_guard_raises_with_the_epoch_and_batch_when_asked(data):
    x, y, _, _ = data
    x = x.copy()
    trainer = make_trainer([PoisonAfterEpoch(x, 5, epoch=2), DivergenceGuard(raise_error=True)],
                           rng=3)
    batch = batch_of(5, len(x), 16, seed=3, epoch=3)
    with pytest.raises(DivergenceError, match=f"at epoch 3, batch {batch} of 6"):
        trainer.fit(x, y, epochs=5, batch_size=16)
    assert isinstance(DivergenceError("x"), ValueError)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_guard_stops_a_run_with_a_huge_learning_rate(data):
    from ermlab import losses, nn, optim
    from ermlab.training import Trainer

    x, y, xv, yv = data
    guard = DivergenceGuard()
    model = nn.mlp([4, 32, 32, 3], activation="relu", rng=0)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1e3),
                      callbacks=[guard], rng=0)
    trainer.fit(x, y, epochs=50, batch_size=8, validation_data=(xv, yv))
    assert trainer.epoch < 50
    assert re.fullmatch(rf"training diverged: loss (nan|inf) at epoch {trainer.epoch}, "
                        r"batch \d+ of 12 .*", guard.message)
    assert not math.isfinite(trainer.history["loss"][-1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_without_a_guard_a_diverged_run_still_finishes(data):
    x, y, xv, yv = data
    x = x.copy()
    trainer = make_trainer([PoisonAtStart(x, 0)])
    trainer.fit(x, y, epochs=2, validation_data=(xv, yv))
    assert math.isnan(trainer.history["loss"][0]) and trainer.epoch == 2


def test_reduce_lr_on_plateau_follows_a_new_trainer_when_reused():
    """One callback instance given to a second trainer steers that trainer's optimizer."""
    from ermlab import losses, nn, optim
    from ermlab.training import ReduceLROnPlateau, Trainer

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)).astype(np.float32), rng.integers(0, 2, 40)
    callback = ReduceLROnPlateau("loss", factor=0.5, patience=0, threshold=10.0)
    optimizers = []
    for seed in (0, 1):
        model = nn.mlp([3, 4, 2], rng=seed)
        optimizers.append(optim.SGD(model.parameters(), lr=0.1))
        Trainer(model, losses.SoftmaxCrossEntropy(), optimizers[-1],
                callbacks=[callback]).fit(x, y, epochs=3, batch_size=8, rng=seed)
    assert callback.scheduler.optimizer is optimizers[1]
    assert optimizers[1].param_groups[0]["lr"] < 0.1  # the second optimizer was reduced
