"""What the Trainer accepts: float class labels, empty predictions, lists, callbacks."""

import numpy as np
import pytest
from training_helpers import make_trainer

from ermlab import losses, nn, optim
from ermlab.training import Callback, EarlyStopping, Trainer


def test_whole_number_float_labels_train_and_report_accuracy_like_integer_labels(data):
    """y.astype(float32) of class indices: the same run as with the integer labels,
    accuracy logged, so EarlyStopping can monitor val_accuracy."""
    x, y, xv, yv = data
    runs = {}
    for kind in (np.int64, np.float32):
        stopper = EarlyStopping(monitor="val_accuracy", mode="max", patience=50)
        trainer = make_trainer(callbacks=[stopper])
        history = trainer.fit(x, y.astype(kind), epochs=3, batch_size=32,
                              validation_data=(xv, yv.astype(kind)))
        runs[kind] = (history, trainer.evaluate(xv, yv.astype(kind)))
    (ints, evaluated_ints), (floats, evaluated_floats) = runs[np.int64], runs[np.float32]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert floats[key] == ints[key], key
    assert evaluated_floats == evaluated_ints and "accuracy" in evaluated_floats


def test_float_labels_that_are_not_class_indices_are_still_refused(data):
    x, y, xv, yv = data
    labels = y.astype(np.float32)
    labels[5] = 1.5
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\); got 1.5"):
        make_trainer().fit(x, labels, epochs=1, batch_size=None)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\); got -1.0"):
        make_trainer().evaluate(xv, np.full(len(yv), -1.0, dtype=np.float32))


def test_regression_float_targets_log_no_accuracy(data):
    x, _, _, _ = data
    model = nn.mlp([4, 8, 1], rng=0)
    trainer = Trainer(model, losses.MeanSquaredError(), optim.SGD(model.parameters(), lr=0.01))
    target = np.round(x[:, :1])  # whole numbers, but regression targets
    history = trainer.fit(x, target, epochs=1, batch_size=32)
    assert "accuracy" not in history and set(trainer.evaluate(x, target)) == {"loss"}


def test_predict_on_no_examples_gives_empty_arrays_of_the_right_shape_and_dtype(data):
    x, y, _, _ = data
    trainer = make_trainer()
    trainer.fit(x, y, epochs=1)
    scores = trainer.predict_scores(x[:0])
    assert scores.shape == (0, 3) and scores.dtype == np.float32
    labels = trainer.predict(x[:0])
    assert labels.shape == (0,) and labels.dtype == trainer.predict(x[:2]).dtype
    assert trainer.model.training  # the mode is restored


def test_lists_are_refused_with_what_to_do(data):
    x, y, _, _ = data
    trainer = make_trainer()
    with pytest.raises(TypeError, match=r"x must be an array .*got list.*numpy.asarray\(x, "
                                        r"dtype=numpy.float32\)"):
        trainer.fit(x.tolist(), y, epochs=1)
    with pytest.raises(TypeError, match=r"y must be an array .*got list.*numpy.asarray\(y\)"):
        trainer.fit(x, y.tolist(), epochs=1)
    with pytest.raises(TypeError, match="x must be an array"):
        trainer.predict(x.tolist())
    assert trainer.epoch == 0


class _DuckTyped:  # no Callback base class, but an event method: accepted
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, trainer, logs):
        self.epochs += 1


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        ([1], r"Trainer callbacks\[0\] is not a callback: got 1 \(int\)"),
        ([EarlyStopping(), "csv"], r"Trainer callbacks\[1\] is not a callback: got 'csv'"),
        ([EarlyStopping], r"Trainer callbacks\[0\] is the class EarlyStopping.*EarlyStopping\("),
        (EarlyStopping(), "Trainer callbacks must be a list of callbacks.*\\[callback\\]"),
    ],
)
def test_things_that_are_not_callbacks_are_refused(callbacks, message):
    with pytest.raises(TypeError, match=message):
        make_trainer(callbacks=callbacks)


def test_duck_typed_callbacks_are_accepted_and_late_additions_are_checked(data):
    x, y, _, _ = data
    duck = _DuckTyped()
    trainer = make_trainer(callbacks=[duck, Callback()])
    trainer.fit(x, y, epochs=2)
    assert duck.epochs == 2
    trainer.callbacks.append(1)
    with pytest.raises(TypeError, match=r"Trainer callbacks\[2\] is not a callback"):
        trainer.fit(x, y, epochs=1)
