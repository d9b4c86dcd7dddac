"""The `ermlab` command end to end, in-process, on data that ships offline."""

import csv
import json

import numpy as np
import pytest
import safetensors.numpy

from ermlab.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_train_with_no_arguments_reaches_97_percent_on_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("train") == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.97, out
    assert "test accuracy" in out
    for name in ("config.json", "history.csv", "best.safetensors", "last.safetensors",
                 "preprocessing.safetensors", "loss.png", "accuracy.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits" and config["optimizer"] == "adam"
    assert config["patience"] == 10
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == metrics["epochs"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def last_weights(run_dir):
    arrays = safetensors.numpy.load_file(str(run_dir / "last.safetensors"))
    return {k: v for k, v in arrays.items() if "model" in k}


def test_resume_continues_bit_for_bit(tmp_path):
    common = ["--dataset", "moons", "--hidden", "16", "--optimizer", "sgd", "--lr", "0.05",
              "--momentum", "0.9", "--schedule", "step:1:0.7", "--patience", "none", "-q"]
    assert run_cli("train", *common, "--epochs", 4, "--output", tmp_path / "once") == 0
    assert run_cli("train", *common, "--epochs", 2, "--output", tmp_path / "twice") == 0
    assert run_cli("train", "--resume", tmp_path / "twice", "--epochs", 4, "-q") == 0
    once, twice = last_weights(tmp_path / "once"), last_weights(tmp_path / "twice")
    assert once.keys() == twice.keys() and once
    for key in once:
        np.testing.assert_array_equal(once[key], twice[key])
    history = list(csv.DictReader((tmp_path / "twice" / "history.csv").open()))
    assert [row["epoch"] for row in history] == ["1", "2", "3", "4"]


def test_resume_refuses_to_change_the_model(tmp_path, capsys):
    assert run_cli("train", "--dataset", "xor", "--epochs", 1, "-q",
                   "--output", tmp_path / "run") == 0
    assert run_cli("train", "--resume", tmp_path / "run", "--hidden", "7") == 2
    assert "--resume cannot change hidden" in capsys.readouterr().err


def test_toml_config_and_flags(tmp_path, capsys):
    spec = tmp_path / "run.toml"
    spec.write_text('dataset = "blobs"\nhidden = [8]\n[optim]\noptimizer = "sgd"\nlr = 0.2\n'
                    'epochs = 2\n')
    assert run_cli("train", "--config", spec, "--epochs", 3, "--set", "nesterov=true",
                   "--set", "momentum=0.5", "--output", tmp_path / "run", "-q") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["hidden"], config["lr"]) == ("blobs", [8], 0.2)
    assert config["epochs"] == 3  # the flag wins over the file
    assert config["nesterov"] is True and config["momentum"] == 0.5


def test_evaluate_and_predict(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--epochs", 5, "--output", run_dir, "-q") == 0
    capsys.readouterr()
    assert run_cli("evaluate", run_dir) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(tmp_path / "x.npy", digits.data[:20] / 16.0)
    assert run_cli("predict", run_dir, tmp_path / "x.npy", "--output", tmp_path / "p.csv") == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 20
    labels = np.array([int(row["label"]) for row in rows])
    assert np.mean(labels == digits.target[:20]) >= 0.8
    probabilities = np.array([[float(row[f"p_{c}"]) for c in range(10)] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_search_writes_the_table_and_names_the_best(tmp_path, capsys):
    spec = tmp_path / "search.toml"
    spec.write_text(f'[search]\nmethod = "grid"\noutput = "{tmp_path / "table.csv"}"\n'
                    '[base]\ndataset = "xor"\nepochs = 60\nbatch_size = 4\noptimizer = "sgd"\n'
                    'hidden = [8]\nactivation = "tanh"\n'
                    '[space]\nlr = [1e-6, 0.5]\n')
    assert run_cli("search", spec) == 0
    out = capsys.readouterr().out
    assert "best score" in out and "'lr': 0.5" in out.splitlines()[-1]
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert len(rows) == 2


def test_datasets_lists_the_cache_and_names(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ERMLAB_DATA", str(tmp_path))
    assert run_cli("datasets") == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    for name in ("digits", "fashion-mnist", "mnist", "cifar10", "two_spirals"):
        assert name in out


def test_gradcheck_command_passes(capsys):
    assert run_cli("gradcheck") == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "SoftmaxCrossEntropy" in out and "ElasticNet" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["train", "--hidden", "0"], "positive layer widths"),
    (["train", "--optimizer", "adam", "--momentum", "0.9"], "momentum"),
    (["train", "--schedule", "sometimes"], "unknown schedule"),
    (["train", "--batch-size", "many"], "--batch-size takes an integer"),
    (["evaluate", "/nonexistent/run"], "not a run directory"),
    (["train", "--config", "/nonexistent.toml"], "nonexistent.toml"),
    (["train", "--model", "lenet5"], "--model lenet5 needs image data (N, C, H, W)"),
])
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # a failed start leaves no half-written run


def test_train_a_zoo_cnn_on_user_images_with_augmentation(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 40)
    x = rng.normal(0, 0.3, (80, 1, 28, 28)).astype(np.float32)
    x[y == 1, :, 8:20, 8:20] += 1.0  # class 1: a bright square
    np.savez(tmp_path / "images.npz", x=x, y=y)
    assert run_cli("train", "--dataset", "npz", "--data-path", tmp_path / "images.npz",
                   "--model", "lenet5", "--augment", "flip,crop:2", "--epochs", 3,
                   "--batch-size", 16, "--output", tmp_path / "run", "-q") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["test_accuracy"] >= 0.9
    capsys.readouterr()
    assert run_cli("evaluate", tmp_path / "run") == 0
    assert "accuracy" in capsys.readouterr().out
    assert run_cli("train", "--model", "no_such_net", "--output", tmp_path / "bad") == 2
