"""A run directory stands on its own: predict and evaluate from anywhere, without the
training data; bad inputs are refused before anything is written."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ermlab.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.normal(0, 1, (len(y), 4)) + 3 * np.eye(3, 4)[y]
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on a .npz file given by a relative path; the file is then deleted."""
    import os

    home = tmp_path_factory.mktemp("home")
    x, y = blobs(150, 0)
    (home / "data").mkdir()
    np.savez(home / "data" / "blobs.npz", x=x, y=y)
    old = os.getcwd()
    os.chdir(home / "data")
    try:
        assert run_cli("train", "--dataset", "blobs.npz", "--hidden", "8", "--epochs", 10,
                       "--lr", 0.05, "--output", home / "run", "-q") == 0
    finally:
        os.chdir(old)
    return home


def test_the_dataset_path_is_stored_absolute_and_evaluate_works_elsewhere(
        trained, tmp_path, monkeypatch, capsys):
    config = json.loads((trained / "run" / "config.json").read_text())
    assert config["dataset"] == str(trained / "data" / "blobs.npz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("evaluate", trained / "run") == 0, capsys.readouterr().err
    assert "confusion matrix" in capsys.readouterr().out


def test_predict_needs_only_the_run_directory(trained, tmp_path, monkeypatch, capsys):
    (trained / "data" / "blobs.npz").rename(trained / "data" / "moved.npz")
    try:
        monkeypatch.chdir(tmp_path)
        x, y = blobs(30, 1)
        np.save(tmp_path / "new.npy", x)
        assert run_cli("predict", trained / "run", "new.npy", "-o", "p.csv") == 0, \
            capsys.readouterr().err
        rows = list(csv.DictReader((tmp_path / "p.csv").open()))
        assert len(rows) == 30 and list(rows[0])[:3] == ["index", "label", "class"]
        assert np.mean([int(r["label"]) for r in rows] == y) > 0.8
    finally:
        (trained / "data" / "moved.npz").rename(trained / "data" / "blobs.npz")


@pytest.mark.parametrize("bad, where", [(np.nan, "example 2, feature 1"),
                                        (np.inf, "example 2, feature 1")])
def test_non_finite_inputs_are_refused_and_the_output_is_untouched(trained, tmp_path, capsys,
                                                                     bad, where):
    x, _ = blobs(30, 1)
    x[2, 1] = bad
    x[5, 3] = bad
    np.save(tmp_path / "bad.npy", x)
    out = tmp_path / "p.csv"
    out.write_text("precious\n")
    assert run_cli("predict", trained / "run", tmp_path / "bad.npy", "-o", out) == 2
    err = capsys.readouterr().err
    assert f"2 values are NaN or infinite, in 2 of 30 examples (the first at {where}" in err
    assert len(err.strip().splitlines()) == 1
    assert out.read_text() == "precious\n"


def test_inputs_far_outside_the_training_range_get_a_warning(trained, tmp_path, capsys):
    x, _ = blobs(30, 1)
    np.save(tmp_path / "ok.npy", x)
    assert run_cli("predict", trained / "run", tmp_path / "ok.npy", "-o", tmp_path / "a.csv") == 0
    assert "warning" not in capsys.readouterr().err
    x[4, 2] = 255.0
    np.save(tmp_path / "far.npy", x)
    assert run_cli("predict", trained / "run", tmp_path / "far.npy", "-o", tmp_path / "b.csv") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "far outside the training range" in err
    assert "example 4, feature 2 = 255" in err
    assert (tmp_path / "b.csv").is_file()


def test_a_failed_prediction_leaves_no_partial_output(trained, tmp_path, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), np.float32))
    out = tmp_path / "p.csv"
    assert run_cli("predict", trained / "run", tmp_path / "wrong.npy", "-o", out) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["wrong.npy"]


def test_a_dataset_outside_the_working_directory_gets_a_run_inside_runs(tmp_path, monkeypatch):
    x, y = blobs(60, 0)
    np.savez(tmp_path / "my data!.npz", x=x, y=y)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for _ in range(2):  # the same second: two distinct directories
        assert run_cli("train", "--dataset", "../my data!.npz", "--epochs", 1, "-q") == 0
    runs = sorted(p.name for p in (tmp_path / "work" / "runs").iterdir())
    assert len(runs) == 2 and all(name.startswith("my_data-mlp-") for name in runs), runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my data!.npz", "work"]
    assert Path(json.loads((tmp_path / "work" / "runs" / runs[0] / "config.json")
                           .read_text())["dataset"]).is_absolute()


def test_non_finite_training_data_is_refused_before_a_run_starts(tmp_path, capsys):
    x, y = blobs(60, 0)
    x[7, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    assert run_cli("train", "--dataset", tmp_path / "nan.npz", "--epochs", 1,
                   "--output", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "1 value is NaN or infinite, in 1 of" in err and "nan.npz" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_warns_when_the_data_no_longer_looks_like_the_training_data(
        tmp_path, capsys):
    x, y = blobs(90, 0)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert run_cli("train", "--dataset", tmp_path / "d.npz", "--epochs", 1, "-q",
                   "--output", tmp_path / "run") == 0
    np.savez(tmp_path / "d.npz", x=x * 100, y=y)  # rescaled since
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "run") == 0
    assert "far outside the training range" in capsys.readouterr().err
