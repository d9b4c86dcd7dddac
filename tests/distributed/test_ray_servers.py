"""Parameter shards over several server actors, and synchronous EASGD, on Ray: equal to the
in-process strategies where the order is deterministic. A sharded run of several workers
that learns and resumes from its checkpoint: tests/distributed/test_cli_ray.py; a state of
another shard count refused on resume: test_ray.py's round trip."""

import numpy as np
import pytest
from strategy_helpers import assert_weights_close, blobs, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import EASGD, Downpour, OnRay


def adagrad(p):
    return optim.Adagrad(p, lr=0.1)


def test_downpour_shards_one_worker_equals_in_process_shards(ray_session):
    x, y = blobs(64, seed=7)
    local = mlp_trainer(optimizer=adagrad, strategy=Downpour(workers=1, n_push=2, shards=2))
    remote = mlp_trainer(optimizer=adagrad,
                         strategy=OnRay(Downpour(workers=1, n_push=2, shards=2)))
    h1 = local.fit(x, y, epochs=3, batch_size=8)
    h2 = remote.fit(x, y, epochs=3, batch_size=8)
    assert_weights_close(weights(local), weights(remote), rtol=0, atol=0)
    assert h1["loss"] == h2["loss"] and h1["server_updates"] == h2["server_updates"] == [4, 8, 12]
    saved = remote.strategy.state_dict()["server"]  # one state per shard, with its Adagrad sums
    assert len(saved) == 2 and all(s["optimizer"]["state"] for s in saved)
    assert sum(remote.strategy.staleness().values()) == 2 * 12  # a push counts once per shard


def test_a_saved_state_of_another_shard_count_is_refused_when_loaded():
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    strategy = OnRay(Downpour(workers=1, shards=2))
    with pytest.raises(ValueError, match=r"has 1 shard\(s\); this run has shards=2 — resume "
                                         r"with shards=1"):
        strategy.load_state_dict({"clock": 4, "server": {"version": 4}})
    assert strategy.state_dict() == {"algorithm": "Downpour"}  # nothing taken


def test_synchronous_easgd_on_ray_equals_in_process(ray_session):
    """88 examples in batches of 8: 11 a epoch, so the rounds of 2 workers straddle epochs;
    the centre is sharded over two servers."""
    x, y = blobs(88, seed=4)
    sgd = lambda p: optim.SGD(p, lr=0.1)  # noqa: E731
    make = lambda: EASGD(workers=2, tau=2, alpha=0.3, asynchronous=False, shards=2)  # noqa: E731
    local = mlp_trainer(optimizer=sgd, strategy=make())
    remote = mlp_trainer(optimizer=sgd, strategy=OnRay(make()))
    h1 = local.fit(x, y, epochs=3, batch_size=8)
    h2 = remote.fit(x, y, epochs=3, batch_size=8)
    assert_weights_close(weights(local), weights(remote), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    start = mlp_trainer().model.state_dict()["0.weight"]
    assert np.abs(weights(local)["0.weight"] - start).max() > 0.05  # the centre moved
