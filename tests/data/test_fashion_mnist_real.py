"""The real Fashion-MNIST as Debian's ``dataset-fashion-mnist`` installs it (skips when absent)."""

import hashlib
import struct
from pathlib import Path

import numpy
import pytest

from ermlab import data
from ermlab.data import sources

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FILES = [source.filename for source in sources.SOURCES["fashion-mnist"].files]
pytestmark = pytest.mark.skipif(
    not all((DEBIAN / name).is_file() for name in FILES),
    reason=f"Fashion-MNIST not installed in {DEBIAN} (apt-get install dataset-fashion-mnist)")

# The gzip time stamps of Zalando's files (2017-08-31); Debian's build rewrote them.
ZALANDO_MTIME = {"train-images-idx3-ubyte.gz": 1504176606, "train-labels-idx1-ubyte.gz": 1504176606,
                 "t10k-images-idx3-ubyte.gz": 1504176627, "t10k-labels-idx1-ubyte.gz": 1504176627}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ERMLAB_DATA", str(tmp_path_factory.mktemp("empty-cache")))
        assert set(sources.find("fashion-mnist").values()) == {DEBIAN / name for name in FILES}
        return data.load("fashion-mnist")      # empty cache: read from the Debian folder


@pytest.mark.parametrize("source", sources.SOURCES["fashion-mnist"].files, ids=FILES)
def test_debian_files_are_zalandos_release_up_to_the_gzip_header(source):
    raw = (DEBIAN / source.filename).read_bytes()
    sources.verify(raw, source, DEBIAN / source.filename)      # does not raise
    if hashlib.md5(raw).hexdigest() != source.md5:
        flags = raw[3]
        assert raw[:3] == b"\x1f\x8b\x08" and flags == 0, "expected a header without a name"
        original = (b"\x1f\x8b\x08\x08" + struct.pack("<I", ZALANDO_MTIME[source.filename])
                    + raw[8:10] + source.filename.removesuffix(".gz").encode() + b"\0" + raw[10:])
        raw = original
    assert hashlib.md5(raw).hexdigest() == source.md5           # Zalando's published MD5
    assert hashlib.sha256(raw).hexdigest() == source.sha256
    assert len(raw) == source.size


def test_shapes_dtype_and_range(fashion):
    assert fashion.x_train.shape == (60000, 1, 28, 28)
    assert fashion.x_test.shape == (10000, 1, 28, 28)
    assert fashion.input_shape == (1, 28, 28) and fashion.num_classes == 10
    assert fashion.x_train.dtype == numpy.float32
    assert fashion.x_train.min() == 0.0 and fashion.x_train.max() == 1.0


def test_labels_are_balanced_classes_0_to_9(fashion):
    assert fashion.y_train.dtype == numpy.int64
    numpy.testing.assert_array_equal(numpy.bincount(fashion.y_train), [6000] * 10)
    numpy.testing.assert_array_equal(numpy.bincount(fashion.y_test), [1000] * 10)
    assert fashion.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert fashion.class_names[fashion.y_train[0]] == "Ankle boot"


def test_pixel_statistics_match_the_published_normalization(fashion):
    # torchvision tutorials normalize Fashion-MNIST with mean 0.2860, std 0.3530.
    assert fashion.x_train.mean(dtype=numpy.float64) == pytest.approx(0.2860, abs=5e-5)
    assert fashion.x_train.std(dtype=numpy.float64) == pytest.approx(0.3530, abs=5e-5)
