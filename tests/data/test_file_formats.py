"""IDX and CIFAR-10 binary parsers on small files written here in the official formats."""

import gzip
import io
import struct
import tarfile

import numpy
import pytest

from ermlab.data import cifar
from ermlab.data.idx import parse_idx, read_idx, write_idx


def idx_bytes(array, code=0x08, dtype=">u1"):
    """An IDX file written from the format description, independently of ermlab.data.idx."""
    array = numpy.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(dtype).tobytes()


def test_reads_gzip_idx3_images_and_idx1_labels(tmp_path):
    images = numpy.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    labels = numpy.array([9, 0, 3])
    (tmp_path / "img.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "lab").write_bytes(idx_bytes(labels))
    got = read_idx(tmp_path / "img.gz", ndim=3)
    assert got.dtype == numpy.uint8 and got.shape == (3, 28, 28)
    numpy.testing.assert_array_equal(got, images)
    numpy.testing.assert_array_equal(read_idx(tmp_path / "lab", ndim=1), labels)


@pytest.mark.parametrize("code,dtype", [(0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                        (0x0D, ">f4"), (0x0E, ">f8")])
def test_big_endian_types_come_back_native(code, dtype):
    array = numpy.array([[-2, 1000], [7, -30000]]) if "i1" not in dtype else numpy.array([[-2, 5]])
    got = parse_idx(idx_bytes(array, code, dtype))
    numpy.testing.assert_array_equal(got, array)
    assert got.dtype.isnative


def test_write_idx_matches_the_hand_written_bytes(tmp_path):
    array = numpy.arange(24, dtype=numpy.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.idx", array)
    assert (tmp_path / "a.idx").read_bytes() == idx_bytes(array, 0x0C, ">i4")
    write_idx(tmp_path / "a.gz", array)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == idx_bytes(array, 0x0C, ">i4")


def test_bad_magic_is_a_clear_error():
    with pytest.raises(ValueError, match="not an IDX file.*bad magic"):
        parse_idx(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "x.idx")
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        parse_idx(bytes([0, 0, 7, 1]) + struct.pack(">I", 1) + b"\x00")


def test_truncated_file_names_the_size_mismatch(tmp_path):
    raw = idx_bytes(numpy.zeros((10, 28, 28)))
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ValueError, match=r"t.gz: IDX file truncated.*\(10, 28, 28\).*7856 bytes"):
        read_idx(tmp_path / "t.gz")
    with pytest.raises(ValueError, match="trailing bytes"):
        parse_idx(raw + b"\x00")
    with pytest.raises(ValueError, match="truncated IDX header"):
        parse_idx(raw[:9])


def test_truncated_gzip_stream_is_a_clear_error():
    packed = gzip.compress(idx_bytes(numpy.arange(1000) % 256))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        parse_idx(packed[: len(packed) // 2], "labels.gz")


def test_wrong_number_of_dimensions():
    with pytest.raises(ValueError, match="expected an IDX file with 3 dimensions; it has 1"):
        parse_idx(idx_bytes(numpy.arange(5)), "labels", ndim=3)


def cifar_batch(labels, rng):
    """Records of 1 label byte + 3072 pixel bytes, and the images they hold (C, H, W)."""
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=numpy.uint8)
    raw = b"".join(bytes([label]) + image.tobytes() for label, image in zip(labels, images))
    return raw, images


def cifar_archive(path, batches, meta=True):
    with tarfile.open(path, "w:gz") as archive:
        for name, raw in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
        if meta:
            text = "\n".join(cifar.CLASS_NAMES).encode() + b"\n\n"
            info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))


@pytest.fixture
def small_cifar(tmp_path):
    rng = numpy.random.default_rng(0)
    batches, expected = {}, {}
    for i, name in enumerate([*cifar.TRAIN_BATCHES, cifar.TEST_BATCH]):
        labels = [(i + j) % 10 for j in range(4)]
        batches[name], images = cifar_batch(labels, rng)
        expected[name] = (images, labels)
    cifar_archive(tmp_path / "cifar-10-binary.tar.gz", batches)
    return tmp_path / "cifar-10-binary.tar.gz", batches, expected


def test_cifar_binary_archive_reads_nchw_and_labels(small_cifar):
    path, _, expected = small_cifar
    x_train, y_train, x_test, y_test, names = cifar.read_cifar10(path)
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    numpy.testing.assert_array_equal(
        x_train, numpy.concatenate([expected[b][0] for b in cifar.TRAIN_BATCHES]))
    numpy.testing.assert_array_equal(y_train, sum((expected[b][1] for b in cifar.TRAIN_BATCHES),
                                                  []))
    numpy.testing.assert_array_equal(x_test, expected[cifar.TEST_BATCH][0])
    assert names[0] == "airplane" and names[-1] == "truck"


def test_cifar_pixel_layout_is_red_then_green_then_blue_row_major():
    record = bytearray(cifar.RECORD_BYTES)
    record[0] = 7
    record[1 + 0 * 1024 + 2 * 32 + 5] = 11    # red, row 2, column 5
    record[1 + 2 * 1024 + 31 * 32 + 0] = 22   # blue, row 31, column 0
    x, y = cifar.parse_batch(bytes(record))
    assert y.tolist() == [7]
    assert x[0, 0, 2, 5] == 11 and x[0, 2, 31, 0] == 22 and x.sum() == 33


def test_cifar_extracted_directory(tmp_path, small_cifar):
    _, batches, expected = small_cifar
    folder = tmp_path / "extracted" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, raw in batches.items():
        (folder / name).write_bytes(raw)
    _, _, x_test, _, _ = cifar.read_cifar10(tmp_path / "extracted")
    numpy.testing.assert_array_equal(x_test, expected[cifar.TEST_BATCH][0])


def test_cifar_truncated_batch_and_archive_and_bad_label(tmp_path, small_cifar):
    path, batches, _ = small_cifar
    with pytest.raises(ValueError, match="not a whole number of 3073-byte"):
        cifar.parse_batch(batches["test_batch.bin"][:-1], "test_batch.bin")
    raw = path.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        cifar.read_cifar10(tmp_path / "cut.tar.gz")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\); got 10 in record 0"):
        cifar.parse_batch(bytes([10]) + bytes(3072))
    cifar_archive(tmp_path / "partial.tar.gz", {"test_batch.bin": batches["test_batch.bin"]})
    with pytest.raises(ValueError, match="missing: data_batch_1.bin"):
        cifar.read_cifar10(tmp_path / "partial.tar.gz")
    with pytest.raises(FileNotFoundError):
        cifar.read_cifar10(tmp_path / "absent.tar.gz")


def test_a_header_cut_inside_its_first_four_bytes_is_named_truncated():
    """Three bytes of a valid start were reported as a bad magic number."""
    with pytest.raises(ValueError, match=r"x\.idx: truncated IDX header \(3 bytes, needs at "
                                         r"least 4\)"):
        parse_idx(b"\x00\x00\x08", "x.idx")
    with pytest.raises(ValueError, match="not an IDX file.*bad magic"):
        parse_idx(b"\x00\x01\x08", "x.idx")
