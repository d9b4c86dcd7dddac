"""Whatever a new user types, `ermlab train` answers with one line and exit code 2.

Flags, ``--set`` keys and TOML values of the wrong type, out of range, empty,
unknown or huge: each must be refused before training starts, with a message
naming the problem, and no traceback and no half-written run directory.
"""

import json

import numpy as np
import pytest

from ermlab import config as configs
from ermlab.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


def one_line_error(argv, capsys, tmp_path):
    try:
        code = run_cli(*argv)
    except SystemExit as usage_error:  # argparse's own checks
        code = usage_error.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
    return err


FLAGS = [
    (["--epochs", "0"], "'epochs' must be an integer ≥ 1"),
    (["--epochs", "-1"], "'epochs' must be an integer ≥ 1"),
    (["--epochs", ""], "argument --epochs: invalid int value"),
    (["--epochs", "1e3"], "argument --epochs: invalid int value"),
    (["--batch-size", "0"], "'batch_size' must be an integer ≥ 1"),
    (["--batch-size", ""], "--batch-size takes an integer"),
    (["--batch-size", "1000000000000"], "needs about"),
    (["--hidden", "-3"], "positive layer widths"),
    (["--hidden", "abc"], "positive layer widths"),
    (["--hidden", "1.5"], "positive layer widths"),
    (["--hidden", "10,,0"], "positive layer widths"),
    (["--hidden", "1000000000000"], "needs about"),
    (["--hidden", "100000,100000"], "GB to train but this machine has"),
    (["--lr", "0"], "'lr' must be a finite number > 0"),
    (["--lr", "-1"], "'lr' must be a finite number > 0"),
    (["--lr", "nan"], "'lr' must be a finite number > 0"),
    (["--lr", "inf"], "'lr' must be a finite number > 0"),
    (["--lr", "fast"], "argument --lr: invalid float value"),
    (["--momentum", "0.9"], "'momentum' is an option of optimizer "),
    (["--optimizer", "sgd", "--momentum", "5"], "momentum must be in [0, 1)"),
    (["--weight-decay", "-1"], "weight_decay must be finite and ≥ 0"),
    (["--l1", "-1"], "'l1' must be a finite number ≥ 0"),
    (["--l2", "nan"], "'l2' must be a finite number ≥ 0"),
    (["--max-norm", "0"], "'max_norm' must be a finite number > 0"),
    (["--dropout", "1"], "'dropout' must be in [0, 1)"),
    (["--dropout", "-0.1"], "'dropout' must be a finite number ≥ 0"),
    (["--seed", "-1"], "'seed' must be an integer in [0, 2³²)"),
    (["--seed", "99999999999999999999999"], "'seed' must be an integer in [0, 2³²)"),
    (["--validation-fraction", "0"], "'validation_fraction' must be a number in (0, 1)"),
    (["--validation-fraction", "1"], "'validation_fraction' must be a number in (0, 1)"),
    (["--validation-fraction", "nan"], "'validation_fraction' must be a number in (0, 1)"),
    (["--preprocess", "foo"], "unknown preprocess 'foo'"),
    (["--preprocess", ""], "unknown preprocess ''"),
    (["--augment", "flip"], "--augment needs image data"),
    (["--schedule", "foo"], "unknown schedule 'foo'"),
    (["--schedule", "step:x"], "arguments must be numbers"),
    (["--schedule", "step:0"], "step_size must be an integer ≥ 1"),
    (["--schedule", "multistep:a+b"], "milestones look like 30+60"),
    (["--schedule", "exponential:-1"], "gamma must be > 0"),
    (["--activation", "foo"], "unknown activation 'foo'"),
    (["--activation", ""], "unknown activation ''"),
    (["--loss", "foo"], "unknown loss 'foo'"),
    (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    (["--optimizer", ""], "unknown optimizer ''"),
    (["--model", "foo"], "unknown model 'foo'"),
    (["--model", "lenet5"], "--model lenet5 needs image data (N, C, H, W)"),
    (["--dataset", "foo"], "unknown dataset 'foo'"),
    (["--dataset", ""], "unknown dataset ''"),
    (["--dataset", "missing.npz"], ".npz file not found"),
    (["--data-path", "/nonexistent"], "'digits' takes no path= (command line: --data-path)"),
    (["--dataset", "moons", "--data-path", "/x"], "takes no path= (command line: --data-path)"),
    (["--dataset", "fashion-mnist", "--data-path", "/nonexistent"],
     "not found in /nonexistent"),
    (["--patience", "-1"], "'patience' must be an integer ≥ 0"),
    (["--patience", "soon"], "--patience takes an integer"),
    (["--output", ""], "--output needs a directory name"),
    (["--resume", "/nonexistent"], "not a run directory"),
    (["--config", "/nonexistent.toml"], "config file /nonexistent.toml not found"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]

SETS = [
    ("noequals", "--set takes KEY=VALUE"),
    ("=1", "--set takes KEY=VALUE"),
    ("x=1", "unknown config key(s) ['x']"),
    # the run's keys are listed too
    ("datset=1", "'data_path', 'dataset', 'delay', 'delta', 'distributed', 'dp', 'dropout'"),
    ("augment=5", "--augment needs image data"),
    ('hidden={"a":1}', "positive layer widths"),
    ("hidden=[0]", "positive layer widths"),
    ("hidden=true", "positive layer widths"),
    ("hidden=1e12", "positive layer widths"),
    ('epochs="ten"', "'epochs' must be an integer ≥ 1"),
    ("epochs=1.5", "'epochs' must be an integer ≥ 1"),
    ("epochs=null", "'epochs' must be an integer ≥ 1"),
    ('lr="fast"', "'lr' must be a finite number > 0"),
    ("betas=[2,3]", "betas must be two numbers in [0, 1)"),
    ("betas=5", "'betas' (an option of optimizer 'adam') must be a list of numbers"),
    ('eps="x"', "'eps' (an option of optimizer 'adam') must be a number"),
    ("eps=-1", "eps must be finite and ≥ 0"),
    ("amsgrad=5", "'amsgrad' (an option of optimizer 'adam') must be true or false"),
    ('threads="x"', "'threads' (an option of optimizer 'adam') must be an integer or null"),
    ('seed="abc"', "'seed' must be an integer"),
    ("seed=[1]", "'seed' must be an integer"),
    ("seed=1.5", "'seed' must be an integer"),
    ("seed=null", "'seed' must be an integer"),
    ("seed=true", "'seed' must be an integer"),
    ('validation_fraction="x"', "'validation_fraction' must be a number in (0, 1)"),
    ("validation_fraction=null", "'validation_fraction' must be a number in (0, 1)"),
    ("model=[1]", "'model' is a name (a string)"),
    ("model=null", "'model' is a name (a string)"),
    ("dataset=5", "'dataset' is a name (a string)"),
    ("dataset=[1]", "'dataset' is a name (a string)"),
    ("preprocess=[1]", "'preprocess' is a name (a string)"),
    ("schedule=5", "'schedule' is a name (a string)"),
    ("data_path=5", "'data_path' is a path (a string)"),
    ('verify="no"', "'verify' is true or false"),
    ("dropout=null", "'dropout' must be a finite number ≥ 0"),
    ('weight_init="foo"', "unknown initializer 'foo'"),
    ("activation=5", "unknown activation 5"),
    ("loss=5", "unknown loss '5'"),
    ("min_delta=-1", "'min_delta' must be a finite number ≥ 0"),
    ('batch_norm="yes"', "'batch_norm' is true or false"),
    ("patience=1.5", "'patience' must be an integer ≥ 0"),
    ("max_norm=-1", "'max_norm' must be a finite number > 0"),
    ("threads=0", "threads must be an integer ≥ 1"),
]

TOML = [
    ('epochs = "ten"', "'epochs' must be an integer ≥ 1"),
    ("hidden = {a = 1}", "hidden is a table; a config key takes a number"),
    ("this is = not toml [", "is not valid TOML"),
    ("[train]\nseed = -5", "'seed' must be an integer in [0, 2³²)"),
    ('[model]\nhidden = "wide"', "positive layer widths"),
    ("lr = 0", "'lr' must be a finite number > 0"),
    ("batch_size = 0", "'batch_size' must be an integer ≥ 1"),
    ('augment = ["flip", 3]', "--augment needs image data"),
]


@pytest.mark.parametrize("argv, message", FLAGS, ids=[" ".join(a) for a, _ in FLAGS])
def test_malformed_flags(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = argv if "--epochs" in argv else [*argv, "--epochs", "1"]
    assert message in one_line_error(["train", *argv], capsys, tmp_path)


@pytest.mark.parametrize("setting, message", SETS, ids=[s for s, _ in SETS])
def test_malformed_set_values(setting, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = [] if setting.startswith("epochs") else ["--epochs", "1"]
    err = one_line_error(["train", "--set", setting, *extra], capsys, tmp_path)
    assert message in err


@pytest.mark.parametrize("text, message", TOML, ids=[t for t, _ in TOML])
def test_malformed_toml_values(text, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(text + "\n")
    assert message in one_line_error(["train", "--config", "run.toml"], capsys, tmp_path)


def test_an_augment_list_is_a_spec(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(60, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=np.arange(60) % 2)
    assert run_cli("train", "--dataset", tmp_path / "images.npz", "--set",
                   'augment=["flip", "crop:1"]', "--epochs", 1, "-q",
                   "--output", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["augment"] == ["flip", "crop:1"]


def test_out_of_memory_at_any_point_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 12 TiB")

    monkeypatch.setattr(configs, "build_model", exhausted)
    err = one_line_error(["train", "--epochs", "1"], capsys, tmp_path)
    assert "out of memory (Unable to allocate 12 TiB)" in err and "--batch-size" in err


# -- data a classifier cannot learn from ---------------------------------------------------


def test_single_class_training_data_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "one.npz", x=rng.normal(size=(100, 4)), y=np.zeros(100, int))
    err = one_line_error(["train", "--dataset", "one.npz", "--epochs", 1], capsys, tmp_path)
    assert "holds only class 0 (" in err and "at least 2 classes" in err


def test_test_classes_never_trained_on_are_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y_train = np.arange(100) % 2
    np.savez(tmp_path / "split.npz", x_train=rng.normal(size=(100, 4)), y_train=y_train,
             x_test=rng.normal(size=(30, 4)), y_test=np.arange(30) % 3)
    assert run_cli("train", "--dataset", tmp_path / "split.npz", "--epochs", 1, "-q",
                   "--output", tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert "warning: test class(es) 2 never occur in the training split" in err


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "--tolerance", "-1"], "--tolerance must be a number > 0"),
    (["gradcheck", "--tolerance", "nan"], "--tolerance must be a number > 0"),
    (["gradcheck", "--seed", "-1"], "--seed must be an integer ≥ 0"),
    (["search", "missing.toml"], "config file missing.toml not found"),
    (["datasets", "--download", "foo"], "'foo' is not a downloadable dataset"),
    (["evaluate", "."], "not a run directory"),
    (["predict", ".", "x.npy"], "not a run directory"),
])
def test_malformed_input_to_the_other_commands(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert message in one_line_error(argv, capsys, tmp_path)


@pytest.mark.parametrize("toml, message", [
    ('[base]\ndataset = "one.npz"\n[space]\nlr = [0.1]', "at least 2 classes"),
    ('[search]\nmethod = "random"\nn_iter = "x"\n[space]\nlr = [0.1]',
     "n_iter must be an integer ≥ 1"),
])
def test_search_refuses_what_train_refuses(toml, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "one.npz", x=rng.normal(size=(100, 4)), y=np.zeros(100, int))
    (tmp_path / "spec.toml").write_text(toml + "\n")
    assert message in one_line_error(["search", "spec.toml"], capsys, tmp_path)
