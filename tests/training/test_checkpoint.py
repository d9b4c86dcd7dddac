"""Checkpoint files: exact round trips, atomic writes, clear errors for damaged files."""

import os
import pickle

import numpy as np
import pytest
import safetensors.numpy
from training_helpers import make_trainer, weights_equal

from ermlab import nn, optim
from ermlab.training import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from ermlab.training import checkpoint as ckpt


def assert_same(a, b, where="/"):
    """Deep equality: same types (tuple stays tuple, int keys stay int), arrays bit-equal."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}{key}/")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}{i}/")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def trained(data, optimizer=None):
    x, y, _, _ = data
    trainer = make_trainer(optimizer=optimizer)
    trainer.fit(x, y, epochs=2, batch_size=16)
    return trainer


OPTIMIZERS = {
    "sgd-momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.99)),
    "lbfgs": lambda p: optim.LBFGS(p, lr=1.0, history_size=3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_round_trips_exactly(data, tmp_path, name):
    if not hasattr(optim, {"sgd-momentum": "SGD", "adam": "Adam", "lbfgs": "LBFGS"}[name]):
        pytest.skip(f"{name} not available")
    trainer = make_trainer(optimizer=OPTIMIZERS[name])
    x, y, _, _ = data
    if name == "lbfgs":
        def closure():
            trainer.optimizer.zero_grad()
            value = trainer.loss.forward(trainer.model.forward(x), y)
            trainer.model.backward(trainer.loss.backward(), input_grad=False)
            return value
        for _ in range(4):
            trainer.optimizer.step(closure)
    else:
        trainer.fit(x, y, epochs=2, batch_size=16)
    saved = trainer.optimizer.state_dict()
    path = save_checkpoint(tmp_path / "c.safetensors", optimizer=trainer.optimizer)
    assert_same(read_checkpoint(path).optimizer, saved)


def test_values_json_cannot_spell_come_back_exactly(tmp_path):
    extra = {
        "tuple": (1, 2.5, "a"), "int_keys": {0: "zero", 3: [np.arange(3)]},
        "nested": [{"a": np.float32(1.5)}, (np.int64(7), None, True)],
        "big": 2**100, "nan": float("nan"), "inf": -float("inf"),
        "scalar_array": np.array(2.0), "empty": np.zeros((0, 3), np.float32),
        "__dunder": 1,
    }
    path = save_checkpoint(tmp_path / "c.safetensors", extra={"x": extra})
    assert_same(read_checkpoint(path).extra["x"], extra)


def test_rng_state_and_history_round_trip(data, tmp_path):
    trainer = trained(data)
    path = trainer.save(tmp_path / "c.safetensors", note="hello")
    checkpoint = read_checkpoint(path)
    assert checkpoint.rng == trainer.rng.bit_generator.state
    assert checkpoint.history == trainer.history and checkpoint.epoch == 2
    assert checkpoint.step == trainer.step == 12 and checkpoint.extra == {"note": "hello"}
    assert weights_equal(checkpoint.model, trainer.model.state_dict())


def test_a_directory_gets_the_default_file_name(data, tmp_path):
    trainer = trained(data)
    assert trainer.save(tmp_path) == tmp_path / "checkpoint.safetensors"
    assert read_checkpoint(tmp_path).epoch == 2


def test_loading_never_unpickles(data, tmp_path, monkeypatch):
    trainer = trained(data)
    path = trainer.save(tmp_path / "c.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    fresh = make_trainer(seed=5)
    fresh.resume(path)
    assert weights_equal(fresh.model.state_dict(), trainer.model.state_dict())


# -- atomic writes ------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_old_checkpoint(data, tmp_path, monkeypatch):
    trainer = trained(data)
    path = trainer.save(tmp_path / "c.safetensors")
    old = path.read_bytes()
    x, y, _, _ = data
    trainer.fit(x, y, epochs=1)

    def crash_halfway(file, payload):
        file.write(payload[: len(payload) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt, "_write", crash_halfway)
    with pytest.raises(OSError, match="simulated"):
        trainer.save(path)
    assert path.read_bytes() == old
    assert read_checkpoint(path).epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]  # no temp file left


def test_a_failed_rename_leaves_the_old_checkpoint(data, tmp_path, monkeypatch):
    trainer = trained(data)
    path = trainer.save(tmp_path / "c.safetensors")
    x, y, _, _ = data
    trainer.fit(x, y, epochs=1)

    def crash(*args):
        raise OSError("power cut (simulated)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        trainer.save(path)
    monkeypatch.undo()
    assert read_checkpoint(path).epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_writes_are_flushed_to_disk_before_the_rename(data, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    trained(data).save(tmp_path / "c.safetensors")
    assert calls == ["fsync", "replace", "fsync"]  # the file, the rename, the directory


# -- damaged files -----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_a_truncated_checkpoint_is_a_clear_error_and_the_previous_one_loads(
        data, tmp_path, keep):
    trainer = trained(data)
    good = trainer.save(tmp_path / "best.safetensors")
    bad = trainer.save(tmp_path / "last.safetensors")
    content = bad.read_bytes()
    bad.write_bytes(content[:keep] if keep >= 0 else content[:keep])
    with pytest.raises(CheckpointError, match="last.safetensors is truncated or corrupt"):
        make_trainer().resume(bad)
    fresh = make_trainer(seed=7)
    fresh.resume(good)
    assert weights_equal(fresh.model.state_dict(), trainer.model.state_dict())


def test_flipped_bytes_in_the_arrays_are_detected(data, tmp_path):
    path = trained(data).save(tmp_path / "c.safetensors")
    content = bytearray(path.read_bytes())
    content[-3] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="SHA-256"):
        read_checkpoint(path)


def test_garbage_and_foreign_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        read_checkpoint(garbage)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an ermlab checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_a_checkpoint_of_another_architecture_is_refused_untouched(data, tmp_path):
    path = trained(data).save(tmp_path / "c.safetensors")
    wider = make_trainer()
    wider.model = nn.mlp([4, 9, 3], rng=0)
    before = wider.model.state_dict()
    with pytest.raises(CheckpointError, match=r"'0.weight' has shape \(8, 4\); the model "
                                              r"expects \(9, 4\)"):
        load_checkpoint(path, model=wider.model)
    assert weights_equal(wider.model.state_dict(), before)
    deeper = nn.mlp([4, 8, 8, 3], rng=0)
    with pytest.raises(CheckpointError, match=r"missing weights \['4.bias', '4.weight'\]"):
        load_checkpoint(path, model=deeper)


def test_missing_parts_and_other_optimizers_are_refused(data, tmp_path):
    trainer = trained(data)
    weights_only = save_checkpoint(tmp_path / "w.safetensors", model=trainer.model)
    with pytest.raises(CheckpointError, match="has no optimizer state"):
        make_trainer().resume(weights_only)
    load_checkpoint(weights_only, model=make_trainer().model)  # weights alone are fine
    full = trainer.save(tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="holds the state of a SGD optimizer; this run "
                                              "uses Adam"):
        make_trainer(optimizer=lambda p: optim.Adam(p, lr=0.01)).resume(full)


def test_unsupported_values_are_named_when_saving(tmp_path):
    with pytest.raises(TypeError, match="got object at /extra/bad"):
        save_checkpoint(tmp_path / "c.safetensors", extra={"bad": object()})
    assert not any(tmp_path.iterdir())


# -- what the digest covers, temporaries, permissions ------------------------------------


def _rewrite_metadata(path, change):
    """Rewrite a checkpoint's safetensors metadata with ``change(metadata)``, arrays kept."""
    data = path.read_bytes()
    metadata = dict(ckpt._metadata(path, data))
    change(metadata)
    path.write_bytes(safetensors.numpy.save(safetensors.numpy.load(data), metadata=metadata))


def test_an_edited_json_state_is_detected(data, tmp_path):
    import json

    path = trained(data).save(tmp_path / "c.safetensors")

    def edit_epoch(metadata):
        state = json.loads(metadata["state"])
        state["epoch"] = 7
        metadata["state"] = json.dumps(state)

    _rewrite_metadata(path, edit_epoch)
    with pytest.raises(CheckpointError, match="arrays and JSON state do not match the SHA-256"):
        read_checkpoint(path)


def test_version_1_checkpoints_are_still_read(data, tmp_path):
    trainer = trained(data)
    path = trainer.save(tmp_path / "c.safetensors")
    arrays = safetensors.numpy.load(path.read_bytes())

    def as_version_1(metadata):
        metadata["version"] = "1"
        metadata["sha256"] = ckpt._digest(arrays)  # version 1: the arrays only

    _rewrite_metadata(path, as_version_1)
    checkpoint = read_checkpoint(path)
    assert checkpoint.epoch == 2 and weights_equal(checkpoint.model, trainer.model.state_dict())
    key = sorted(arrays)[0]
    arrays[key] = arrays[key] + 1
    path.write_bytes(safetensors.numpy.save(arrays, metadata=ckpt._metadata(path,
                                                                           path.read_bytes())))
    with pytest.raises(CheckpointError, match="its arrays do not match"):
        read_checkpoint(path)


def _dead_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".c.safetensors.{dead}.abc123{ckpt.TEMPORARY_SUFFIX}"
    in_flight = tmp_path / f".c.safetensors.{alive}.def456{ckpt.TEMPORARY_SUFFIX}"
    other_target = tmp_path / f".history.csv.{dead}.ghi789{ckpt.TEMPORARY_SUFFIX}"
    not_ours = tmp_path / ".c.safetensors.notours.tmp"
    for file in (stale, in_flight, other_target, not_ours):
        file.write_bytes(b"x" * 100)
    ckpt.atomic_write_bytes(tmp_path / "c.safetensors", b"new")
    assert not stale.exists()
    assert in_flight.exists() and other_target.exists() and not_ours.exists()
    assert ckpt.remove_stale_temporaries(tmp_path) == [other_target]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c.safetensors", in_flight.name, not_ours.name])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        ckpt.atomic_write_bytes(tmp_path / "c.bin", b"data")
        with open(tmp_path / "reference.bin", "w"):
            pass
    finally:
        os.umask(old)
    mode = (tmp_path / "c.bin").stat().st_mode & 0o777
    assert mode == (tmp_path / "reference.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_downloaded_dataset_files_honour_the_umask_too(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    from ermlab.data import sources

    payload = b"published bytes"
    source = sources.Source("file.bin", "https://example.invalid/file.bin",
                            hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    old = os.umask(0o022)
    try:
        path = sources.fetch(source, tmp_path, "test")
    finally:
        os.umask(old)
    assert path.read_bytes() == payload and path.stat().st_mode & 0o777 == 0o644
