"""What OnRay's fits leave behind: outside reuse_actors, nothing (the actors' processes are
gone); inside it, actors kept between fits — the same processes, the same results as new
actors, nothing of the previous run left in them — and killed when the pool ends."""

import os
import signal
import time

import numpy as np
from strategy_helpers import blobs, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import Downpour, OnRay, reuse_actors
from ermlab.distributed.actor_pool import POOL
from ermlab.distributed.ray_workers import SyncWorker


def adagrad(p):
    return optim.Adagrad(p, lr=0.1)


def gone(pids, seconds=10.0):
    deadline = time.time() + seconds
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


def fit_downpour(x, y, pids):
    class Record:
        def on_epoch_end(self, trainer, logs):
            pids.extend(trainer.strategy._pids)

    trainer = mlp_trainer(optimizer=adagrad, strategy=OnRay(Downpour(workers=1)),
                          callbacks=[Record()])
    return trainer, trainer.fit(x, y, epochs=2, batch_size=8)


def kept_pids(ray, cls_name):
    return [ray.get(actor.reset.remote()) for kind, actors in POOL.idle.items()
            if kind[1] == cls_name for actor in actors]


def test_async_downpour_two_workers_at_once_data_put_once_and_actors_gone(ray_session):
    """Two workers in flight: every update counted, some stale; the data go to the object
    store once per fit (three epochs of index arrays); after the fit the actors' processes
    are gone (outside ``reuse_actors``, which the session's Ray runs in; first in the
    session, when the pool it suspends holds nothing yet), and a Ray the strategy did not
    start stays up."""
    x, y = blobs(192, seed=3)
    pids, refs = [], []

    class Record:
        def on_epoch_end(self, trainer, logs):
            pids.extend(trainer.strategy._pids)
            refs.append(trainer.strategy._data)

    trainer = mlp_trainer(optimizer=adagrad, strategy=OnRay(Downpour(workers=2)),
                          callbacks=[Record()])
    with reuse_actors(False):
        history = trainer.fit(x, y, epochs=3, batch_size=8)
    counts = trainer.strategy.staleness()
    assert sum(counts.values()) == history["server_updates"][-1] == 72
    assert max(counts) >= 1  # two workers in flight: some gradients are stale
    assert history["accuracy"][-1] > 0.8 and trainer.evaluate(x, y)["accuracy"] > 0.8
    assert refs[0] is not None and all(ref is refs[0] for ref in refs)  # one ray.put
    assert trainer.strategy._actors is None and trainer.strategy.server is None
    assert len(set(pids)) == 2 and None not in pids
    deadline = time.time() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert ray_session.is_initialized()  # a Ray the strategy did not start stays up


def test_kept_actors_run_the_next_fit_exactly_as_new_ones(ray_session):
    """Inside reuse_actors a second identical fit runs on the first fit's processes and ends
    with the same weights, history and server state bit for bit as the first (a fresh model
    and Adagrad: nothing of the first run stays in the actors); a dead kept actor is
    replaced; taking actors of a kind that holds CPUs kills the kept ones of other kinds;
    leaving the pool kills what it kept."""
    x, y = blobs(64, seed=7)
    with reuse_actors(False):  # suspends the session's pool: it starts empty, and what the
        #                        inner block keeps is killed when the block ends
        with reuse_actors():
            first_pids, second_pids = [], []
            first, h1 = fit_downpour(x, y, first_pids)
            assert first.strategy._actors is None  # the strategy let go of them: the pool has them
            servers = kept_pids(ray_session, "ServerActor")
            assert POOL.kept() == 2 and len(servers) == 1 and not gone(first_pids, 0.5)
            # lanes as the CPUs Ray assigned (1 and 0 here), not the machine's (2)
            lanes = int(os.environ.get("ERMLAB_NUM_THREADS", 1))
            assert ray_session.get([actor.lanes.remote() for actors in POOL.idle.values()
                                    for actor in actors]) == [lanes, lanes]
            second, h2 = fit_downpour(x, y, second_pids)
            assert set(second_pids) == set(first_pids) and None not in first_pids  # reused
            for name, value in weights(first).items():
                assert np.array_equal(weights(second)[name], value), name
            timings = {"time", "examples_per_second"}
            assert {k: v for k, v in h1.items() if k not in timings} == \
                {k: v for k, v in h2.items() if k not in timings}
            assert first.strategy.state_dict() == second.strategy.state_dict()

            server = kept_pids(ray_session, "ServerActor")[0]  # a kept actor dies while it waits
            os.kill(server, signal.SIGKILL)
            assert gone([server])
            third, h3 = fit_downpour(x, y, [])
            assert h3["loss"] == h1["loss"]  # a new server took its place
            assert kept_pids(ray_session, "ServerActor") != [server]

            taken = POOL.take(ray_session, SyncWorker, {"num_cpus": 1.0, "max_restarts": 0,
                                                        "concurrency_groups": {"mail": 1}}, 0)
            assert taken == [] and gone(first_pids)  # the kept worker held a CPU: killed
            servers = kept_pids(ray_session, "ServerActor")  # CPU-free servers stay
            assert servers
        assert POOL.kept() == 0 and gone(servers)
