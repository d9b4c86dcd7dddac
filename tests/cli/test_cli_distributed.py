"""`ermlab train --distributed {hogwild,sync,downpour,easgd} --workers N`: real runs on digits,
run directories, checkpoints with the strategy's state, --resume bit for bit, bad input."""

import csv
import json
import os

import numpy as np
import pytest
import safetensors.numpy

from ermlab.cli import main
from ermlab.distributed.hogwild import SEGMENT_PREFIX, available_cpus
from ermlab.training.checkpoint import read_checkpoint

SMALL = ("--hidden", "32", "--batch-size", "32")
STRATEGY_ARGS = {  # each with options away from their defaults
    "hogwild": ("--workers", "2"),
    "sync": ("--workers", "2", "--optimizer", "sgd", "--momentum", "0.9"),
    "downpour": ("--workers", "3", "--n-fetch", "2", "--n-push", "2", "--delay", "1",
                 "--shards", "2", "--lr", "0.05"),
    "easgd": ("--workers", "2", "--tau", "2", "--alpha", "0.3", "--easgd-momentum", "0.5",
              "--optimizer", "sgd", "--lr", "0.2"),
}
COLUMNS = {"hogwild": "examples_per_second", "downpour": "staleness_mean"}


def run_cli(*argv):
    return main([str(a) for a in argv])


def shm():
    mine = f"{SEGMENT_PREFIX}{os.getpid()}_"  # this process's: other test runs may be going on
    return {p for p in os.listdir("/dev/shm") if p.startswith(mine)} \
        if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("kind", list(STRATEGY_ARGS))
def test_each_strategy_trains_digits_and_records_the_run(kind, tmp_path, capsys):
    before = shm()
    run = tmp_path / kind
    assert run_cli("train", "--distributed", kind, *STRATEGY_ARGS[kind], *SMALL,
                   "--epochs", "3", "-q", "-o", run) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.85, metrics
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"] == kind and config["workers"] == int(STRATEGY_ARGS[kind][1])
    if kind == "downpour":
        assert config["optimizer"] == "adagrad"  # the paper's server optimizer by default
        assert (config["n_fetch"], config["n_push"], config["delay"], config["shards"]) == \
            (2, 2, 1, 2)
    if kind == "hogwild":
        assert config["optimizer"] == "sgd"
    if kind == "easgd":
        assert (config["tau"], config["alpha"], config["easgd_momentum"]) == (2, 0.3, 0.5)
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert len(rows) == 3
    if kind in COLUMNS:
        assert all(float(row[COLUMNS[kind]]) > 0 for row in rows[1:])
    saved = read_checkpoint(run / "last.safetensors").strategy
    assert saved["class"] == {"hogwild": "Hogwild", "sync": "SyncDataParallel",
                              "downpour": "Downpour", "easgd": "EASGD"}[kind]
    if kind == "downpour":  # each shard's counters and optimizer state are in the checkpoint
        shards = saved["state"]["server"]
        assert len(shards) == 2 and all(s["server"]["version"] > 0 for s in shards)
        assert all(s["optimizer"]["state"] for s in shards)
    assert shm() == before


def test_downpour_takes_the_delay_tolerant_server_optimizer(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--distributed", "downpour", "--workers", "4", "--delay", "4",
                   "--optimizer", "delaytolerantadagrad", "--lr", "0.05", *SMALL, "--epochs",
                   "3", "-q", "-o", run) == 0
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] >= 0.85
    saved = read_checkpoint(run / "last.safetensors")
    assert saved.optimizer_class == "DelayTolerantAdagrad"
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert float(rows[-1]["staleness_mean"]) >= 4  # the simulated delay is measured


def test_a_plain_run_records_no_strategy_keys(tmp_path):
    assert run_cli("train", *SMALL, "--epochs", "1", "-q", "-o", tmp_path / "plain") == 0
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not {"distributed", "workers", "n_fetch", "tau", "address"} & set(config)
    assert read_checkpoint(tmp_path / "plain" / "last.safetensors").strategy is None


def arrays(run):
    return safetensors.numpy.load_file(str(run / "last.safetensors"))


def history(run):
    return [{k: v for k, v in row.items() if k not in ("time", "examples_per_second")}
            for row in csv.DictReader((run / "history.csv").read_text().splitlines())]


RESUMABLE = dict(STRATEGY_ARGS, hogwild=("--workers", "1"))  # one worker: deterministic


@pytest.mark.parametrize("kind", list(RESUMABLE))
def test_resume_continues_bit_for_bit(kind, tmp_path):
    args = ("train", "--distributed", kind, *RESUMABLE[kind], *SMALL, "--dropout", "0.1"
            if kind != "hogwild" else "0.0", "-q")
    assert run_cli(*args, "--epochs", "4", "-o", tmp_path / "whole") == 0
    assert run_cli(*args, "--epochs", "2", "-o", tmp_path / "part") == 0
    assert run_cli("train", "--resume", tmp_path / "part", "--epochs", "4", "-q") == 0
    whole, part = arrays(tmp_path / "whole"), arrays(tmp_path / "part")
    assert whole.keys() == part.keys()
    assert any("strategy" in k for k in whole) or kind == "hogwild"
    for key in whole:
        assert np.array_equal(whole[key], part[key]), key
    assert history(tmp_path / "whole") == history(tmp_path / "part")


def test_resume_refuses_another_strategy_or_other_options(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--distributed", "downpour", *SMALL, "--epochs", "1", "-q",
                   "-o", run) == 0
    plain = tmp_path / "plain"
    assert run_cli("train", *SMALL, "--epochs", "1", "-q", "-o", plain) == 0
    capsys.readouterr()
    for argv, message in [
        (("--resume", run, "--distributed", "easgd"), "cannot change distributed"),
        (("--resume", run, "--workers", "3"), "cannot change workers"),
        (("--resume", run, "--n-push", "4"), "cannot change n_push"),
        (("--resume", plain, "--distributed", "sync"), "cannot change distributed"),
    ]:
        assert run_cli("train", *argv, "--epochs", "2") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert read_checkpoint(run / "last.safetensors").epoch == 1


@pytest.mark.parametrize("argv, message", [
    (("--distributed", "sync", "--workers", "0"), "workers to be an integer ≥ 1; got 0"),
    (("--distributed", "downpour", "--n-fetch", "0"), "n_fetch to be an integer ≥ 1"),
    (("--distributed", "downpour", "--delay", "-1"), "delay to be an integer ≥ 0"),
    (("--distributed", "easgd", "--alpha", "1.5"), "alpha in (0.0, 1.0)"),
    (("--distributed", "easgd", "--easgd-momentum", "1"), "momentum in [0.0, 1.0)"),
    (("--distributed", "easgd", "--set", "asynchronous=false", "--workers", "4", "--alpha",
      "0.3"), "workers·alpha < 1"),
    (("--distributed", "downpour", "--tau", "2"), "'tau' is an option of --distributed easgd"),
    (("--distributed", "sync", "--set", "n_push=2"), "'n_push' is an option of --distributed "
                                                     "downpour, not of sync"),
    (("--workers", "2",), "'workers' is an option of distributed training"),
    (("--distributed", "sync", "--backend", "inprocess", "--address", "auto"),
     "names a Ray cluster (a string such as HEAD:6379 or auto) for --backend ray"),
    (("--distributed", "hogwild", "--backend", "ray"), "not on Ray"),
    (("--address", "auto"), "'address' is an option of distributed training"),
    (("--distributed", "sync", "--set", "backend=mpi"), "unknown backend 'mpi'"),
    (("--distributed", "hogwild", "--optimizer", "adam"), "plain SGD"),
    (("--distributed", "hogwild", "--optimizer", "sgd", "--momentum", "0.9"), "plain SGD"),
    (("--distributed", "hogwild", "--l2", "0.001"), "no regularizer"),
    (("--distributed", "downpour", "--optimizer", "lbfgs"), "unknown optimizer"),
    (("--set", "distributed=ring"), "unknown distributed strategy 'ring'"),
])
def test_bad_input_is_one_line_before_anything_starts(argv, message, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *argv, "-o", run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not run.exists()


def _closed_port():
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_an_unreachable_cluster_is_one_line_before_the_run_directory(where, tmp_path, capsys,
                                                                    monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    address = f"127.0.0.1:{_closed_port()}"
    argv = ["--address", address] if where == "flag" else ["--backend", "ray"]
    if where == "environment":
        monkeypatch.setenv("RAY_ADDRESS", address)
    run = tmp_path / "run"
    assert run_cli("train", "--distributed", "sync", *argv, "-o", run) == 2
    err = capsys.readouterr().err.strip()
    name = f"--address {address}" if where == "flag" else f"RAY_ADDRESS={address}"
    assert len(err.splitlines()) == 1, err
    assert f"{name}: no Ray cluster answers at {address} (Connection refused)" in err, err
    assert "ray start --head" in err
    assert not run.exists()


def test_a_malformed_address_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    run = tmp_path / "run"
    assert run_cli("train", "--distributed", "easgd", "--address", "head-node", "-o", run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--address head-node is not a cluster address; use " \
        "HOST:PORT" in err, err
    assert not run.exists()


def test_check_address_refuses_a_closed_port_and_passes_a_local_ray():
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    from ermlab.distributed.address import check_address

    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ValueError, match="no Ray cluster answers"):
        check_address(address)
    check_address(None)  # a local Ray: nothing to check
    check_address("local")


def test_hogwild_warns_of_more_workers_than_cpus_follows_a_per_update_schedule_and_counts(
        tmp_path, capsys):
    """More workers than CPUs: warned and explained, the run goes on. --schedule
    inverse_time:D steps per update: after e epochs of U updates each the rate is
    α₀/(1 + D·U·e), and the checkpoint's optimizer counts U·e steps per parameter."""
    run = tmp_path / "run"
    workers = available_cpus() + 1
    assert run_cli("train", "--distributed", "hogwild", "--workers", workers, *SMALL,
                   "--schedule", "inverse_time:0.01", "--epochs", "2", "-q", "-o", run) == 0
    err = capsys.readouterr().err
    assert f"{workers} workers but only {workers - 1} CPUs" in err
    assert "share cores and run no faster" in err
    saved = read_checkpoint(run / "last.safetensors")
    updates = saved.step
    assert updates > 2 * 30  # digits: ~1600 training examples, batches of 32 per worker
    assert {s["step"] for s in saved.optimizer["state"].values()} == {updates}
    rows = csv.DictReader((run / "history.csv").read_text().splitlines())
    rates = [float(row["lr"]) for row in rows]
    np.testing.assert_allclose(rates, [0.1 / (1 + 0.01 * updates / 2 * e) for e in (1, 2)],
                               rtol=1e-12)
