"""`ermlab train --model linear` starts from W = 0 (the loss is convex in W): the learned
weights, and the class templates drawn from them, hold only what training put there. A
grey dataset stored as (N, H, W) gets its templates too."""

import json

import numpy as np

from ermlab import run as runs
from ermlab.cli import main
from ermlab.training import read_checkpoint


def grey_images(path, shape, n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, ..., : shape[-1] // 2] *= 0.2
    np.savez(path, x_train=x[:n - 16], y_train=y[:n - 16], x_test=x[n - 16:], y_test=y[n - 16:])
    return path


def train(*argv):
    return main(["train", *map(str, argv), "--epochs", "1", "--patience", "none", "-q"])


def test_a_linear_model_starts_from_zero_weights_unless_told(tmp_path):
    """A random start stayed in W: a third of its norm after 3 Fashion-MNIST epochs, and
    all of it on border pixels that are always 0 (no gradient ever reaches them)."""
    data = grey_images(tmp_path / "d.npz", (1, 8, 8))
    data_x = np.load(data)["x_train"]
    data_x[:, :, 0, :] = 0  # a border row that is always 0
    np.savez(data, **{**dict(np.load(data)), "x_train": data_x})
    assert train("--dataset", data, "--model", "linear", "--preprocess", "none",
                 "-o", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["weight_init"] == "zeros"
    weights = read_checkpoint(tmp_path / "run" / runs.LAST)
    w = next(v for k, v in weights.model.items() if k.endswith("weight") and v.ndim == 2)
    np.testing.assert_array_equal(w.reshape(len(w), 1, 8, 8)[:, :, 0, :], 0)  # no gradient
    assert np.abs(w).max() > 0
    assert train("--dataset", data, "--model", "linear", "--set", "weight_init=glorot_uniform",
                 "-o", tmp_path / "glorot") == 0
    config = json.loads((tmp_path / "glorot" / "config.json").read_text())
    assert config["weight_init"] == "glorot_uniform"


def test_a_grey_dataset_of_n_h_w_images_gets_templates(tmp_path):
    data = grey_images(tmp_path / "d.npz", (8, 8))
    assert train("--dataset", data, "--model", "linear", "-o", tmp_path / "run") == 0
    assert (tmp_path / "run" / "templates.png").stat().st_size > 0
