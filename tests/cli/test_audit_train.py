"""`ermlab train` after the CLI audit: every model's memory is estimated before training,
resumes that would break a schedule planned over the epochs are refused, flags a model
does not use are refused, and the smaller inconsistencies (wording, --output with --resume,
--set against flags, --debug's exit status, compare's header, lab summary's baselines)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ermlab import config as configs
from ermlab.cli import main
from ermlab.nn import zoo
from ermlab.training import read_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"
MOONS = ["--dataset", "moons", "--hidden", "8", "--patience", "none", "-q"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(argv, capsys):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def images(path, n=60, size=12, seed=0):
    """A small image dataset (N, 1, size, size) in [0, 1], two classes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 1, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, :, : size // 2] *= 0.2
    np.savez(path, x_train=x[:n - 20], y_train=y[:n - 20], x_test=x[n - 20:], y_test=y[n - 20:])
    return path


# -- 1. the memory of every model is estimated before training allocates it ----------------


def test_a_cnn_too_large_for_the_machine_is_refused_before_training(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(configs, "machine_memory", lambda: 10**9)
    data = images(tmp_path / "images.npz")
    err = one_line_error(["train", "--dataset", data, "--model", "lenet5", "--batch-size",
                          10**6, "--epochs", 1, "-o", tmp_path / "run"], capsys)
    assert "--model lenet5 at batch size 1000000 needs about" in err
    assert "this machine has 1.0 GB of memory; use a smaller --batch-size" in err
    assert not (tmp_path / "run").exists()
    assert run_cli("train", "--dataset", data, "--model", "lenet5", "--batch-size", 32,
                   "--epochs", 1, "-q", "-o", tmp_path / "fits") == 0


def test_the_full_batch_of_a_cnn_counts_every_training_example(tmp_path, capsys, monkeypatch):
    data = images(tmp_path / "images.npz", n=220)  # 200 training examples, 180 after validation
    model = zoo.lenet5(2, (1, 12, 12), rng=0)
    needed = configs.model_memory(model, (1, 12, 12), 180)
    monkeypatch.setattr(configs, "machine_memory", lambda: needed - 1)
    err = one_line_error(["train", "--dataset", data, "--model", "lenet5", "--batch-size",
                          "full", "--epochs", 1, "-o", tmp_path / "run"], capsys)
    assert "at batch size 180 needs about" in err


def test_model_memory_counts_parameters_and_one_batch_of_stored_activations():
    model = zoo.lenet5(10, (1, 28, 28), rng=0)
    table = model.summary((1, 28, 28))
    assert configs.model_memory(model, (1, 28, 28), 128) == 4 * (
        4 * 61_706 + 128 * table.stored_activations)
    # the usual runs are far from any machine's memory: fashion-mnist lenet5 at batch 128,
    # the default digits MLP (64-128-10, batch 32)
    assert configs.model_memory(model, (1, 28, 28), 128) < 10 * 2**20
    assert configs.mlp_memory([64, 128, 10], 32) < 2**20
    # the audit's ResNet-50 on 2,000 Fashion-MNIST images at batch 100,000: terabytes
    resnet = zoo.resnet50(10, (1, 28, 28), rng=0)
    assert configs.model_memory(resnet, (1, 28, 28), 100_000) > 10**12


# -- 2. a resume may not change the epochs a schedule is planned over -----------------------


@pytest.mark.parametrize("schedule", ["cosine", "step", "multistep::0.5"])
def test_resume_refuses_new_epochs_where_the_schedule_is_planned_over_them(
        schedule, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *MOONS, "--schedule", schedule, "--epochs", 3, "-o", run) == 0
    before = (run / "config.json").read_text()
    err = one_line_error(["train", "--resume", run, "--epochs", 6], capsys)
    assert f"--resume cannot change epochs (3 → 6): schedule {schedule!r} plans" in err
    assert "start a new run with --epochs 6" in err
    assert (run / "config.json").read_text() == before
    assert read_checkpoint(run / "last.safetensors").epoch == 3


@pytest.mark.parametrize("schedule", ["none", "step:1:0.5", "multistep:1+2", "exponential:0.9",
                                      "plateau"])
def test_resume_extends_schedules_that_do_not_depend_on_the_epochs(schedule, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *MOONS, "--schedule", schedule, "--epochs", 2, "-o", run) == 0
    assert run_cli("train", "--resume", run, "--epochs", 3) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


# -- 3. flags the chosen model does not use are refused -------------------------------------


@pytest.mark.parametrize("model, flags, named", [
    ("lenet5", ["--hidden", "64", "--activation", "tanh"], "does not use --hidden, --activation"),
    ("lenet5", ["--batch-norm"], "does not use --batch-norm"),
    ("lenet5", ["--dropout", "0.5"], "does not use --dropout"),
    ("lenet5", ["--set", "weight_init=\"glorot_uniform\""], "does not use --set weight_init"),
    ("linear", ["--dropout", "0.5", "--batch-norm"], "so --dropout, --batch-norm"),
    ("mlp", ["--hidden", "", "--dropout", "0.3"], "so --dropout"),
])
def test_flags_the_model_does_not_use_are_refused(model, flags, named, tmp_path, capsys):
    data = images(tmp_path / "images.npz")
    err = one_line_error(["train", "--dataset", data, "--model", model, *flags, "--epochs", 1,
                          "-o", tmp_path / "run"], capsys)
    assert f"--model {model}" in err and named in err and "leave out" in err
    assert not (tmp_path / "run").exists()


def test_a_saved_run_that_recorded_unused_flags_still_loads(tmp_path, capsys):
    """Runs written before the check recorded the flags they ignored: they load as trained."""
    data = images(tmp_path / "images.npz")
    run = tmp_path / "run"
    assert run_cli("train", "--dataset", data, "--model", "lenet5", "--epochs", 1, "-q",
                   "-o", run) == 0
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "hidden": [64], "batch_norm": True,
                                                 "activation": "tanh"}))
    assert run_cli("evaluate", run) == 0
    assert run_cli("train", "--resume", run, "--epochs", 2, "-q") == 0
    assert json.loads((run / "config.json").read_text())["batch_norm"] is False


# -- 4. an option of another optimizer names the optimizers that take it --------------------


def test_momentum_with_adam_names_the_optimizers_that_take_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = one_line_error(["train", "--momentum", "0.9", "--epochs", 1], capsys)
    assert "'momentum' is an option of optimizer " in err and ", sgd" in err
    assert "not of 'adam'" in err and "--optimizer sgd" in err
    assert len(err) < 300 and "unknown config key" not in err


# -- 5. smaller inconsistencies ----------------------------------------------------------


def test_resume_names_the_epochs_the_run_has_done(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *MOONS, "--epochs", 3, "-o", run) == 0
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--epochs", 2) == 0
    out = capsys.readouterr().out
    assert "nothing to train: the run has done 3 epochs, at least the 2 of --epochs; give " \
           "--epochs above 3 to train on" in out


def test_resume_refuses_another_output_directory(tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    assert run_cli("train", *MOONS, "--epochs", 1, "-o", run) == 0
    err = one_line_error(["train", "--resume", run, "--epochs", 2, "-o", other], capsys)
    assert f"continues the run in its own directory {run}; leave out --output {other}" in err
    assert not other.exists() and read_checkpoint(run / "last.safetensors").epoch == 1
    assert run_cli("train", "--resume", run, "--epochs", 2, "-o", run, "-q") == 0  # the same


def test_a_flag_wins_over_set(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *MOONS, "--set", "epochs=1", "--epochs", 2, "-o", run) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_debug_exits_as_the_readme_says(tmp_path):
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "raises the error instead: its traceback, and Python's exit status 1" in text
    done = subprocess.run([sys.executable, "-m", "ermlab", "--debug", "train", "--set",
                           "no_such_key=1"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_compare_names_the_training_images_it_used(tmp_path, capsys):
    pytest.importorskip("skimage", reason="compare's features need scikit-image")
    data = images(tmp_path / "images.npz", size=16)
    assert run_cli("compare", "--dataset", data, "--methods", "pixels-softmax", "--epochs", 1,
                   "--train-size", 99999999, "--test-size", 99999999) == 0
    out = capsys.readouterr().out
    assert "40 training images, 20 test images" in out and "99999999" not in out


def test_lab_summary_names_a_missing_baselines_folder(tmp_path, capsys):
    (tmp_path / "study").mkdir()
    err = one_line_error(["lab", "summary", tmp_path / "study", "--baselines",
                          tmp_path / "missing"], capsys)
    assert f"--baselines folder {tmp_path / 'missing'} does not exist" in err
    assert "ermlab lab run` first" not in err


@pytest.mark.parametrize("first, then, kind", [([], ["--augment", "flip"], "mean_image"),
                                               (["--augment", "flip"], ["--augment", ""],
                                                "channel_mean")])
def test_resume_turning_augmentation_on_or_off_keeps_the_fitted_preprocessing(
        first, then, kind, tmp_path):
    """--preprocess auto fits a per-pixel mean without augmentation, a per-channel one with
    it; a resume that turns augmentation on or off keeps the kind its statistics are of (it
    failed in the first batch, and left config.json naming the other kind)."""
    data, run = images(tmp_path / "images.npz"), tmp_path / "run"
    assert run_cli("train", "--dataset", data, "--model", "lenet5", "--epochs", 1,
                   "--patience", "none", "-o", run, "-q", *first) == 0
    assert run_cli("train", "--resume", run, "--epochs", 2, "-q", *then) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["preprocess"] == kind and config["augment"] == ("flip" if not first else "")
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert run_cli("evaluate", run) == 0


def test_channels_last_images_are_named_with_the_transpose(tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0, 1, (40, 12, 12, 1)).astype(np.float32)
    np.savez(tmp_path / "nhwc.npz", x=x, y=np.arange(40) % 2)
    err = one_line_error(["train", "--dataset", tmp_path / "nhwc.npz", "--model", "lenet5",
                          "-q"], capsys)
    assert "looks channels last" in err and "x.transpose(0, 3, 1, 2)" in err


def test_one_channel_images_without_their_channel_axis_are_named_with_the_fix(tmp_path,
                                                                               capsys):
    x = np.random.default_rng(0).uniform(0, 1, (40, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "nhw.npz", x=x, y=np.arange(40) % 2)
    err = one_line_error(["train", "--dataset", tmp_path / "nhw.npz", "--model", "lenet5",
                          "-q"], capsys)
    assert "add a channel axis to one-channel images (x[:, None]" in err


def test_the_far_input_warning_names_an_image_feature_plainly(tmp_path, capsys):
    data, run = images(tmp_path / "images.npz"), tmp_path / "run"
    assert run_cli("train", "--dataset", data, "--model", "lenet5", "--epochs", 1,
                   "--patience", "none", "-o", run, "-q") == 0
    x = np.load(data)["x_test"] * 255
    np.save(tmp_path / "far.npy", x)
    capsys.readouterr()
    assert run_cli("predict", run, tmp_path / "far.npy", "-o", tmp_path / "p.csv") == 0
    err = capsys.readouterr().err
    assert "far outside the training range" in err and "feature (0, " in err
    assert "np.int64" not in err


# -- configuration files and --set (the config audit) ----------------------------------------


def test_a_toml_file_and_set_take_none_and_full_as_the_flags_do(tmp_path):
    (tmp_path / "c.toml").write_text('patience = "none"\nbatch_size = "full"\n')
    for extra in ([], ["--set", "patience=none", "--set", "batch_size=Full"]):
        run = tmp_path / f"run{len(extra)}"
        assert run_cli("train", *MOONS, "--config", tmp_path / "c.toml", *extra, "--epochs", 1,
                       "-o", run) == 0
        config = json.loads((run / "config.json").read_text())
        assert config["patience"] is None and config["batch_size"] is None


def test_a_runs_config_json_is_a_config_file_that_repeats_the_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("train", *MOONS, "--epochs", 2, "--batch-size", "full", "-o", first) == 0
    assert run_cli("train", "--config", first / "config.json", "-q", "-o", second) == 0
    assert (json.loads((first / "config.json").read_text())
            == json.loads((second / "config.json").read_text()))
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (first, second)]
    assert metrics[0]["test_loss"] == metrics[1]["test_loss"]


@pytest.mark.parametrize("text, named", [
    ("[training]\nepochs = 1\n[model]\nepochs = 3\n",
     "epochs is set twice (epochs in [training] and epochs in [model])"),
    ("epochs = 1\n[model]\nepochs = 3\n", "epochs is set twice"),
    ("lr = { value = 0.5 }\n", "lr is a table"),
    ("[a.b]\nlr = 0.5\n", "b in [a] is a table"),
])
def test_toml_sections_that_would_hide_a_value_are_refused(text, named, tmp_path, capsys):
    (tmp_path / "c.toml").write_text(text)
    err = one_line_error(["train", *MOONS, "--config", tmp_path / "c.toml"], capsys)
    assert named in err


@pytest.mark.parametrize("value, expected", [("'tanh'", "tanh"), ('"tanh"', "tanh"),
                                             ("+0.01", 0.01), ("1_000e-6", 0.001),
                                             ("null", None), ("[0.9, 0.99]", [0.9, 0.99]),
                                             ("tanh", "tanh"), ("32,16", "32,16")])
def test_set_reads_toml_values_as_a_config_file_does(value, expected):
    from ermlab.cli.train import _value

    assert _value(value) == expected


def test_a_misspelled_key_is_named_with_the_key_meant(tmp_path, capsys):
    err = one_line_error(["train", *MOONS, "--set", "batch-size=8"], capsys)
    assert "'batch-size': did you mean 'batch_size'?" in err


@pytest.mark.parametrize("hidden", [" , ", "16,,8", "16,"])
def test_hidden_sizes_with_an_empty_part_are_refused(hidden, capsys):
    err = one_line_error(["train", *MOONS, "--hidden", hidden], capsys)
    assert "config 'hidden' lists positive layer widths" in err


def test_the_activation_name_is_read_in_any_case_as_the_optimizer_name_is(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *MOONS, "--activation", "Tanh", "--epochs", 1, "-o", run) == 0
    assert json.loads((run / "config.json").read_text())["activation"] == "tanh"
