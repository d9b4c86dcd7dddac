"""The Trainer's augmentation on Ray: each worker augments its own batches with its own
generator from the strategy's seed; learns, reproducible with the seed, refused unpicklable."""

import threading

import numpy as np
import pytest
from strategy_helpers import mlp_trainer, weights

from ermlab import optim
from ermlab.data.transforms import AsImages, RandomHorizontalFlip
from ermlab.distributed import Downpour, OnRay, SyncDataParallel


def mirrored_blobs(n=160, seed=2):
    """Rows of a 2×2 image [[u+e, u−e], [v+f, v−f]]: class by (u, v), a left–right flip
    changes the pixels but not the class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (3, 2))
    y = rng.integers(0, 3, n)
    uv = centers[y] + rng.normal(0, 0.7, (n, 2))
    e = rng.normal(0, 1.0, (n, 2))
    x = np.stack([uv[:, 0] + e[:, 0], uv[:, 0] - e[:, 0], uv[:, 1] + e[:, 1],
                  uv[:, 1] - e[:, 1]], axis=1)
    return x, y.astype(np.int64)


FLIP = AsImages(RandomHorizontalFlip(), (1, 2, 2))


def fit(strategy, augment=FLIP):
    x, y = mirrored_blobs()
    trainer = mlp_trainer(optimizer=lambda p: optim.Adagrad(p, lr=0.1), strategy=strategy,
                          augment=augment)
    trainer.fit(x, y, epochs=3, batch_size=16)
    return trainer


def test_augmented_runs_learn_and_repeat_with_the_seed(ray_session):
    a = fit(OnRay(Downpour(workers=1, seed=3)))
    b = fit(OnRay(Downpour(workers=1, seed=3)))
    c = fit(OnRay(Downpour(workers=1, seed=4)))
    x, y = mirrored_blobs()
    assert a.evaluate(x, y)["accuracy"] > 0.8
    for k, v in weights(a).items():
        assert np.array_equal(v, weights(b)[k]), k
    # the seed drives the flips (no dropout here): a worker that skipped augment, or drew
    # from a fixed generator, would give c = a
    assert any(not np.array_equal(v, weights(c)[k]) for k, v in weights(a).items())
    sync = fit(OnRay(SyncDataParallel(workers=2, seed=5)))  # each replica flips its shard
    assert sync.evaluate(x, y)["accuracy"] > 0.8


class Locked:
    """An augmentation holding a lock: it cannot be pickled."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, x, rng):
        return x


def test_an_unpicklable_augment_is_a_one_line_error():
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    with pytest.raises(ValueError) as error:
        mlp_trainer(strategy=OnRay(Downpour(workers=1)), augment=Locked())
    assert "must be picklable" in str(error.value) and "\n" not in str(error.value)
