"""``ermlab compare`` and ``ermlab train --features``: the command-line faces of ermlab.features."""

import json
import sys

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


def test_train_features_linear_svm_then_predict_applies_the_saved_pipeline(tmp_path, capsys):
    from ermlab import features
    from ermlab import run as runs
    from ermlab.data import splits
    from ermlab.features.templates import linear_weight

    data, run = stripes(tmp_path / "stripes.npz"), tmp_path / "run"
    assert main(["train", "--dataset", data, "--features", "hog:4:2,hsv-hist:4", "--model",
                 "linear", "--loss", "hinge", "--epochs", "10", "-o", str(run), "-q"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["features"] == "hog:4:2,hsv-hist:4" and config["hidden"] == []
    archive = numpy.load(data)
    numpy.save(tmp_path / "x.npy", archive["x_test"])
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.csv")]) \
        == 0
    predicted = numpy.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=1)
    # oracle: the pipeline fitted by hand on the same training split, features standardized
    # with NumPy, scored by the saved Linear layer
    x_train = splits.train_validation_split(archive["x_train"], archive["y_train"], 0.1, 0)[0]
    pipeline = features.parse("hog:4:2,hsv-hist:4").fit(x_train)
    f_train = pipeline.transform(x_train).astype(numpy.float64)
    mean, std = f_train.mean(axis=0), f_train.std(axis=0)
    f_test = (pipeline.transform(archive["x_test"]) - mean) / numpy.where(std < 1e-6, 1, std)
    model = runs.restore(run).trainer.model
    scores = f_test @ linear_weight(model).T + model[-1].bias.data
    numpy.testing.assert_array_equal(predicted, scores.argmax(axis=1))
    assert (predicted == archive["y_test"]).mean() >= 0.8  # chance: 0.5
    assert main(["evaluate", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_train_linear_on_pixels_draws_templates_and_an_mlp_takes_features(tmp_path):
    data = stripes(tmp_path / "stripes.npz", n=60)
    assert main(["train", "--dataset", data, "--model", "linear", "--epochs", "1",
                 "-o", str(tmp_path / "linear"), "-q"]) == 0
    assert (tmp_path / "linear" / "templates.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["train", "--dataset", data, "--features", "hog:4:2", "--hidden", "8",
                 "--epochs", "1", "-o", str(tmp_path / "mlp"), "-q"]) == 0
    assert not (tmp_path / "mlp" / "templates.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "digits", "--features", "hog:2:1"], "got rows of shape (64,) (table data"),
    (["--features", "hog", "--model", "lenet5"], "use --model linear or mlp, not lenet5"),
    (["--features", "hog", "--augment", "flip"], "leave out --augment or --features"),
    (["--features", "sift"], "unknown step 'sift'"),
    (["--model", "linear", "--hidden", "64"], "--model linear has no hidden layers"),
])
def test_train_feature_errors_are_one_line_and_leave_no_run(tmp_path, capsys, args, message):
    if "--dataset" not in args:
        args = ["--dataset", stripes(tmp_path / "stripes.npz", n=60), *args]
    assert main(["train", *args, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_hsv_histogram_without_scikit_image_says_how_to_install_it(tmp_path, capsys,
                                                                    monkeypatch, command):
    data = stripes(tmp_path / "stripes.npz", n=60)
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage → ImportError
    monkeypatch.setitem(sys.modules, "skimage.color", None)
    assert main([command, "--dataset", data, "--features", "hog:4:2,hsv-hist",
                 "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "ermlab[features]"' in err and len(err.strip().splitlines()) == 1


def test_train_one_vs_all_svms_on_digits(tmp_path):
    """--model linear --loss ova_hinge: C binary SVMs trained together by SGD; each class's
    machine separates its class from the rest (score > 0 mostly on its own class)."""
    from ermlab import run

    out = tmp_path / "ova"
    assert main(["train", "--model", "linear", "--loss", "ova_hinge", "--epochs", "30",
                 "--patience", "none", "-o", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9  # chance: 0.1
    restored = run.restore(out)
    assert restored.trainer.loss.__class__.__name__ == "OneVsAllHinge"


def test_train_extracts_each_examples_features_once(tmp_path, monkeypatch):
    """Fitting the preprocessing after the features (standardization) reuses the training
    features it computed; no image goes through the feature pipeline twice."""
    from ermlab.features.pipeline import FeaturePipeline

    seen = []
    extract = FeaturePipeline._transform

    def counted(self, x, xp):
        seen.append(len(x))
        return extract(self, x, xp)

    monkeypatch.setattr(FeaturePipeline, "_transform", counted)
    data = stripes(tmp_path / "stripes.npz", n=120)
    assert main(["train", "--dataset", data, "--features", "hog:4:2", "--model", "linear",
                 "--epochs", "1", "-o", str(tmp_path / "run"), "-q"]) == 0
    assert sum(seen) == 120  # 80 training (train + validation) and 40 test images, each once
