"""The CIFAR-10 *binary* version (Krizhevsky 2009), read straight from its archive.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` …
``data_batch_5.bin`` (10,000 images each, the training set), ``test_batch.bin``
(10,000) and ``batches.meta.txt`` (the 10 class names, one a line). Each batch is
a run of 3,073-byte records::

    byte 0        label in 0…9
    bytes 1–1024  red channel, 32×32, row-major
    next 1024     green channel
    next 1024     blue channel

so a record is one label byte and a (3, 32, 32) uint8 image in CHW order. Only
the binary version is read; the Python version is pickled and never loaded here.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy

RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def parse_batch(raw: bytes, name: str = "<bytes>") -> tuple[numpy.ndarray, numpy.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary batch."""
    if len(raw) == 0 or len(raw) % RECORD_BYTES:
        raise ValueError(
            f"{name}: {len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
            "records (1 label byte + 3×32×32 pixels); the file is truncated or not a CIFAR-10 "
            "binary batch"
        )
    records = numpy.frombuffer(raw, dtype=numpy.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(numpy.int64)
    bad = numpy.flatnonzero(labels >= len(CLASS_NAMES))
    if bad.size:
        raise ValueError(f"{name}: labels must be in [0, 10); got {labels[bad[0]]} in record "
                         f"{bad[0]}")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar10(
    path: str | os.PathLike,
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray, list[str]]:
    """``(x_train, y_train, x_test, y_test, class_names)`` from the binary version.

    ``path`` is ``cifar-10-binary.tar.gz`` or a directory holding the extracted
    ``.bin`` files (directly or in ``cifar-10-batches-bin/``). Images are uint8
    in NCHW order: (50000, 3, 32, 32) and (10000, 3, 32, 32).
    """
    return from_members(_read_members(Path(path)), os.fspath(path))


def from_members(
    files: dict[str, bytes], name: str = "<archive>"
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray, list[str]]:
    """The splits from the batch files' bytes, keyed by base name (see ``read_cifar10``)."""
    missing = [batch for batch in (*TRAIN_BATCHES, TEST_BATCH) if batch not in files]
    if missing:
        raise ValueError(f"{name}: CIFAR-10 binary files missing: {', '.join(missing)}")
    train = [parse_batch(files[batch], f"{name}:{batch}") for batch in TRAIN_BATCHES]
    x_test, y_test = parse_batch(files[TEST_BATCH], f"{name}:{TEST_BATCH}")
    x_train = numpy.concatenate([x for x, _ in train])
    y_train = numpy.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test, _class_names(files.get(META))


def archive_members(raw: bytes, name: str = "<bytes>") -> dict[str, bytes]:
    """The CIFAR-10 files in the bytes of a ``.tar.gz``, by base name, without extracting."""
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    files = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    files[base] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{name}: corrupt or truncated archive ({error}); delete it "
                         "and download it again") from None
    return files


def missing_batches(path: str | os.PathLike) -> list[str]:
    """The batch files not in the folder ``path`` (directly or in ``cifar-10-batches-bin/``);
    none when ``path`` is a file (an archive)."""
    path = Path(path)
    if path.is_file():
        return []
    folder = _batch_folder(path)
    return [batch for batch in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / batch).is_file()]


def _batch_folder(path: Path) -> Path:
    return path / "cifar-10-batches-bin" if (path / "cifar-10-batches-bin").is_dir() else path


def _read_members(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in _batch_folder(path).iterdir()
                if p.name in {*TRAIN_BATCHES, TEST_BATCH, META}}
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return archive_members(path.read_bytes(), os.fspath(path))


def _class_names(meta: bytes | None) -> list[str]:
    if meta is None:
        return list(CLASS_NAMES)
    names = [line.strip() for line in meta.decode("ascii").splitlines() if line.strip()]
    if len(names) != len(CLASS_NAMES):
        raise ValueError(f"{META}: expected {len(CLASS_NAMES)} class names; got {len(names)}")
    return names
