"""Helpers of the strategy tests: small problems and Trainer factories."""

import numpy as np

from ermlab import losses, nn, optim
from ermlab.training import Trainer


def blobs(n=96, seed=0, dim=4, classes=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (classes, dim))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1.0, (n, dim))
    return x.astype(dtype), y.astype(np.int64)


def mlp_trainer(strategy=None, optimizer=None, seed=0, rng=1, dtype=np.float64, **kwargs):
    model = nn.mlp([4, 8, 3], activation="tanh", rng=seed, dtype=dtype)
    opt = (optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer is None
           else optimizer(model.parameters()))
    return Trainer(model, losses.SoftmaxCrossEntropy(), opt, rng=rng, strategy=strategy, **kwargs)


def linear_trainer(strategy=None, lr=0.1, w0=(1.0, -2.0), optimizer=None):
    """ŷ = w·x with mean squared error: ∇ = (2/N) Σ (w·x − y) x (no hidden layer)."""
    model = nn.Linear(2, 1, bias=False, dtype=np.float64)
    model.weight.data[...] = np.asarray([w0])
    opt = optim.SGD(model.parameters(), lr=lr) if optimizer is None else optimizer(
        model.parameters())
    return Trainer(model, losses.MeanSquaredError(), opt, rng=0, strategy=strategy)


def linear_grad(w, x, y):
    return 2.0 / len(x) * ((x @ w - y[:, 0]) @ x)


def weights(trainer):
    return trainer.model.state_dict()


def assert_weights_close(a, b, rtol=1e-10, atol=1e-12):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)
