"""`ermlab train --distributed ... --backend ray`: the command line on H8's Ray backend (OnRay),
on the session's Ray (tests/distributed/conftest.py); and the one-line error without Ray."""

import csv
import json

import pytest

from ermlab.cli import main
from ermlab.distributed import ray_backend
from ermlab.distributed.hogwild import available_cpus
from ermlab.training.checkpoint import read_checkpoint


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_downpour_on_ray_trains_records_and_resumes(ray_session, tmp_path, capsys):
    """More workers than CPUs (warned), parameters on two server shards: the run learns,
    its checkpoint holds each shard's state, and --resume continues the shards' counters."""
    run = tmp_path / "run"
    workers = available_cpus() + 1
    assert run_cli("train", "--distributed", "downpour", "--backend", "ray", "--workers",
                   workers, "--n-push", "2", "--shards", "2", "--lr", "0.05", "--hidden", "32",
                   "--epochs", "2", "-q", "-o", run) == 0
    err = capsys.readouterr().err
    assert f"{workers} workers on a local Ray of {workers - 1} CPUs" in err  # warned, explained
    config = json.loads((run / "config.json").read_text())
    assert (config["distributed"], config["backend"], config["workers"], config["shards"]) == \
        ("downpour", "ray", workers, 2)
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] >= 0.85
    saved = read_checkpoint(run / "last.safetensors")
    shards = saved.strategy["state"]["server"]  # per shard: its counters and its Adagrad state
    assert saved.strategy["class"] == "OnRay" and len(shards) == 2
    assert all(s["server"]["version"] > 0 and s["optimizer"]["state"] for s in shards)
    before = shards[0]["server"]["version"]
    assert run_cli("train", "--resume", run, "--backend", "inprocess", "--epochs", "3") == 2
    assert "cannot change backend" in capsys.readouterr().err
    assert run_cli("train", "--resume", run, "--epochs", "3", "-q") == 0
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    updates = [int(float(r["server_updates"])) for r in rows]
    assert updates[2] > updates[1] == before  # the server's counter continued from the checkpoint


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    def missing():
        raise ImportError(ray_backend.RAY_MISSING)

    monkeypatch.setattr(ray_backend, "import_ray", missing)
    run = tmp_path / "run"
    assert run_cli("train", "--distributed", "sync", "--address", "HEAD:6379", "-o", run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "ermlab[distributed]"' in err, err
    assert not run.exists()


@pytest.mark.parametrize("argv, message", [
    (("--distributed", "downpour", "--backend", "ray", "--delay", "2"), "use delay=0"),
    (("--distributed", "easgd", "--backend", "ray", "--delay", "1"), "use delay=0"),
])
def test_what_ray_cannot_run_is_refused_before_anything_starts(argv, message, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    run = tmp_path / "run"
    assert run_cli("train", *argv, "-o", run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not run.exists()
