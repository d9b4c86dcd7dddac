"""SyncDataParallel: k shards of the batch, averaged gradients = one batch of k·b."""

import numpy as np
import pytest
from strategy_helpers import assert_weights_close, blobs, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import SyncDataParallel


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: optim.Adam(p, lr=0.01),
], ids=["sgd-momentum", "adam"])
@pytest.mark.parametrize("workers", [2, 3])
def test_sync_equals_single_process_with_batch_k_times_b(make_opt, workers):
    x, y = blobs(100)  # 100 = not a multiple of the batch: a smaller, unevenly cut last batch
    b = 8
    single = mlp_trainer(optimizer=make_opt)
    sync = mlp_trainer(optimizer=make_opt, strategy=SyncDataParallel(workers=workers))
    h1 = single.fit(x, y, epochs=6, batch_size=workers * b)
    h2 = sync.fit(x, y, epochs=6, batch_size=workers * b)
    assert single.step == sync.step > 20
    assert_weights_close(weights(single), weights(sync))
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-10)
    np.testing.assert_allclose(h1["accuracy"], h2["accuracy"])
    start = mlp_trainer().model.state_dict()["0.weight"]
    assert np.abs(weights(single)["0.weight"] - start).max() > 0.1  # it did train


def test_sync_weights_shards_by_sample_weight():
    x, y = blobs(60)
    w = np.random.default_rng(3).uniform(0, 2, 60)
    single = mlp_trainer()
    sync = mlp_trainer(strategy=SyncDataParallel(workers=4))
    single.fit(x, y, epochs=3, batch_size=16, sample_weight=w)
    sync.fit(x, y, epochs=3, batch_size=16, sample_weight=w)
    assert_weights_close(weights(single), weights(sync))


def test_sync_batch_norm_uses_per_shard_statistics():
    """With batch norm the shards' statistics differ from the batch's: not the big batch."""
    from ermlab import losses, nn
    from ermlab.training import Trainer

    x, y = blobs(64)

    def make(strategy):
        model = nn.mlp([4, 8, 3], batch_norm=True, rng=0, dtype=np.float64)
        return Trainer(model, losses.SoftmaxCrossEntropy(),
                       optim.SGD(model.parameters(), lr=0.1), rng=1, strategy=strategy)

    one, two = make(None), make(SyncDataParallel(workers=2))
    one.fit(x, y, epochs=1, batch_size=32)
    two.fit(x, y, epochs=1, batch_size=32)
    diff = max(np.abs(one.model.state_dict()[k] - two.model.state_dict()[k]).max()
               for k in one.model.state_dict())
    assert diff > 1e-6


def test_sync_bad_workers():
    with pytest.raises(ValueError, match="workers to be an integer ≥ 1; got 0"):
        SyncDataParallel(workers=0)
    with pytest.raises(ValueError, match="workers"):
        SyncDataParallel(workers=2.5)
