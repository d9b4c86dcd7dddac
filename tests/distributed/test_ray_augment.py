"""The Trainer's augmentation on Ray: each worker augments its own batches with its own
generator from the strategy's seed (equal to an in-process oracle flipping with that
generator); learns; refused when unpicklable. (Synchronous replicas augmenting their
shards: test_ray_sync.py, beside the other runs on the same replicas.)"""

import threading

import numpy as np
import pytest
from strategy_helpers import mlp_trainer, weights

from ermlab import optim
from ermlab.data.transforms import AsImages, RandomHorizontalFlip
from ermlab.distributed import Downpour, OnRay
from ermlab.distributed.ray_workers import worker_seeds


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


def flips_of_worker(seed, workers, rank):
    """The oracle's augmentation: FLIP drawing from the generator OnRay gives worker ``rank``
    (``worker_seeds``), not from the Trainer's (which then only orders the batches)."""
    generator = np.random.default_rng(worker_seeds(seed, workers)[rank][1])
    return lambda x, rng: FLIP(x, generator)


def test_each_worker_augments_with_its_own_generator_from_the_seed(ray_session):
    """One worker: the Ray run equals, bit for bit, the in-process run that flips its batches
    in order with worker 0's generator from seed 3 — so augment is applied, once per batch,
    with the seed's generator (a worker that skipped augment or drew from a fixed generator
    would differ; the in-process runs of seeds 3 and 4 differ, so the seed is what decides).
    The run is therefore reproducible from the seed, and it learns."""
    x, y = mirrored_blobs()
    ray_run = fit(OnRay(Downpour(workers=1, seed=3)))
    oracle = fit(Downpour(workers=1), augment=flips_of_worker(3, 1, 0))
    for k, v in weights(oracle).items():
        assert np.array_equal(v, weights(ray_run)[k]), k
    other_seed = fit(Downpour(workers=1), augment=flips_of_worker(4, 1, 0))
    unflipped = fit(Downpour(workers=1), augment=None)
    for run in (other_seed, unflipped):
        assert any(not np.array_equal(v, weights(run)[k]) for k, v in weights(oracle).items())
    assert ray_run.evaluate(x, y)["accuracy"] > 0.8


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
