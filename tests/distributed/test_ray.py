"""The Ray backend (OnRay): equal to the in-process strategies where it must be, real
asynchrony, server state through a checkpoint, a killed worker, nothing left behind."""

import os
import signal
import sys
import time

import numpy as np
import pytest
from ray_helpers import OWNED_RAY_CHECK
from strategy_helpers import assert_weights_close, blobs, mlp_trainer, weights

from ermlab import optim
from ermlab.distributed import EASGD, Downpour, OnRay, SyncDataParallel, ray_backend
from ermlab.training.checkpoint import CheckpointError


def adagrad(p):
    return optim.Adagrad(p, lr=0.1)


def test_without_ray_one_line_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "ermlab\[distributed\]"'):
        OnRay(Downpour(workers=1))


@pytest.mark.parametrize("strategy, match", [
    (Downpour(workers=1, delay=2), "use delay=0"),
    (EASGD(workers=2, delay=1), "use delay=0"),
])
def test_options_ray_cannot_run_are_refused_before_anything_starts(strategy, match):
    pytest.importorskip("ray")
    with pytest.raises(ValueError, match=match):
        OnRay(strategy)
    with pytest.raises(ValueError, match="steps_per_call to be an integer ≥ 1; got 0"):
        OnRay(Downpour(workers=1), steps_per_call=0)


def _closed_port():
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_an_unreachable_cluster_is_one_line_when_onray_is_built(where, monkeypatch):
    """The Python API checks the address as the CLI does, instead of hanging in ray.init."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if where == "environment":
        monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        OnRay(Downpour(workers=1), address=address if where == "argument" else None)
    assert time.monotonic() - start < 5
    message = str(error.value)
    name = f"OnRay's address {address}" if where == "argument" else f"RAY_ADDRESS={address}"
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{name}: no Ray cluster answers at {address}"), message
    assert "ray start --head" in message
    with pytest.raises(ValueError, match="OnRay's address head-node is not a cluster address"):
        OnRay(Downpour(workers=1), address="head-node")


def test_downpour_one_worker_equals_in_process(ray_session):
    x, y = blobs(90)
    local = mlp_trainer(optimizer=adagrad, strategy=Downpour(workers=1))
    remote = mlp_trainer(optimizer=adagrad, strategy=OnRay(Downpour(workers=1)))
    h1 = local.fit(x, y, epochs=3, batch_size=8)
    h2 = remote.fit(x, y, epochs=3, batch_size=8)
    for k, v in weights(local).items():
        assert np.array_equal(v, weights(remote)[k]), k
    assert h1["loss"] == h2["loss"] and h1["accuracy"] == h2["accuracy"]
    assert h2["staleness_max"] == [0] * 3 and h2["server_updates"] == h1["server_updates"]
    sums = remote.optimizer.state_dict()["state"]  # the server's Adagrad state came back
    for key, value in local.optimizer.state_dict()["state"].items():
        np.testing.assert_array_equal(sums[key]["sum"], value["sum"])


def test_server_state_survives_a_checkpoint_round_trip(ray_session, tmp_path):
    """The server's counters (and, through the Trainer's optimizer, its Adagrad state) are
    checkpointed and restored; a run of another shard count or algorithm is refused on
    resume, before any actor starts."""
    x, y = blobs(96, seed=5)
    first = mlp_trainer(optimizer=adagrad,  # calls of 3: each worker pushes 3 times an epoch
                        strategy=OnRay(Downpour(workers=2, n_push=2), steps_per_call=3))
    first.fit(x, y, epochs=2, batch_size=8)
    path = first.save(tmp_path / "run")
    saved = first.strategy.state_dict()
    assert saved["server"]["version"] == 12 and saved["clock"] == 24
    other = mlp_trainer(optimizer=adagrad, strategy=OnRay(Downpour(workers=2, shards=2)))
    with pytest.raises(CheckpointError, match=r"has 1 shard\(s\); this run has shards=2"):
        other.resume(path)  # refused on resume, before any actor starts
    assert other.strategy.servers is None and other.strategy._actors is None
    for strategy in (OnRay(SyncDataParallel(workers=2)), OnRay(EASGD(workers=2))):
        other = mlp_trainer(optimizer=adagrad, strategy=strategy)  # the algorithm recorded
        with pytest.raises(CheckpointError, match=r"written by OnRay\(Downpour\); this run is "
                                                  r"OnRay\((SyncDataParallel|EASGD)\)"):
            other.resume(path)
        assert other.strategy.state_dict() == {"algorithm": type(strategy.strategy).__name__}
    second = mlp_trainer(optimizer=adagrad,
                         strategy=OnRay(Downpour(workers=2, n_push=2), steps_per_call=3))
    second.resume(path)
    assert second.strategy.state_dict() == saved
    assert_weights_close(weights(first), weights(second), rtol=0, atol=0)
    history = second.fit(x, y, epochs=1, batch_size=8)
    assert history["server_updates"][-1] == 18  # the server's counter went on from 12
    assert sum(second.strategy.staleness().values()) == 18


class _KillWorker:
    """At batch ``at`` of the first epoch, SIGKILL the process of OnRay's worker 1."""

    def __init__(self, at):
        self.at, self.killed = at, None

    def on_batch_end(self, trainer, logs):
        if logs["epoch"] == 1 and logs["batch"] == self.at:
            self.killed = trainer.strategy._pids[1]  # known once its first batch came back
            os.kill(self.killed, signal.SIGKILL)


@pytest.mark.parametrize("kind", ["downpour", "easgd"])
def test_a_killed_async_worker_is_restarted_and_the_run_reaches_the_in_process_accuracy(
        ray_session, kind):
    """Worker 1 SIGKILLed in the first epoch: Ray restarts it (a Downpour worker pulls θ, an
    EASGD worker starts from the centre x̃) and the run ends within 0.03 of the accuracy of the
    same strategy in process; EASGD logs a finite elastic distance. The session's
    reuse_actors keeps worker 0 for the next fit, not the restarted worker 1."""
    def make():
        return Downpour(workers=2) if kind == "downpour" else EASGD(workers=2, tau=2)

    def sgd(p):
        return optim.SGD(p, lr=0.1)

    x, y = blobs(192, seed=4)
    local = mlp_trainer(optimizer=sgd, strategy=make())
    local.fit(x, y, epochs=4, batch_size=8)
    goal = local.evaluate(x, y)["accuracy"]
    assert goal > 0.8
    killer = _KillWorker(at=4)
    trainer = mlp_trainer(optimizer=sgd,  # calls of 2 steps: worker 1 has calls left to retry
                          strategy=OnRay(make(), steps_per_call=2), callbacks=[killer])
    history = trainer.fit(x, y, epochs=4, batch_size=8)
    assert killer.killed is not None
    assert history["worker_restarts"][0] >= 1
    assert trainer.evaluate(x, y)["accuracy"] >= goal - 0.03
    if kind == "easgd":
        assert np.isfinite(history["elastic_distance"]).all()
    kept, restarted = trainer.strategy._pids
    assert restarted != killer.killed and os.path.exists(f"/proc/{kept}")
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{restarted}") and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{restarted}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ray_it_started_is_shut_down_after_the_fit():
    """A fresh process (the session Ray would be found and kept): OnRay starts its own Ray
    and leaves no Ray process or session files behind after the fit (owned_ray_check.py;
    started in the background with the session's Ray, see ray_helpers.OwnedRayCheck). That
    the same ``close`` runs when a fit ends by Ctrl-C or by an error: the next test."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    code, out, err = OWNED_RAY_CHECK.start().result()
    assert code == 0, err[-2000:]
    assert "after success True" in out, out + err[-2000:]


class _Fails:  # an error after the epoch, outside the driver's waits on Ray
    def on_epoch_end(self, trainer, logs):
        raise RuntimeError("callback failed")


@pytest.mark.parametrize("ending", ["ctrl-c", "callback error"])
def test_a_ray_it_started_is_stopped_once_however_the_fit_ends(ray_session, monkeypatch,
                                                                ending):
    """Ctrl-C while the driver collects the workers' results, or an error raised in
    on_epoch_end (Strategy.end_fit runs however the fit ends): the actors are killed and the
    Ray the strategy started is stopped, once. The session's Ray stands in for a Ray OnRay
    started (start_ray says so); stop_ray is recorded instead of run — the previous test
    shows what it leaves behind: nothing."""
    stopped = []
    monkeypatch.setattr(ray_backend, "start_ray", lambda *args: (True, "/tmp/ermray-its-own"))
    monkeypatch.setattr(ray_backend, "stop_ray", stopped.append)
    pids = []
    x, y = blobs(32)
    if ending == "ctrl-c":
        strategy = OnRay(Downpour(workers=1), steps_per_call=1)
        collect, calls = strategy._collect, []

        def interrupted(trainer):
            calls.append(1)
            pids.extend(p for p in strategy._pids if p is not None)
            if len(calls) == 3:
                raise KeyboardInterrupt
            collect(trainer)

        strategy._collect = interrupted
        trainer = mlp_trainer(strategy=strategy)
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(x, y, epochs=1, batch_size=8)
    else:
        class Record(_Fails):
            def on_epoch_end(self, trainer, logs):
                pids.extend(trainer.strategy._pids)
                super().on_epoch_end(trainer, logs)

        trainer = mlp_trainer(optimizer=adagrad, callbacks=[Record()],
                              strategy=OnRay(Downpour(workers=1)))
        with pytest.raises(RuntimeError, match="callback failed"):
            trainer.fit(x, y, epochs=2, batch_size=8)
    assert stopped == ["/tmp/ermray-its-own"]
    assert not trainer.strategy._owns_ray and trainer.strategy._actors is None
    assert pids and None not in pids
    deadline = time.time() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
