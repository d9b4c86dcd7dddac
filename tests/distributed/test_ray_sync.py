"""Synchronous data parallel on Ray: a ring all-reduce between the replicas (no reduce at the
driver), each replica applying the update itself; equal to one process with batch k·b."""

import threading

import numpy as np
import pytest
from strategy_helpers import assert_weights_close, blobs, mlp_trainer, weights
from test_ray_augment import fit, mirrored_blobs

from ermlab import optim
from ermlab.distributed import OnRay, SyncDataParallel
from ermlab.distributed.allreduce import Mailbox, ring_allreduce


@pytest.mark.parametrize("size, length", [(2, 7), (3, 10), (3, 2), (3, 1), (4, 13)])
def test_ring_allreduce_equals_a_plain_sum(size, length):
    """k ranks on threads, each with its own mailbox; odd lengths, fewer numbers than ranks."""
    rng = np.random.default_rng(size * 100 + length)
    vectors = [rng.standard_normal(length) for _ in range(size)]
    expected = np.sum(vectors, axis=0)
    boxes = [Mailbox() for _ in range(size)]
    out, sent = [None] * size, [0] * size

    def rank(r):
        def send(to, tag, chunk):
            sent[r] += chunk.size
            boxes[to].put(tag, chunk.copy())

        out[r] = ring_allreduce(vectors[r].copy(), r, size, send,
                                lambda tag: boxes[r].take(tag, timeout=10), tag="t")

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in range(size):
        np.testing.assert_allclose(out[r], expected, rtol=1e-14, atol=1e-14)
        assert np.array_equal(out[r], out[0])  # every rank the same bits
    if length >= size:  # bandwidth: 2(k−1) chunks of about length/k each
        assert max(sent) <= 2 * (size - 1) * -(-length // size)


def test_a_missing_peer_is_a_timeout_not_a_hang():
    with pytest.raises(TimeoutError, match="a peer of the all-reduce is gone"):
        ring_allreduce(np.ones(4), 0, 2, lambda *a: None, lambda tag: Mailbox().take(tag, 0.05))


def test_sync_on_ray_equals_single_process_with_batch_k_times_b(ray_session):
    """Three replicas (a ring of three) with Adam, whose state (moments, step) must come back.
    The replicas' update is the same code for every optimizer; SGD with momentum and k = 2
    are checked in process (test_sync.py) and the ring of two on threads (above)."""
    workers = 3

    def make_opt(p):
        return optim.Adam(p, lr=0.01)

    x, y = blobs(100)  # 100: a smaller last batch, cut unevenly
    b = 6
    single = mlp_trainer(optimizer=make_opt)
    sync = mlp_trainer(optimizer=make_opt, strategy=OnRay(SyncDataParallel(workers=workers)))
    h1 = single.fit(x, y, epochs=4, batch_size=workers * b)
    h2 = sync.fit(x, y, epochs=4, batch_size=workers * b)
    assert single.step == sync.step >= 20
    assert_weights_close(weights(single), weights(sync), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-12)
    assert h1["accuracy"] == h2["accuracy"]
    state = single.optimizer.state_dict()["state"]  # the replicas' optimizer state came back
    for key, value in sync.optimizer.state_dict()["state"].items():
        for name, array in value.items():
            np.testing.assert_allclose(array, state[key][name], rtol=1e-9, atol=1e-11)
    start = mlp_trainer().model.state_dict()["0.weight"]
    assert np.abs(weights(single)["0.weight"] - start).max() > 0.1  # it did train


def test_each_replica_augments_its_shard_and_learns(ray_session):
    """The Trainer's augment on synchronous replicas: each flips its shard with its own
    generator from the seed, and the run learns (test_ray_augment.py: the generators)."""
    x, y = mirrored_blobs()
    sync = fit(OnRay(SyncDataParallel(workers=3, seed=5)))
    assert sync.evaluate(x, y)["accuracy"] > 0.8


def test_a_killed_sync_worker_stops_the_fit_naming_it(ray_session):
    """A replica SIGKILLed mid-epoch: the fit stops with an error naming it (the others wait
    for its chunks: the step cannot go on). Three replicas, so that the session's
    reuse_actors hands this test the replicas of the tests above instead of new ones."""
    class Kill:
        def on_batch_end(self, trainer, logs):
            if logs["batch"] == 2:
                ray_session.kill(trainer.strategy._actors[1])

    x, y = blobs(96)
    trainer = mlp_trainer(strategy=OnRay(SyncDataParallel(workers=3), steps_per_call=1),
                          callbacks=[Kill()])
    with pytest.raises(RuntimeError, match="worker 1 died"):
        trainer.fit(x, y, epochs=1, batch_size=24)
    trainer.strategy.close()
