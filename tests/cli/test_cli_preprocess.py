"""The default preprocessing (``preprocess = "auto"``): mean image for images, z-scores for tables.

Oracle: the statistics written out with NumPy on the same training split.
"""

import numpy as np
import pytest

from ermlab import data
from ermlab import run as runs
from ermlab.cli import main
from ermlab.data import splits


def rare_border_images(path, n=1000):
    """Images in [0, 1] whose border pixel (0, 0) is lit in one training image only."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, 1, 8, 8), np.float32)
    x[:, :, 2:6, 2:6] = rng.uniform(0, 1, (n, 1, 4, 4))
    x[0, 0, 0, 0] = 1.0
    np.savez(path, x=x, y=np.arange(n) % 2)
    return path


def raw_training_split(config):
    dataset = data.load(config["dataset"])
    x_train, _, _, _ = splits.train_validation_split(
        dataset.x_train, dataset.y_train, config["validation_fraction"], config["seed"])
    return x_train


def test_images_get_the_mean_image_subtracted_and_no_pixel_is_blown_up(tmp_path):
    config = runs.resolve({"dataset": str(rare_border_images(tmp_path / "x.npz"))})
    assert config["preprocess"] == "auto"
    x_train = raw_training_split(config)
    assert x_train[:, 0, 0, 0].max() == 1.0  # the lit border pixel is in the training split
    prepared = runs.prepare_data(config)
    expected = (x_train - x_train.mean(axis=0, dtype=np.float64)).reshape(len(x_train), -1)
    np.testing.assert_allclose(prepared.x_train, expected, rtol=1e-6, atol=1e-6)
    assert np.abs(prepared.x_train).max() <= 1.0
    # per-pixel standardization turns that one pixel into a value of about √N
    standardized = runs.prepare_data({**config, "preprocess": "standardize"})
    assert np.abs(standardized.x_train).max() > 25


def test_images_with_augmentation_get_the_per_channel_mean_subtracted(tmp_path):
    config = runs.resolve({"dataset": str(rare_border_images(tmp_path / "x.npz")),
                           "augment": "flip"})
    x_train = raw_training_split(config)
    prepared = runs.prepare_data(config)
    expected = x_train - x_train.mean(axis=(0, 2, 3), dtype=np.float64)[None, :, None, None]
    np.testing.assert_allclose(prepared.x_train, expected.reshape(len(x_train), -1),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dataset", ["digits", "moons"])
def test_tables_are_standardized_per_feature(dataset):
    config = runs.resolve({"dataset": dataset})
    x_train = raw_training_split(config).astype(np.float64)
    prepared = runs.prepare_data(config)
    std = x_train.std(axis=0)
    expected = (x_train - x_train.mean(axis=0)) / np.where(std < 1e-6, 1.0, std)
    np.testing.assert_allclose(prepared.x_train, expected, rtol=1e-4, atol=1e-5)


def test_images_outside_0_1_get_a_warning(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (60, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "bytes.npz", x=x, y=np.arange(60) % 2)
    assert main(["train", "--dataset", str(tmp_path / "bytes.npz"), "--epochs", "1", "-q",
                 "--output", str(tmp_path / "run")]) == 0
    assert "images range over [0, 255]; the default preprocessing subtracts the mean image" \
        in capsys.readouterr().err
