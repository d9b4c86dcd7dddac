"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al. 1998), read and written.

An IDX file is a header followed by the array in C order, big-endian::

    bytes 0–1   0x00 0x00               magic
    byte  2     type code               0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                        0x0D float32, 0x0E float64
    byte  3     d                       number of dimensions
    4·d bytes   sizes                   each a big-endian uint32
    the rest    Π sizes items           big-endian, of the type above

``train-images-idx3-ubyte`` is type 0x08 with d = 3 (N, 28, 28); the labels file
is type 0x08 with d = 1 (N,). The files are distributed gzip-compressed; gzip is
recognised by its own magic bytes (0x1F 0x8B), not by the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import Any

import numpy

IDX_TYPES = {
    0x08: numpy.dtype("u1"),
    0x09: numpy.dtype("i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def gunzip(raw: bytes, name: str = "<bytes>") -> bytes:
    """``raw`` decompressed when it starts with the gzip magic, else unchanged."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{name}: corrupt or truncated gzip data ({error}); delete the file and download "
            "it again"
        ) from None


def parse_idx(raw: bytes, name: str = "<bytes>", ndim: int | None = None) -> numpy.ndarray:
    """The array stored in IDX bytes ``raw`` (gzip-compressed or not), in native byte order.

    ``ndim``, when given, is the number of dimensions the caller expects (3 for
    images, 1 for labels); a file with another number is an error.
    """
    data = gunzip(raw, name)
    if not data or data[:2] != b"\x00\x00"[:len(data)]:
        raise ValueError(
            f"{name}: not an IDX file (bad magic {data[:4].hex() or 'empty'}; an IDX file "
            "starts with two zero bytes, a type code and the number of dimensions)"
        )
    if len(data) < 4:  # the magic's start, cut short
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, needs at least 4)")
    code, dims = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if ndim is not None and dims != ndim:
        raise ValueError(f"{name}: expected an IDX file with {ndim} dimensions; it has {dims}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, needs {header})")
    shape = struct.unpack(f">{dims}I", data[4:header])
    dtype = IDX_TYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no wrap-around
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX file {problem}: the header promises shape {shape} of {dtype.name} "
            f"({expected} bytes in all) but there are {len(data)} bytes; download it again"
        )
    array = numpy.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> numpy.ndarray:
    """Read an IDX file (``.gz`` or raw) into a NumPy array; see ``parse_idx``."""
    with open(path, "rb") as handle:
        return parse_idx(handle.read(), os.fspath(path), ndim)


def write_idx(path: str | os.PathLike, array: Any, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when ``compress`` (default: ``.gz`` name).

    The file is replaced atomically (``atomic_write_bytes``)."""
    array = numpy.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store {array.dtype}; use uint8, int8, int16, int32, "
                         "float32 or float64")
    code = _CODES[native]
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload = header + numpy.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    if compress if compress is not None else os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    from ermlab.training.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, payload)  # all at once: a failure leaves the old file intact
