"""A short Trainer.fit on CuPy stand-in arrays, and checkpoints of a device run.

The run on device arrays (model, data, labels) must take the NumPy run's steps: same
weights, same history. Saving copies the device arrays to NumPy (``to_numpy``); loading
puts them back on the device, and the resumed run continues bit for bit.
"""

import json
import math

import numpy
from fake_cupy import DeviceArray, to_device

from ermlab import losses, nn, optim, regularizers
from ermlab.ensemble import SnapshotEnsemble
from ermlab.training import Trainer
from ermlab.training.callbacks import (
    DivergenceGuard,
    EarlyStopping,
    JSONLogger,
    ModelCheckpoint,
    ReduceLROnPlateau,
)


def _data():
    rng = numpy.random.default_rng(0)
    centers = rng.normal(0, 2.0, (3, 4))
    y = rng.integers(0, 3, 60)
    x = (centers[y] + rng.normal(0, 1.0, (60, 4))).astype(numpy.float32)
    return x, y.astype(numpy.int64)


def _trainer(xp=None, callbacks=()):
    model = nn.Sequential(nn.Linear(4, 8, rng=0), nn.ReLU(), nn.Dropout(0.2, rng=5),
                          nn.Linear(8, 3, rng=1))
    if xp is not None:
        to_device(model, xp)
    opt = optim.Adam(model.parameters(), lr=0.05)
    return Trainer(model, losses.SoftmaxCrossEntropy(), opt, regularizer=regularizers.L2(1e-3),
                   callbacks=callbacks, rng=7)


def _weights(model):
    return [p.data.get() if isinstance(p.data, DeviceArray) else p.data
            for p in model.parameters()]


def _callbacks(directory):
    """Callbacks with state on the model's arrays: best weights restored, checkpoints,
    a plateau schedule, snapshots of the model."""
    return [EarlyStopping(patience=1, min_delta=0.05), DivergenceGuard(),
            JSONLogger(directory / "log.json"), ModelCheckpoint(directory, every=1),
            ReduceLROnPlateau(patience=0, factor=0.5), SnapshotEnsemble(2)]


def test_fit_on_device_equals_numpy(xp, ufunc_path, tmp_path):
    x, y = _data()
    (tmp_path / "host").mkdir()
    host = _trainer(callbacks=_callbacks(tmp_path / "host"))
    host.fit(x[:48], y[:48], epochs=4, batch_size=16, validation_data=(x[48:], y[48:]))
    (tmp_path / "device").mkdir()
    device = _trainer(xp, callbacks=_callbacks(tmp_path / "device"))
    history = device.fit(xp.asarray(x[:48]), xp.asarray(y[:48]), epochs=4, batch_size=16,
                         validation_data=(xp.asarray(x[48:]), xp.asarray(y[48:])))
    for w, ref in zip(_weights(device.model), _weights(host.model), strict=True):
        numpy.testing.assert_array_equal(w, ref)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert all(type(v) is float for v in history[key]), (key, history[key])
        assert history[key] == host.history[key], key
    assert json.loads((tmp_path / "device" / "log.json").read_text())["history"]["val_loss"] \
        == history["val_loss"]
    assert sorted(p.name for p in (tmp_path / "device").iterdir()) == sorted(
        p.name for p in (tmp_path / "host").iterdir())
    scores = device.predict_scores(xp.asarray(x[48:]))
    assert type(scores) is numpy.ndarray
    numpy.testing.assert_array_equal(scores, host.predict_scores(x[48:]))
    numpy.testing.assert_array_equal(device.confusion_matrix(xp.asarray(x), xp.asarray(y)),
                                     host.confusion_matrix(x, y))
    snapshots = [c for c in device.callbacks if isinstance(c, SnapshotEnsemble)][0]
    host_snapshots = [c for c in host.callbacks if isinstance(c, SnapshotEnsemble)][0]
    numpy.testing.assert_array_equal(
        snapshots.ensemble(device.model).predict_proba(xp.asarray(x)),
        host_snapshots.ensemble(host.model).predict_proba(x))


def test_checkpoint_round_trip_on_device(xp, ufunc_path, tmp_path):
    x, y = _data()
    xd, yd = xp.asarray(x), xp.asarray(y)
    straight = _trainer(xp)
    straight.fit(xd, yd, epochs=2, batch_size=20)
    first = _trainer(xp)
    first.fit(xd, yd, epochs=1, batch_size=20)
    path = first.save(tmp_path / "ckpt.safetensors")
    state = first.model.state_dict()
    assert all(type(v) is numpy.ndarray for v in state.values())
    resumed = _trainer(xp)
    resumed.fit(xd, yd, epochs=1, batch_size=20, resume_from=path)
    assert all(isinstance(p.data, DeviceArray) for p in resumed.model.parameters())
    assert all(isinstance(v, DeviceArray) for s in resumed.optimizer.state.values()
               for v in s.values() if hasattr(v, "shape"))
    for w, ref in zip(_weights(resumed.model), _weights(straight.model)):
        numpy.testing.assert_array_equal(w, ref)
    for key in ("epoch", "loss", "accuracy", "lr"):
        assert resumed.history[key] == straight.history[key], key


def test_train_step_returns_a_float_on_device(xp):
    x, y = _data()
    trainer = _trainer(xp)
    value = trainer.train_step(xp.asarray(x[:8]), xp.asarray(y[:8]))
    assert type(value) is float and math.isfinite(value)


def test_fit_moves_host_batches_to_the_models_device(xp, ufunc_path, tmp_path):
    """Host (here memory-mapped) data, labels and weights with a model on the device: each
    mini-batch and each block of the validation and prediction passes goes to the device,
    as torch users move batches with .to(device); the run equals the all-device run."""
    x, y = _data()
    weight = numpy.linspace(0.5, 1.5, len(x))
    on_device = _trainer(xp)
    on_device.fit(xp.asarray(x[:48]), xp.asarray(y[:48]), epochs=2, batch_size=16,
                  sample_weight=xp.asarray(weight[:48]),
                  validation_data=(xp.asarray(x[48:]), xp.asarray(y[48:])))
    numpy.save(tmp_path / "x.npy", x)
    mapped = numpy.load(tmp_path / "x.npy", mmap_mode="r")
    from_host = _trainer(xp)
    from_host.fit(mapped[:48], y[:48], epochs=2, batch_size=16, sample_weight=weight[:48],
                  validation_data=(mapped[48:], y[48:]))
    assert all(isinstance(p.data, DeviceArray) for p in from_host.model.parameters())
    for w, ref in zip(_weights(from_host.model), _weights(on_device.model)):
        numpy.testing.assert_array_equal(w, ref)
    assert from_host.history["val_loss"] == on_device.history["val_loss"]
    numpy.testing.assert_array_equal(from_host.predict_scores(mapped),
                                      on_device.predict_scores(xp.asarray(x)))
