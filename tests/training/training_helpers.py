"""Helpers shared by the training tests: a small 3-class problem, a trainer factory,
callbacks that script metrics and record weights."""

import numpy as np

from ermlab import losses, nn, optim
from ermlab.training import Callback, Trainer


def three_blobs(n, seed, dim=4, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (classes, dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1.0, (n, dim))
    return x.astype(np.float32), y.astype(np.int64)


def make_trainer(callbacks=(), lr=0.1, momentum=0.9, seed=0, rng=1, optimizer=None, **kwargs):
    model = nn.mlp([4, 8, 3], activation="tanh", rng=seed)
    opt = (optim.SGD(model.parameters(), lr=lr, momentum=momentum) if optimizer is None
           else optimizer(model.parameters()))
    return Trainer(model, losses.SoftmaxCrossEntropy(), opt, callbacks=callbacks, rng=rng,
                   **kwargs)


class Scripted(Callback):
    """Puts ``values[epoch - 1]`` into the epoch logs as ``key`` before other callbacks run."""

    order = -10

    def __init__(self, key, values):
        self.key, self.values = key, list(values)

    def on_epoch_end(self, trainer, logs):
        logs[self.key] = self.values[logs["epoch"] - 1]


class Snapshots(Callback):
    """Records the model's weights after every epoch (before any restoring at train end)."""

    order = 50

    def __init__(self):
        self.weights = {}

    def on_epoch_end(self, trainer, logs):
        self.weights[logs["epoch"]] = trainer.model.state_dict()


def weights_equal(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
