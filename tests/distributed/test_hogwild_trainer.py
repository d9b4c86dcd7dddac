"""Hogwild! as a Trainer strategy: ``Trainer(..., strategy=Hogwild(workers=2))`` runs each
epoch in worker processes over shared memory; the Trainer's model then holds the shared
parameters for validation, callbacks and checkpoints."""

import io
import os
import signal
import time

import numpy
import pytest
from strategy_helpers import blobs
from test_hogwild import (
    _alive,
    _interrupt_and_check,
    _segments,
    _spawned_children,
    _start_endless_fit,
    linux_only,
)

from ermlab import losses, nn, optim, regularizers
from ermlab.distributed.hogwild import Hogwild, epoch_order
from ermlab.optim import schedules
from ermlab.training import Trainer
from ermlab.training.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
)


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    before = _segments(os.getpid())  # this process's only: other test runs may be going on
    yield
    assert _segments(os.getpid()) - before == set(), "a shared-memory segment was left in /dev/shm"
    assert _spawned_children(os.getpid()) == [], "a worker process was left running"


def _trainer(workers=1, lr=0.1, dtype=numpy.float64, seed=0, **kwargs):
    model = nn.mlp([4, 8, 3], activation="tanh", rng=seed, dtype=dtype)
    return Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=lr),
                   rng=1, strategy=Hogwild(workers=workers, seed=3), **kwargs)


def test_one_worker_is_sequential_sgd_and_resumes_bit_for_bit(tmp_path):
    """One worker over the strategy's epoch order is plain mini-batch SGD written out (the
    oracle); resumed from its own checkpoint of epoch 2 for 2 more epochs, the run repeats
    its last 2 epochs bit for bit."""
    x, y = blobs(50)
    whole = _trainer(callbacks=[ModelCheckpoint(tmp_path, save_best=False, every=2,
                                                save_last=False)])
    whole.fit(x, y, epochs=4, batch_size=8)
    model = nn.mlp([4, 8, 3], activation="tanh", rng=0, dtype=numpy.float64)
    loss = losses.SoftmaxCrossEntropy()
    total = 0.0
    for epoch in range(4):  # the oracle: plain mini-batch SGD written out
        order = epoch_order(len(x), 3, epoch)
        total = 0.0
        for b in range(0, len(x), 8):
            index = order[b:b + 8]
            total += loss.forward(model.forward(x[index]), y[index]) * len(index)
            model.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            for p in model.parameters():
                p.data -= 0.1 * p.grad
    for k, v in model.state_dict().items():
        numpy.testing.assert_allclose(whole.model.state_dict()[k], v, rtol=1e-12, atol=1e-14)
    assert whole.history["loss"][-1] == pytest.approx(total / len(x), rel=1e-12)
    assert whole.step == 4 * 7 and whole.epoch == 4
    resumed = _trainer()
    resumed.fit(x, y, epochs=2, batch_size=8, resume_from=tmp_path / "epoch-0002.safetensors")
    for k, v in whole.model.state_dict().items():
        assert numpy.array_equal(v, resumed.model.state_dict()[k]), k
    assert whole.history["loss"] == resumed.history["loss"]


def test_two_workers_learn_and_the_trainer_sees_the_shared_parameters():
    x, y = blobs(300, dtype=numpy.float32)
    x, y, val = x[:200], y[:200], (x[200:], y[200:])
    trainer = _trainer(workers=2, lr=0.2, dtype=numpy.float32,
                       callbacks=[EarlyStopping("val_loss", patience=5)])
    before = trainer.evaluate(*val)["accuracy"]
    history = trainer.fit(x, y, epochs=3, batch_size=10, validation_data=val)
    assert history["val_accuracy"][-1] >= 0.75 > before + 0.2  # blobs overlap: ~0.85 at best
    assert history["val_accuracy"][-1] == trainer.evaluate(*val)["accuracy"]
    assert history["examples_per_second"][-1] > 0
    assert 0.7 <= history["accuracy"][-1] <= 1 and history["loss"][0] > history["loss"][-1]
    assert trainer.step == 3 * 2 * 10
    assert trainer.strategy.worker_pids() == []  # the pool stopped when the fit ended


@pytest.mark.parametrize("build, message", [
    (lambda m: dict(optimizer=optim.Adam(m.parameters())), "plain SGD"),
    (lambda m: dict(optimizer=optim.SGD(m.parameters(), lr=0.1, momentum=0.9)), "plain SGD"),
    (lambda m: dict(regularizer=regularizers.L2(1e-3)), "no regularizer"),
    (lambda m: dict(augment=lambda x, rng: x), "do not augment"),
])
def test_what_the_workers_cannot_do_is_refused_at_construction(build, message):
    model = nn.mlp([4, 8, 3], rng=0)
    parts = {"optimizer": optim.SGD(model.parameters(), lr=0.1), **build(model)}
    optimizer = parts.pop("optimizer")
    with pytest.raises(ValueError, match=message):
        Trainer(model, losses.SoftmaxCrossEntropy(), optimizer, strategy=Hogwild(1), **parts)


def test_batch_norm_and_sample_weights_are_refused():
    model = nn.mlp([4, 8, 3], batch_norm=True, rng=0)
    with pytest.raises(ValueError, match="buffers"):
        Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                strategy=Hogwild(1))
    x, y = blobs(20)
    with pytest.raises(ValueError, match="sample weights"):
        _trainer().fit(x, y, epochs=1, sample_weight=numpy.ones(20))


def test_a_failing_worker_stops_the_fit_and_leaves_nothing_behind():
    x, y = blobs(40)
    y[-1] = 7  # a label out of range, met by a worker, not by the parent
    trainer = _trainer(workers=2)
    before = trainer.model.state_dict()
    with pytest.raises(RuntimeError, match=r"Hogwild worker [01] failed: LabelError: labels"):
        trainer.fit(x, y, epochs=2, batch_size=8)
    assert trainer.epoch == 0
    for k, v in before.items():
        assert numpy.array_equal(v, trainer.model.state_dict()[k])


_ENDLESS_TRAINER = """
import numpy
from ermlab import losses, nn, optim
from ermlab.distributed import Hogwild
from ermlab.training import Trainer
if __name__ == "__main__":
    model = nn.mlp([20, 64, 2], rng=0)
    x = numpy.random.default_rng(0).normal(size=(20000, 20)).astype(numpy.float32)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.01),
                      strategy=Hogwild(2))
    trainer.fit(x, numpy.arange(20000) % 2, epochs=10**6, batch_size=1)
"""


@linux_only
def test_ctrl_c_during_a_trainer_fit_stops_the_workers_and_frees_the_segments(tmp_path):
    _interrupt_and_check(*_start_endless_fit(tmp_path, _ENDLESS_TRAINER))


# -- one pool of workers and segments per fit --------------------------------------------------

class _Watch(Callback):
    """Records the strategy's worker pids and this process's segments after every epoch;
    then, at the end of epoch ``at``, acts (kills a worker, raises)."""

    def __init__(self, act, at):
        self.pids, self.segments, self.act, self.at = [], [], act, at

    def on_epoch_end(self, trainer, logs):
        self.pids.append(trainer.strategy.worker_pids())
        self.segments.append(_segments(os.getpid()))
        if logs["epoch"] == self.at:
            self.act(trainer)


def _kill_a_worker(trainer):
    pid = trainer.strategy.worker_pids()[1]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _interrupt(trainer):
    raise KeyboardInterrupt


def _fail(trainer):
    raise ValueError("a callback failed")


@linux_only
@pytest.mark.parametrize("act, at, error, message", [
    (_kill_a_worker, 2, RuntimeError,
     r"Hogwild worker 1 \(pid \d+\) died \(killed by SIGKILL\)"),
    (_interrupt, 1, KeyboardInterrupt, None),
    (_fail, 3, ValueError, "a callback failed"),
])
def test_one_pool_per_fit_stopped_however_the_fit_ends(act, at, error, message):
    """The workers and segments are started once and live for the whole fit (the same pids
    and the same segments — w, x, y, the update counter: the data copied once — every
    epoch); a worker killed between epochs, Ctrl-C or an error in a callback ends the fit,
    and then the workers are gone and no segment is left (the fixture checks this process's
    segments and children after every test, a fit that ends normally included)."""
    x, y = blobs(40)
    watch = _Watch(act, at)
    trainer = _trainer(workers=2, callbacks=[watch])
    with pytest.raises(error, match=message):
        trainer.fit(x, y, epochs=3, batch_size=8)
    assert len(watch.pids[0]) == 2 and watch.pids == [watch.pids[0]] * at  # started once
    assert len(watch.segments[0]) == 4 and watch.segments == [watch.segments[0]] * at
    assert not any(_alive(pid) for pid in watch.pids[0])
    assert trainer.strategy.worker_pids() == []


# -- learning-rate schedules and step counts ---------------------------------------------------

def test_a_per_update_schedule_drives_the_workers_rates_exactly_with_one_worker():
    """α_t = α₀/(1 + δt) over the fit's updates t (continuing across epochs), per param
    group; the optimizer's step count and the scheduler end where sequential SGD's would."""
    x, y = blobs(50)
    model = nn.mlp([4, 8, 3], activation="tanh", rng=0, dtype=numpy.float64)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    optimizer = optim.SGD([{"params": weights}, {"params": biases, "lr": 0.1}], lr=0.3)
    schedule = LearningRateScheduler(schedules.InverseTimeLR(optimizer, decay=0.1),
                                     interval="update")
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optimizer, callbacks=[schedule],
                      strategy=Hogwild(workers=1, seed=3))
    trainer.fit(x, y, epochs=2, batch_size=8)
    twin = nn.mlp([4, 8, 3], activation="tanh", rng=0, dtype=numpy.float64)
    loss, t = losses.SoftmaxCrossEntropy(), 0
    for epoch in range(2):  # the oracle: sequential SGD with the closed-form rates
        order = epoch_order(len(x), 3, epoch)
        for b in range(0, len(x), 8):
            index = order[b:b + 8]
            loss.forward(twin.forward(x[index]), y[index])
            twin.zero_grad()
            twin.backward(loss.backward(), input_grad=False)
            for name, p in twin.named_parameters():
                p.data -= (0.3 if name.endswith("weight") else 0.1) / (1 + 0.1 * t) * p.grad
            t += 1
    for k, v in twin.state_dict().items():
        numpy.testing.assert_allclose(model.state_dict()[k], v, rtol=1e-10, atol=1e-13)
    assert t == 14 and trainer.step == t
    assert all(optimizer.state[p]["step"] == t for p in model.parameters())
    numpy.testing.assert_allclose([g["lr"] for g in optimizer.param_groups],
                                  [0.3 / (1 + 0.1 * t), 0.1 / (1 + 0.1 * t)], rtol=1e-12)


def test_with_two_workers_every_update_is_counted_and_scheduled():
    """25 examples a worker in batches of 8: 4 updates each, 8 an epoch — one more than the
    ⌈50/8⌉ = 7 batches of one process, so callbacks (the progress bar's total) must be told 8."""
    x, y = blobs(50)
    model = nn.mlp([4, 8, 3], rng=0, dtype=numpy.float64)
    optimizer = optim.SGD(model.parameters(), lr=0.2)
    scheduler = schedules.InverseTimeLR(optimizer, decay=0.05)
    batches, totals = [], []

    class Batches(Callback):
        def on_train_begin(self, trainer, logs):
            totals.append(logs["steps_per_epoch"])

        def on_batch_end(self, trainer, logs):
            batches.append((logs["epoch"], logs["batch"], logs["size"]))
            totals.append(logs["steps_per_epoch"])

    bar = io.StringIO()
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optimizer,
                      callbacks=[LearningRateScheduler(scheduler, interval="update"), Batches(),
                                 ProgressBar(force=True, file=bar, mininterval=0)],
                      strategy=Hogwild(workers=2))
    trainer.fit(x, y, epochs=2, batch_size=8)
    updates = 2 * (4 + 4)  # 25 examples a worker: 4 batches each, per epoch
    assert trainer.step == updates == scheduler.last_epoch
    assert all(optimizer.state[p]["step"] == updates for p in model.parameters())
    assert [b[:2] for b in batches] == [(e, b) for e in (1, 2) for b in range(1, 9)]
    assert sum(b[2] for b in batches) == 2 * 50
    assert set(totals) == {8}  # on_train_begin and every batch: the updates of an epoch
    assert " 8/8 " in bar.getvalue() and "/7 " not in bar.getvalue()  # no overshoot


def test_data_the_model_cannot_take_is_the_plain_error_before_any_process_starts():
    x, y = blobs(20)  # float64 inputs for a float32 model
    trainer = _trainer(dtype=numpy.float32)
    with pytest.raises(ValueError, match="float32 parameters but got input of dtype float64"):
        trainer.fit(x, y, epochs=1, batch_size=8)
    assert trainer.strategy.worker_pids() == [] and trainer.step == 0
