"""``ermlab compare`` and ``ermlab train --features``: the command-line faces of ermlab.features."""

import json

import numpy
import pytest

from ermlab.cli import main

pytest.importorskip("skimage", reason="hsv-hist needs scikit-image: pip install scikit-image")


def stripes(path, n=120, size=16, seed=0):
    """Grey images of horizontal (class 0) or vertical (class 1) stripes, random phase and
    contrast, plus noise: HoG tells them apart at once."""
    rng = numpy.random.default_rng(seed)
    y = numpy.arange(n) % 2
    grid = numpy.arange(size)
    x = numpy.empty((n, 1, size, size), numpy.float32)
    for i in range(n):
        wave = 0.5 + 0.4 * rng.uniform(0.3, 1) * numpy.sin(grid * 1.3 + rng.uniform(0, 6))
        x[i, 0] = wave[:, None] if y[i] == 0 else wave[None, :]
    x = numpy.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(numpy.float32)
    numpy.savez(path, x_train=x[:n - 40], y_train=y[:n - 40], x_test=x[n - 40:],
                y_test=y[n - 40:])
    return str(path)


def test_compare_prints_the_table_and_writes_its_files(tmp_path, capsys):
    data = stripes(tmp_path / "stripes.npz")
    out = tmp_path / "compare"
    code = main(["compare", "--dataset", data, "--features", "hog:4:2,hsv-hist:4",
                 "--methods", "pixels-softmax,features-svm,features-mlp,cnn", "--epochs", "3",
                 "--hidden", "8", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for method in ("pixels-softmax", "features-svm", "features-mlp", "cnn"):
        assert f"| {method} |" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results] == ["pixels-softmax", "features-svm", "features-mlp",
                                              "cnn"]
    features_svm = results[1]
    assert features_svm["test_accuracy"] >= 0.9  # HoG sees the stripes' direction
    assert features_svm["extract_seconds"] > 0 and results[0]["extract_seconds"] == 0
    for name in ("table.md", "templates.png", "polar.png"):
        assert (out / name).stat().st_size > 0
    assert "100.0 % in (r, θ)" in printed


@pytest.mark.parametrize("args, message", [
    (["--features", "hog:4:2,sift"], "unknown step 'sift'"),
    (["--features", "hog:8:3"], "too small for blocks of 3×3 cells of 8×8 pixels"),
    (["--methods", "pixels-softmax,knn"], "unknown method(s) ['knn']"),
    (["--train-size", "3"], "train_size 3 is too small"),
])
def test_compare_errors_are_one_line(tmp_path, capsys, args, message):
    data = stripes(tmp_path / "stripes.npz", n=60)
    assert main(["compare", "--dataset", data, "--epochs", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_compare_refuses_data_that_are_not_images(capsys):
    assert main(["compare", "--dataset", "digits", "--methods", "pixels-softmax"]) == 2
    assert "got rows of shape (64,) (table data, not images)" in capsys.readouterr().err
