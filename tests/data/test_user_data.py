"""Your own data: arrays, .npz and .csv round trips, and clear errors for bad input."""

import numpy
import pytest

from ermlab import data

RNG = numpy.random.default_rng(7)
X = RNG.standard_normal((40, 3))
Y = numpy.arange(40) % 4


def test_load_arrays_holds_out_a_stratified_test_split():
    dataset = data.load_arrays(X, Y, test_fraction=0.25, seed=0)
    assert dataset.x_train.shape == (30, 3) and dataset.x_test.shape == (10, 3)
    assert dataset.x_train.dtype == numpy.float32 and dataset.num_classes == 4
    assert sorted(numpy.bincount(dataset.y_test)) == [2, 2, 3, 3]
    rows = {tuple(r) for r in numpy.concatenate([dataset.x_train, dataset.x_test])}
    assert rows == {tuple(r) for r in X.astype(numpy.float32)}


def test_npz_round_trip_with_explicit_splits(tmp_path):
    path = tmp_path / "mine.npz"
    numpy.savez(path, x_train=X[:30], y_train=Y[:30], x_test=X[30:], y_test=Y[30:],
                class_names=numpy.array(["a", "b", "c", "d"]))
    for dataset in (data.load(str(path)), data.load("npz", path=path)):
        assert dataset.name == "mine" and dataset.class_names == ["a", "b", "c", "d"]
        numpy.testing.assert_allclose(dataset.x_test, X[30:], rtol=1e-6)
        numpy.testing.assert_array_equal(dataset.y_train, Y[:30])


def test_npz_with_x_and_y_is_split(tmp_path):
    numpy.savez(tmp_path / "xy.npz", x=X, y=Y.astype(numpy.float64))     # integral floats are fine
    dataset = data.load(str(tmp_path / "xy.npz"), test_fraction=0.5, seed=1)
    assert len(dataset.y_train) == len(dataset.y_test) == 20
    assert dataset.y_train.dtype == numpy.int64


def test_csv_round_trip_with_header_and_named_label(tmp_path):
    path = tmp_path / "table.csv"
    lines = ["a,b,y,c"] + [f"{x[0]:.17g},{x[1]:.17g},{y},{x[2]:.17g}" for x, y in zip(X, Y)]
    path.write_text("\n".join(lines) + "\n")
    dataset = data.load(str(path), label="y", test_fraction=0.0)
    numpy.testing.assert_allclose(dataset.x_train, X, rtol=1e-6)
    numpy.testing.assert_array_equal(dataset.y_train, Y)
    assert len(dataset.x_test) == 0


def test_csv_without_header_defaults_to_the_last_column_or_a_label_column(tmp_path):
    (tmp_path / "plain.csv").write_text("0.5,1.5,2\n1.0,2.0,0\n\n3,4,1\n")
    dataset = data.load("csv", path=tmp_path / "plain.csv", test_fraction=0.0)
    numpy.testing.assert_array_equal(dataset.y_train, [2, 0, 1])
    numpy.testing.assert_allclose(dataset.x_train, [[0.5, 1.5], [1, 2], [3, 4]])
    (tmp_path / "first.csv").write_text("label,p0,p1\n1,0.5,0.25\n0,1,2\n")
    first = data.load_csv(tmp_path / "first.csv", test_fraction=0.0)
    numpy.testing.assert_array_equal(first.y_train, [1, 0])
    (tmp_path / "indexed.csv").write_text("2,0.5\n0,1.5\n")
    assert data.load_csv(tmp_path / "indexed.csv", label=0, test_fraction=0).y_train.tolist() == [
        2, 0]


def test_missing_files_and_unknown_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="npz file not found"):
        data.load(str(tmp_path / "absent.npz"))
    with pytest.raises(FileNotFoundError, match="csv file not found"):
        data.load("csv", path=tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="needs path=FILE"):
        data.load("npz")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*a path to a .npz or .csv"):
        data.load("imagenet")


def test_wrong_columns_and_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="no column 'y'; columns are a, b, label"):
        data.load_csv(path, label="y")
    with pytest.raises(ValueError, match="label column 5 out of range for 3 columns"):
        data.load_csv(path, label=5)
    path.write_text("1,2,0\n3,4\n")
    with pytest.raises(ValueError, match="line 2 has 2 fields; expected 3"):
        data.load_csv(path)
    path.write_text("1,2,0\n3,oops,1\n")
    with pytest.raises(ValueError, match="has no header"):
        data.load_csv(path, label="label", header=False)
    with pytest.raises(ValueError, match="line 2, column '1': 'oops' is not a number"):
        data.load_csv(path, header=False)


def test_labels_that_are_not_integers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,label\n0.1,cat\n0.2,dog\n")
    with pytest.raises(ValueError, match="line 2: labels must be integers.*got 'cat'"):
        data.load_csv(path)
    path.write_text("x,label\n0.1,0.5\n")
    with pytest.raises(ValueError, match="labels must be integers.*got '0.5'"):
        data.load_csv(path)
    with pytest.raises(ValueError, match=r"y must be integers \(class.*got 1.5 at index 2"):
        data.load_arrays(X[:3], [0, 1, 1.5])
    with pytest.raises(ValueError, match="y must be integers ≥ 0; got -1 at index 0"):
        data.load_arrays(X[:2], [-1, 0])
    with pytest.raises(ValueError, match="map class names"):
        data.load_arrays(X[:2], ["a", "b"])


def test_bad_arrays_and_npz_content(tmp_path):
    with pytest.raises(ValueError, match="different lengths: 40 and 39"):
        data.load_arrays(X, Y[:-1])
    with pytest.raises(ValueError, match="x must be \\(N, features…\\)"):
        data.load_arrays(X[:, 0], Y)
    with pytest.raises(ValueError, match="pass both x_test and y_test"):
        data.load_arrays(X, Y, x_test=X)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\) for 2 class names; got 3"):
        data.load_arrays(X, Y, class_names=["a", "b"])
    numpy.savez(tmp_path / "keys.npz", inputs=X, targets=Y)
    with pytest.raises(ValueError, match="expected keys x_train, y_train.*found inputs, targets"):
        data.load(str(tmp_path / "keys.npz"))
    numpy.savez(tmp_path / "obj.npz", x=numpy.array([{"a": 1}], dtype=object), y=[0])
    with pytest.raises(ValueError, match="not a readable .npz archive of plain arrays"):
        data.load(str(tmp_path / "obj.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load(str(tmp_path / "junk.npz"))


# -- memory maps and .npy folders: nothing copied --------------------------------------


def mapped(array):
    """Whether ``array``'s memory is a file mapping (a ``Rows`` view: its source's)."""
    import mmap

    array = getattr(array, "source", array)
    while array is not None:
        if isinstance(array, (numpy.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def write_all_forms(folder, **arrays):
    folder.mkdir(exist_ok=True)
    numpy.savez(folder / "stored.npz", **arrays)
    numpy.savez_compressed(folder / "compressed.npz", **arrays)
    (folder / "npy").mkdir()
    for key, value in arrays.items():
        numpy.save(folder / "npy" / f"{key}.npy", value)
    return {"stored": folder / "stored.npz", "compressed": folder / "compressed.npz",
            "npy": folder / "npy"}


def test_memory_mapped_files_give_the_arrays_read_in_memory(tmp_path):
    x = X.astype(numpy.float32)
    paths = write_all_forms(tmp_path, x=x, y=Y, class_names=numpy.array(["a", "b", "c", "d"]))
    reference = data.load(str(paths["stored"]))  # read, split by copying (as before)
    for form, path in paths.items():
        dataset = data.load(str(path), mmap_mode="r")
        assert dataset.class_names == ["a", "b", "c", "d"] and dataset.name in (form, "npy")
        for part in ("x_train", "y_train", "x_test", "y_test"):
            numpy.testing.assert_array_equal(numpy.asarray(getattr(dataset, part)),
                                             getattr(reference, part))
        assert mapped(dataset.x_train) == mapped(dataset.x_test) == (form != "compressed")
        assert dataset.x_train.shape == reference.x_train.shape
    assert data.datasets.loader_name(str(paths["npy"])) == "npy"
    numpy.testing.assert_array_equal(data.load("npy", path=paths["npy"]).y_test, reference.y_test)


def test_explicit_splits_memory_mapped_and_cast_as_read(tmp_path):
    paths = write_all_forms(tmp_path, x_train=X[:30], y_train=Y[:30], x_test=X[30:],
                            y_test=Y[30:])
    for form in ("stored", "npy"):
        dataset = data.load(str(paths[form]), mmap_mode="r")
        assert mapped(dataset.x_train) and dataset.x_train.dtype == numpy.float32
        numpy.testing.assert_array_equal(dataset.x_test[[0, 3]],
                                         X[30:][[0, 3]].astype(numpy.float32))
        with pytest.raises(ValueError, match="read-only"):  # the user's file is never written
            dataset.x_train.source[0, 0] = 1.0


def test_an_array_of_the_right_dtype_is_not_copied():
    x = X.astype(numpy.float32)
    dataset = data.load_arrays(x, Y, x, Y)
    assert dataset.x_train is x and dataset.x_test is x
    assert data.load_arrays(X, Y, X, Y).x_train.dtype == numpy.float32  # float64 is cast
    lazy = data.load_arrays(X, Y, copy=False, seed=0)
    eager = data.load_arrays(X, Y, seed=0)
    assert lazy.x_train.source is X and lazy.x_train.dtype == numpy.float32
    numpy.testing.assert_array_equal(numpy.asarray(lazy.x_test), eager.x_test)


def test_npy_folder_and_mmap_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    numpy.save(tmp_path / "empty" / "inputs.npy", X)
    with pytest.raises(ValueError, match=r"expected files \(.npy\) x_train.*found inputs.npy"):
        data.load(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="folder of .npy files not found"):
        data.load_npy(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="mmap_mode must be None, 'r' or 'c'"):
        data.load_npy(tmp_path / "empty", mmap_mode="r+")
    numpy.save(tmp_path / "empty" / "x.npy", numpy.array([{"a": 1}], dtype=object),
               allow_pickle=True)
    numpy.save(tmp_path / "empty" / "y.npy", numpy.array([0]))
    with pytest.raises(ValueError, match="x.npy: not a readable .npy file of a plain array"):
        data.load(str(tmp_path / "empty"), mmap_mode="r")
    numpy.savez(tmp_path / "obj.npz", x=numpy.array([{"a": 1}], dtype=object), y=[0])
    with pytest.raises(ValueError, match="not a readable .npz archive of plain arrays"):
        data.load(str(tmp_path / "obj.npz"), mmap_mode="r")


def test_a_csv_with_a_byte_order_mark_finds_its_label_column(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; read without ``utf-8-sig`` it made
    the first header cell '\\ufefflabel', and the last column silently became the labels."""
    labels, f1, f2 = Y % 3, numpy.round(X[:, 0], 3), Y
    path = tmp_path / "bom.csv"
    with open(path, "w", encoding="utf-8-sig") as handle:
        handle.write("label,f1,f2\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(labels, f1, f2)))
    for dataset in (data.load(path, test_fraction=0), data.load(path, label="label",
                                                                test_fraction=0)):
        numpy.testing.assert_array_equal(dataset.y_train, labels)
        numpy.testing.assert_allclose(dataset.x_train, numpy.stack([f1, f2], 1), rtol=1e-6)
        assert "label column 'label'" in dataset.description


def test_a_csv_that_is_not_utf8_is_named_with_the_byte_and_the_fix(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("caf\xe9,b,label\n1,2,0\n3,4,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not UTF-8 text: byte 3 \(line 1\) is "
                                         r"0xE9; save the file as UTF-8"):
        data.load(path)


def test_a_csv_of_labels_alone_is_refused_at_load(tmp_path):
    """It loaded as x of shape (N, 0), and training failed in a reduction's minimum."""
    path = tmp_path / "labels.csv"
    path.write_text("label\n" + "".join(f"{v}\n" for v in Y))
    with pytest.raises(ValueError, match=r"labels\.csv: the only column, 'label', is the "
                                         "label column"):
        data.load(path)
    with pytest.raises(ValueError, match=r"x examples have no features \(shape \(40, 0\)\)"):
        data.load_arrays(numpy.zeros((40, 0)), Y)


def test_uint64_labels_beyond_int64_are_named_as_the_file_has_them():
    """2⁶³ wrapped to −2⁶³ in the cast to int64 and the error named that label."""
    y = numpy.array([1, 0, 2**63, 1], dtype=numpy.uint64)
    with pytest.raises(ValueError, match="got 9223372036854775808 at index 2"):
        data.load_arrays(numpy.zeros((4, 2)), y, test_fraction=0)
