"""The data path of ``ermlab train`` holds no whole copy of its data (issue 11).

Before: the archive was read, copied by an ``astype`` to its own dtype, split
by copying, kept beside its splits, copied to float64 for the variance and
transformed whole: ``prepare_data`` peaked at about 3× the data. Now files
are memory-mapped (or, compressed, read once), splits are ``Rows`` views,
statistics are accumulated block by block and the preprocessing runs per
batch. tracemalloc traces NumPy's allocations but not the pages of a mapped
file, so its peak is what ``prepare_data`` allocates.
"""

import json
import tracemalloc

import numpy
import pytest

from ermlab import run
from ermlab.cli import main
from ermlab.data import splits
from ermlab.training.checkpoint import load_checkpoint

N, SHAPE = 16_000, (1, 28, 28)  # 50 MB of float32, as Fashion-MNIST's 60,000 images are 188 MB
DATA_BYTES = N * 784 * 4


def images(n, shape, seed=0):
    """Sparse images (a lit square in the middle), so savez_compressed is quick."""
    rng = numpy.random.default_rng(seed)
    x = numpy.zeros((n, *shape), numpy.float32)
    x[..., 10:18, 10:18] = rng.integers(0, 4, (n, shape[0], 8, 8)) / numpy.float32(3)
    return x, numpy.arange(n) % 10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    x, y = images(N, SHAPE)
    numpy.savez_compressed(folder / "compressed.npz", x=x, y=y)
    numpy.savez(folder / "stored.npz", x=x, y=y)
    (folder / "npy").mkdir()
    numpy.save(folder / "npy" / "x.npy", x)
    numpy.save(folder / "npy" / "y.npy", y)
    numpy.savez(folder / "warm.npz", x=x[:1000], y=y[:1000])
    run.prepare_data(run.resolve({"dataset": str(folder / "warm.npz")}))  # imports, untraced
    return folder


def traced_peak(config):
    import sklearn.model_selection  # noqa: F401  (imported before tracing: not the data path)

    config = run.resolve(config)
    tracemalloc.start()
    try:
        data = run.prepare_data(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return data, peak


# compressed members are read into memory (1× the data); mapped files cost nothing but a few
# blocks of ermlab.data.rows.CHUNK_BYTES (each of the statistics' lanes holds a block and its
# float64 copy: the bounds are for 2 lanes, as on the CI's 2 cores), the labels and the
# index arrays
@pytest.mark.parametrize("form, bound", [("compressed.npz", 1.3), ("stored.npz", 0.3),
                                         ("npy", 0.3)])
@pytest.mark.parametrize("preprocess", ["auto", "standardize"])
def test_prepare_data_peaks_below_its_bound(files, form, bound, preprocess, monkeypatch):
    monkeypatch.setenv("ERMLAB_NUM_THREADS", "2")
    data, peak = traced_peak({"dataset": str(files / form), "preprocess": preprocess})
    assert peak <= bound * DATA_BYTES, f"peak {peak / DATA_BYTES:.2f}× the data"
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == N
    assert data.x_train.shape[1:] == (784,) and data.x_train[[0, 5]].dtype == numpy.float32


def before(path, preprocess):
    """``prepare_data`` as it was, written out: read whole, split by copying, fit with the
    whole-array float64 formulas, transform whole."""
    with numpy.load(path) as archive:
        x, y = archive["x"].astype(numpy.float32), archive["y"]
    held = splits.train_val_test_split(y, 0.0, 0.25, 0)  # load_arrays's test split
    x_rest, y_rest, x_test, y_test = x[held.train], y[held.train], x[held.test], y[held.test]
    x_train, y_train, x_val, y_val = splits.train_validation_split(x_rest, y_rest, 0.1, 0)
    mean = x_train.mean(axis=0, dtype=numpy.float64)
    scale = numpy.ones_like(mean)
    if preprocess == "standardize":
        scale = numpy.sqrt(x_train.var(axis=0, dtype=numpy.float64))
        scale = numpy.where(scale < 10 * numpy.finfo(numpy.float32).eps, 1.0, scale)

    def apply(a):
        a = a - mean.astype(numpy.float32)
        a = a / scale.astype(numpy.float32) if preprocess == "standardize" else a
        return a.reshape(len(a), -1)

    return run.Data(apply(x_train), y_train, apply(x_val), y_val, apply(x_test), y_test,
                    [str(c) for c in range(int(y.max()) + 1)], None, tuple(x.shape[1:]), None)


@pytest.mark.parametrize("preprocess, shape", [("mean_image", (1, 6, 6)), ("standardize", (5,))])
def test_training_gives_the_same_result_as_before(tmp_path, preprocess, shape):
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((400, *shape)).astype(numpy.float64) * 3 + 1
    y = (x.reshape(400, -1)[:, 0] > 1).astype(numpy.int64) + 2 * (x.reshape(400, -1)[:, 1] > 1)
    numpy.savez(tmp_path / "small.npz", x=x, y=y)
    config = run.resolve({"dataset": str(tmp_path / "small.npz"), "preprocess": preprocess,
                          "hidden": [8], "epochs": 2, "batch_size": 16})
    now, then = run.prepare_data(config), before(tmp_path / "small.npz", preprocess)
    numpy.testing.assert_array_equal(now.y_test, then.y_test)
    numpy.testing.assert_allclose(numpy.asarray(now.x_val), then.x_val, rtol=1e-6, atol=1e-6)
    histories, weights = [], []
    for data in (now, then):
        trainer = run.build_trainer(config, data, [])
        histories.append(trainer.fit(data.x_train, data.y_train, epochs=2, batch_size=16,
                                     validation_data=(data.x_val, data.y_val)))
        test = trainer.evaluate(data.x_test, data.y_test)
        histories[-1] = {**histories[-1], **{f"test_{k}": v for k, v in test.items()}}
        weights.append([p.data.copy() for p in trainer.model.parameters()])
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "test_loss", "test_accuracy"):
        numpy.testing.assert_allclose(histories[0][key], histories[1][key], rtol=1e-5)
    for a, b in zip(*weights):
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ermlab_train_on_a_memory_mapped_npy_folder(tmp_path, capsys):
    x, y = images(300, (1, 28, 28), seed=2)
    folder = tmp_path / "mine"
    folder.mkdir()
    numpy.save(folder / "x.npy", x)
    numpy.save(folder / "y.npy", y.astype(numpy.int32))
    numpy.save(folder / "class_names.npy", numpy.array([f"c{i}" for i in range(10)]))
    numpy.savez_compressed(tmp_path / "same.npz", x=x, y=y)
    results = []
    for dataset, output in ((folder, "run_npy"), (tmp_path / "same.npz", "run_npz")):
        assert main(["train", "--dataset", str(dataset), "--hidden", "8", "--epochs", "2",
                     "-q", "--output", str(tmp_path / output)]) == 0
        results.append(json.loads((tmp_path / output / "metrics.json").read_text()))
    assert results[0]["test_loss"] == results[1]["test_loss"]  # mapped or read: the same run
    saved = json.loads((tmp_path / "run_npy" / "config.json").read_text())
    assert saved["dataset"] == str(folder.resolve())
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run_npy"), "--split", "validation"]) == 0
    assert "accuracy" in capsys.readouterr().out
    model = run.restore(tmp_path / "run_npy").trainer.model
    load_checkpoint(tmp_path / "run_npy" / "best.safetensors", model=model)


def test_non_finite_values_in_a_mapped_file_are_found_block_by_block(tmp_path, monkeypatch):
    monkeypatch.setattr("ermlab.data.rows.CHUNK_BYTES", 3 * 20 * 4)
    x = numpy.ones((50, 20), numpy.float32)
    x[17, 4], x[17, 9], x[31, 0] = numpy.nan, numpy.inf, -numpy.inf
    folder = tmp_path / "bad"
    folder.mkdir()
    for key, value in {"x_train": x, "y_train": numpy.arange(50) % 2,
                       "x_test": x[:10], "y_test": numpy.arange(10) % 2}.items():
        numpy.save(folder / f"{key}.npy", value)
    with pytest.raises(ValueError, match=r"bad training inputs: 3 values are NaN or infinite, "
                                         r"in 2 of 50 examples \(the first at example 17, "
                                         r"feature 4: nan\)"):
        run.prepare_data(run.resolve({"dataset": str(folder)}))
