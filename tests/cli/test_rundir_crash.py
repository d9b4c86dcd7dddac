"""kill -9 at random moments: the run directory always resumes (or restarts), bit for bit.

A real ``ermlab train`` process with a tiny full-batch model writes its checkpoint and
history many times a second, so the kills land during writes as well as between them.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy

from ermlab.cli import main
from ermlab.training import read_checkpoint

SETTINGS = ["--dataset", "moons", "--hidden", "3", "--optimizer", "sgd", "--lr", "0.1",
            "--momentum", "0.9", "--batch-size", "full", "--patience", "none"]


def start(run, epochs):
    if (run / "config.json").exists():
        argv = ["--resume", run, "--epochs", epochs]
    else:
        argv = [*SETTINGS, "--epochs", epochs, "--output", run]
    return subprocess.Popen([sys.executable, "-m", "ermlab.cli", "train", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after_epoch_lines(process, lines, extra):
    """SIGKILL ``process`` ``extra`` seconds after it printed ``lines`` epoch lines
    (or at once when it ends first)."""
    seen, deadline = 0, time.monotonic() + 15
    while seen < lines and process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.05)
        if ready:
            seen += process.stdout.readline().startswith("epoch")
    time.sleep(extra)
    process.send_signal(signal.SIGKILL)
    process.communicate()


def check_consistent(run):
    """Whatever the moment of the kill: each file that exists is whole."""
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())
    for name in ("last.safetensors", "best.safetensors"):
        if (run / name).exists():
            read_checkpoint(run / name)
            safetensors.numpy.load_file(str(run / "preprocessing.safetensors"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_at_random_moments_then_resume_bit_for_bit(tmp_path, capsys):
    rng = np.random.default_rng(int(os.environ.get("ERMLAB_KILL_SEED", "0")))
    run = tmp_path / "run"
    for attempt in range(4):
        process = start(run, 100_000)
        # the first kill lands before or during the first epoch's writes
        kill_after_epoch_lines(process, int(attempt > 0 and rng.integers(0, 6)),
                               rng.uniform(0, 0.15) if attempt else rng.uniform(0.3, 1.0))
        check_consistent(run)
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".")]
    done = read_checkpoint(run / "last.safetensors").epoch if (run / "last.safetensors"
                                                                  ).exists() else 0
    epochs = max(done, read_checkpoint(run / "best.safetensors").epoch
                 if (run / "best.safetensors").exists() else 0) + 2
    argv = ["--resume", run] if (run / "config.json").exists() else [*SETTINGS, "--output", run]
    rc = main(["train", *map(str, argv), "--epochs", str(epochs), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], leftovers
    reference = tmp_path / "reference"
    assert main(["train", *SETTINGS, "--epochs", str(epochs), "--output", str(reference),
                 "-q"]) == 0
    for name in ("last.safetensors", "best.safetensors"):
        a, b = read_checkpoint(run / name), read_checkpoint(reference / name)
        assert a.epoch == b.epoch
        for key in set(b.history) - {"time"}:  # wall time differs
            assert a.history[key] == b.history[key], key
        for key in b.model:
            np.testing.assert_array_equal(a.model[key], b.model[key])
