"""Your own copy of MNIST: .gz or not, re-compressed, renamed, or not the official release.

MNIST cannot be downloaded here, so the dataset description of ``mnist`` is
replaced by one with the digests of small synthetic IDX files this test writes
(the published .gz digests and the SHA-256 of the decompressed content, as the
real description has them). tests/cli/test_cli_data.py uses the real one.
"""

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy
import pytest

from ermlab import data
from ermlab.data import sources

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx(array):
    array = numpy.asarray(array, dtype=numpy.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def arrays(seed=0, n_train=60, n_test=20):
    rng = numpy.random.default_rng(seed)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
            "train-labels-idx1-ubyte": numpy.arange(n_train) % 10,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
            "t10k-labels-idx1-ubyte": numpy.arange(n_test) % 10}


def official(content, stem):
    """A gzip file as the publisher made it: with the file name and a time in the header."""
    return gzip.compress(content, mtime=0)[:3] + b"\x08" + struct.pack("<I", 1000) + b"\x00\x03" \
        + stem.encode() + b"\x00" + gzip.compress(content, mtime=0)[10:]


@pytest.fixture
def release(monkeypatch):
    """Contents of a synthetic release; ``mnist`` now describes it."""
    contents = {stem: idx(array) for stem, array in arrays().items()}
    files = tuple(
        sources.Source(stem + ".gz", "http://127.0.0.1:9/" + stem + ".gz",
                       hashlib.md5(official(contents[stem], stem)).hexdigest(),
                       hashlib.sha256(official(contents[stem], stem)).hexdigest(),
                       hashlib.sha256(contents[stem]).hexdigest())
        for stem in STEMS)
    fake = sources.RemoteDataset("mnist", files, "https://example.org", "synthetic")
    monkeypatch.setitem(sources.SOURCES, "mnist", fake)
    return contents


def write(folder, contents, form, rename=lambda stem: stem):
    folder.mkdir(exist_ok=True)
    for stem, content in contents.items():
        raw = {"official": official(content, stem), "raw": content,
               "regzipped": gzip.compress(content, compresslevel=6, mtime=12345)}[form]
        suffix = "" if form == "raw" else ".gz"
        (folder / (rename(stem) + suffix)).write_bytes(raw)
    return folder


def test_the_synthetic_official_gz_is_accepted(release, tmp_path):
    loaded = data.load("mnist", path=write(tmp_path / "d", release, "official"))
    assert loaded.x_train.shape == (60, 1, 28, 28) and len(loaded.y_test) == 20


@pytest.mark.parametrize("form", ["raw", "regzipped"])
def test_uncompressed_and_recompressed_copies_pass_by_their_content(release, tmp_path, form):
    official_files = data.load("mnist", path=write(tmp_path / "a", release, "official"))
    copy = data.load("mnist", path=write(tmp_path / "b", release, form))
    numpy.testing.assert_array_equal(copy.x_train, official_files.x_train)
    numpy.testing.assert_array_equal(copy.y_test, official_files.y_test)


@pytest.mark.parametrize("rename", [
    lambda stem: stem.replace("-idx", ".idx"),          # train-images.idx3-ubyte
    lambda stem: stem.upper(),                           # TRAIN-IMAGES-IDX3-UBYTE
    lambda stem: stem.replace("-idx", ".idx").title(),   # Train-Images.Idx3-Ubyte
], ids=["dot-idx", "upper", "title"])
@pytest.mark.parametrize("form", ["raw", "official"])
def test_common_name_variants_are_found(release, tmp_path, rename, form):
    folder = write(tmp_path / "d", release, form, rename)
    found = sources.find("mnist", folder)
    assert all(path is not None and path.parent == folder for path in found.values())
    assert data.load("mnist", path=folder).x_train.shape == (60, 1, 28, 28)


def test_the_published_name_wins_over_a_variant(release, tmp_path):
    folder = write(tmp_path / "d", release, "official")
    (folder / "train-images.idx3-ubyte").write_bytes(b"not this one")
    assert sources.find("mnist", folder)["train-images-idx3-ubyte.gz"].name == \
        "train-images-idx3-ubyte.gz"


def test_other_content_is_refused_with_both_ways_to_accept_it(release, tmp_path):
    other = {stem: idx(array) for stem, array in arrays(seed=1).items()}
    folder = write(tmp_path / "d", other, "raw")
    with pytest.raises(sources.ChecksumError) as error:
        data.load("mnist", path=folder)
    assert "verify=False" in str(error.value) and "--no-verify" in str(error.value)
    with pytest.warns(sources.UnverifiedFileWarning, match="using it unchecked"):
        loaded = data.load("mnist", path=folder, verify=False)
    assert loaded.x_train.shape == (60, 1, 28, 28)


def test_the_mnist_description_checks_decompressed_content():
    for source in sources.SOURCES["mnist"].files:
        assert source.content_sha256 is not None and len(source.content_sha256) == 64


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST not installed in {DEBIAN}")
def test_real_fashion_mnist_decompressed_and_renamed_is_accepted(tmp_path):
    for source in sources.SOURCES["fashion-mnist"].files:
        content = gzip.decompress((DEBIAN / source.filename).read_bytes())
        name = source.filename.removesuffix(".gz").replace("-idx", ".idx")
        (tmp_path / name).write_bytes(content)
    shutil.copy(DEBIAN / "t10k-labels-idx1-ubyte.gz", tmp_path / "T10K-LABELS-IDX1-UBYTE.GZ")
    (tmp_path / "t10k-labels.idx1-ubyte").unlink()
    loaded = data.load("fashion-mnist", path=tmp_path)
    assert loaded.x_train.shape == (60000, 1, 28, 28) and loaded.y_test.shape == (10000,)
    assert numpy.bincount(loaded.y_test).tolist() == [1000] * 10
