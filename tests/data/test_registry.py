"""``load`` by name: CIFAR-10 and MNIST from local directories, the bundled and toy sets."""

import gzip
import hashlib
import io
import struct
import tarfile

import numpy
import pytest

from ermlab import data
from ermlab.data import sources, toy
from ermlab.data.datasets import Dataset


def write_cifar(folder, rng):
    """A 6-batch CIFAR-10 binary archive with 2 records a batch; returns the test images."""
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as archive:
        for i, name in enumerate([*(f"data_batch_{k}.bin" for k in range(1, 6)),
                                  "test_batch.bin"]):
            images = rng.integers(0, 256, (2, 3, 32, 32), dtype=numpy.uint8)
            raw = b"".join(bytes([(i + j) % 10]) + images[j].tobytes() for j in range(2))
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return images


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    test_images = write_cifar(tmp_path, numpy.random.default_rng(2))
    raw = (tmp_path / "cifar-10-binary.tar.gz").read_bytes()
    source = sources.Source("cifar-10-binary.tar.gz", "http://127.0.0.1:9/none",
                            hashlib.md5(raw).hexdigest())
    monkeypatch.setitem(sources.SOURCES, "cifar10",
                        sources.RemoteDataset("cifar10", (source,), "", "this test"))
    return tmp_path, test_images


def test_cifar10_from_a_local_directory(cifar_dir):
    folder, test_images = cifar_dir
    dataset = data.load("cifar10", path=folder)
    assert dataset.x_train.shape == (10, 3, 32, 32) and dataset.input_shape == (3, 32, 32)
    numpy.testing.assert_allclose(dataset.x_test * 255, test_images, atol=1e-4)
    assert dataset.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert dataset.class_names[:2] == ["airplane", "automobile"] and dataset.num_classes == 10
    as_file = data.load("cifar10", path=folder / "cifar-10-binary.tar.gz", dtype=numpy.float64)
    assert as_file.x_train.dtype == numpy.float64
    numpy.testing.assert_allclose(as_file.x_train, dataset.x_train, rtol=1e-6)


def test_cifar10_checksum_and_extracted_directory(cifar_dir, tmp_path):
    folder, _ = cifar_dir
    archive = folder / "cifar-10-binary.tar.gz"
    (tmp_path / "x").mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            (tmp_path / "x" / name).write_bytes(tar.extractfile(member).read())
    with pytest.raises(FileNotFoundError,
                       match=r"read them unchecked: pass verify=False \(command line: --no-verify"):
        data.load("cifar10", path=tmp_path / "x")
    assert data.load("cifar10", path=tmp_path / "x", verify=False).x_test.shape == (2, 3, 32, 32)
    archive.write_bytes(archive.read_bytes()[:-10] + bytes(10))
    with pytest.raises(data.ChecksumError, match="cifar-10-binary.tar.gz: expected md5"):
        data.load("cifar10", path=folder)


def test_mnist_files_with_other_content_need_verify_false(tmp_path):
    for name, shape in [("train-images-idx3-ubyte", (3, 28, 28)), ("train-labels-idx1-ubyte", (3,)),
                        ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))]:
        header = bytes([0, 0, 8, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
        (tmp_path / name).write_bytes(header + bytes(int(numpy.prod(shape))))
    with pytest.raises(data.ChecksumError, match="train-images-idx3-ubyte.*not the official"):
        data.load("mnist", path=tmp_path)
    with pytest.warns(UserWarning, match="using it unchecked"):
        dataset = data.load("mnist", path=tmp_path, verify=False)
    assert dataset.x_train.shape == (3, 1, 28, 28) and dataset.class_names[3] == "3"


def test_labels_out_of_range_in_an_idx_dataset(tmp_path):
    for prefix, n in (("train", 3), ("t10k", 2)):
        images = bytes([0, 0, 8, 3]) + struct.pack(">III", n, 28, 28) + bytes(n * 784)
        labels = bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes([0] * (n - 1) + [12])
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(ValueError, match=r"train labels must be in \[0, 10\); got 12 at index 2"):
        data.load("fashion-mnist", path=tmp_path, verify=False)


def test_bundled_and_toy_sets_keep_their_interface():
    digits = data.load("digits")
    assert isinstance(digits, Dataset) and digits.input_shape == (64,)
    assert digits.num_classes == 10 and len(digits.y_train) + len(digits.y_test) == 1797
    spirals = data.load("two_spirals", n=200, seed=1)
    assert spirals.x_train.shape == (150, 2) and spirals.num_classes == 2
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "moons", "npz", "csv"} <= set(
        data.names())


def test_cifar10_from_a_folder_without_its_files_names_them(tmp_path):
    """An empty folder was told to pass --no-verify, which only failed next."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "data_batch_1.bin").write_bytes(bytes(3073))
    for folder, missing in ((tmp_path / "empty", "data_batch_1.bin, data_batch_2.bin"),
                            (tmp_path / "partial", "missing: data_batch_2.bin")):
        for verify in (True, False):
            with pytest.raises(FileNotFoundError, match=r"holds neither cifar-10-binary.tar.gz "
                                                        r"nor the extracted batch files "
                                                        rf"\(.*{missing}") as error:
                data.load("cifar10", path=folder, verify=verify)
            assert "--no-verify" not in str(error.value)


@pytest.mark.parametrize("name", ["two_spirals", "moons", "circles"])
@pytest.mark.parametrize("n", [1, 7, 400])
def test_two_class_toy_problems_have_n_points(name, n):
    """n // 2 points a class lost one point for odd n; now ⌊n/2⌋ of class 0, ⌈n/2⌉ of class 1,
    as scikit-learn's ``make_moons`` divides them."""
    from sklearn.datasets import make_moons

    x, y = toy.TOY_PROBLEMS[name](n, rng=0)
    assert x.shape == (n, 2) and y.shape == (n,)
    numpy.testing.assert_array_equal(numpy.bincount(y, minlength=2),
                                     numpy.bincount(make_moons(n)[1], minlength=2))


def test_two_spirals_radius_is_the_square_root_of_a_uniform_draw():
    """The docstring: t = √u, u ~ U[0.0025, 1), so P(t ≤ r) = (r² − 0.0025)/0.9975 (it said t
    uniform in (0.05, 1], whose median is 0.525, not 0.707)."""
    from scipy import stats

    x, _ = toy.two_spirals(4000, rng=1)
    radius = numpy.hypot(x[:, 0], x[:, 1])
    assert radius.min() >= 0.05 - 1e-6 and radius.max() < 1 + 1e-6
    cdf = lambda r: numpy.clip((r**2 - 0.0025) / 0.9975, 0, 1)  # noqa: E731
    assert stats.kstest(radius, cdf).pvalue > 0.01
