"""Resuming and reusing run directories: after a crash before the first checkpoint, with a
damaged checkpoint, with changed settings, after early stopping."""

import json

import numpy as np
import pytest
import safetensors.numpy

from ermlab.cli import main
from ermlab.training import read_checkpoint

COMMON = ["--dataset", "moons", "--hidden", "8", "--optimizer", "sgd", "--lr", "0.05",
          "--momentum", "0.9", "-q"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def weights(path):
    arrays = safetensors.numpy.load_file(str(path))
    return {k: v for k, v in arrays.items() if k.startswith("/model/")}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key])


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli("train", *COMMON, "--patience", "none", "--epochs", 3, "--output", run) == 0
    return run


def test_a_run_that_died_before_its_first_checkpoint_resumes_from_scratch(
        tmp_path, three_epochs, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--patience", "none", "--epochs", 1, "--output", run) == 0
    for name in ("last.safetensors", "best.safetensors", "metrics.json"):
        (run / name).unlink()  # as if killed during the first epoch's writes
    assert run_cli("train", "--resume", run, "--epochs", 3) == 0, capsys.readouterr().err
    assert_same_weights(run / "last.safetensors", three_epochs / "last.safetensors")
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


def test_a_directory_without_checkpoint_can_be_reused_and_one_with_a_checkpoint_cannot(
        tmp_path, three_epochs, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--patience", "none", "--epochs", 1, "--output", run) == 0
    (run / "last.safetensors").unlink()
    (run / "best.safetensors").write_bytes(b"truncated")
    assert run_cli("train", *COMMON, "--patience", "none", "--epochs", 3, "--output", run) == 0
    assert_same_weights(run / "last.safetensors", three_epochs / "last.safetensors")
    assert read_checkpoint(run / "best.safetensors").epoch >= 1
    capsys.readouterr()
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", run) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_takes_the_newest_valid_checkpoint(tmp_path, three_epochs, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--patience", "none", "--epochs", 2, "--output", run) == 0
    (run / "last.safetensors").write_bytes((run / "last.safetensors").read_bytes()[:100])
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--epochs", 3) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "last.safetensors is truncated" in err
    assert_same_weights(run / "last.safetensors", three_epochs / "last.safetensors")


def test_a_failed_resume_leaves_config_json_alone(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", run) == 0
    config = json.loads((run / "config.json").read_text())
    config["hidden"] = [9]  # the checkpoint no longer fits
    text = json.dumps(config)  # and a layout ermlab would not write
    (run / "config.json").write_text(text)
    assert run_cli("train", "--resume", run, "--epochs", 2) == 2
    assert "the model expects (9, 2)" in capsys.readouterr().err
    assert (run / "config.json").read_text() == text


def test_resume_may_change_patience_and_continues_an_early_stopped_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--dataset", "moons", "--hidden", "4", "--optimizer", "sgd",
                   "--lr", "2.0", "--patience", "2", "--epochs", 200, "--output", run,
                   "-q") == 0
    stopped = json.loads((run / "metrics.json").read_text())
    assert stopped["stop_reason"] and stopped["epochs"] < 200
    capsys.readouterr()
    assert run_cli("train", "--resume", run) == 0  # nothing asked: nothing trained
    assert "stopped early" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["epochs"] == stopped["epochs"]
    assert run_cli("train", "--resume", run, "--patience", 5, "-q") == 0
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["epochs"] >= stopped["epochs"] + 5  # a fresh count of 5 epochs
    config = json.loads((run / "config.json").read_text())
    assert config["patience"] == 5


def test_resume_may_change_the_learning_rate_but_not_the_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", run) == 0
    assert run_cli("train", "--resume", run, "--epochs", 2, "--lr", 0.01, "--momentum", 0.5) == 0
    groups = read_checkpoint(run / "last.safetensors").optimizer["param_groups"]
    assert all(g["lr"] == 0.01 and g["momentum"] == 0.5 for g in groups)
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
    for flag, value in (("--model", "lenet5"), ("--optimizer", "adam"), ("--seed", 3),
                        ("--schedule", "cosine")):
        capsys.readouterr()
        assert run_cli("train", "--resume", run, flag, value) == 2
        assert f"cannot change {flag[2:]}" in capsys.readouterr().err


def test_a_closed_form_schedule_owns_the_learning_rate(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--schedule", "cosine", "--epochs", 1,
                   "--output", run) == 0
    assert run_cli("train", "--resume", run, "--lr", 0.5) == 2
    assert "schedule 'cosine' sets the learning rate" in capsys.readouterr().err


def test_the_final_line_and_metrics_name_the_tested_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--epochs", 4, "--output", run) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    best = read_checkpoint(run / "best.safetensors").epoch
    assert (metrics["tested_weights"], metrics["tested_epoch"]) == ("best", best)
    assert f"tested best (epoch {best})" in capsys.readouterr().out.splitlines()[-1]


def test_a_run_that_diverged_in_its_first_epoch_resumes_with_a_lower_rate(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--lr", "1e30", "--epochs", 2, "--output", run) == 2
    assert "training diverged" in capsys.readouterr().err
    assert not (run / "last.safetensors").exists() and (run / "config.json").exists()
    assert run_cli("train", "--resume", run, "--lr", 0.05) == 0, capsys.readouterr().err
    assert read_checkpoint(run / "last.safetensors").epoch == 2
    assert json.loads((run / "config.json").read_text())["lr"] == 0.05


def test_resume_removes_temporaries_that_killed_writers_left(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", run) == 0
    legacy = run / ".last.safetensors.k3x_9abc.tmp"  # ermlab 0.1's tempfile names
    dead = run / ".best.safetensors.999999999.ab12cd34.ermlab-tmp"  # no such process
    foreign = run / ".notes.tmp"
    for path in (legacy, dead, foreign):
        path.write_bytes(b"x" * 1000)
    assert run_cli("train", "--resume", run, "--epochs", 1) == 0
    assert not legacy.exists() and not dead.exists() and foreign.exists()


def test_files_in_a_directory_that_is_not_a_run_are_left_alone(tmp_path, capsys):
    folder = tmp_path / "mine"
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", folder) == 0
    (folder / "config.json").unlink()  # checkpoints, but not a run of `ermlab train`
    before = (folder / "last.safetensors").read_bytes()
    assert run_cli("train", *COMMON, "--epochs", 1, "--output", folder) == 2
    assert "holds checkpoints but no config.json" in capsys.readouterr().err
    assert (folder / "last.safetensors").read_bytes() == before
