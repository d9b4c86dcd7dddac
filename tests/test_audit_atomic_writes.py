"""study.json and IDX files are replaced atomically: a write that fails midway leaves the
old file intact and no temporary behind."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ermlab.data.idx import read_idx, write_idx
from ermlab.lab.protocol import Protocol, Study
from ermlab.training import checkpoint as ckpt


def crash_halfway(file, payload):
    file.write(payload[: len(payload) // 2])
    raise OSError("disk full (simulated)")


def fake_problem():
    return SimpleNamespace(problem_name="toy", epochs=3, spec=lambda: {"name": "toy"})


def test_a_study_json_write_that_fails_midway_leaves_the_old_file(tmp_path, monkeypatch):
    study = Study([fake_problem()], Protocol(optimizers=["sgd"], seeds=1), root=tmp_path,
                  n_jobs=1)
    path = study.write({"toy": {"sgd": {"lr": 0.1}}})
    old = path.read_bytes()
    assert json.loads(old)["tuning"] == {"toy": {"sgd": {"lr": 0.1}}}
    monkeypatch.setattr(ckpt, "_write", crash_halfway)
    with pytest.raises(OSError, match="simulated"):
        study.write({"toy": {"sgd": {"lr": 0.5}}})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.json"]


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_an_idx_write_that_fails_midway_leaves_the_old_file(name, tmp_path, monkeypatch):
    path = tmp_path / name
    old = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(path, old)
    monkeypatch.setattr(ckpt, "_write", crash_halfway)
    with pytest.raises(OSError, match="simulated"):
        write_idx(path, np.zeros((5, 7), dtype=np.float32))
    np.testing.assert_array_equal(read_idx(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
