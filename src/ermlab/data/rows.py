"""``Rows``: rows of an array read on demand, cast and preprocessed as they are read.

``ermlab train`` never copies its data whole. The training, validation and
test splits are ``Rows`` of the loaded (often memory-mapped) array, selected
by index arrays, and the fitted preprocessing (``ermlab.data.preprocessing``)
runs on each mini-batch as the Trainer reads it, so a run holds no
transformed copy of its data. ``Rows`` has the face the Trainer uses —
``len``, ``shape``, ``dtype``, ``x[index]`` with an index array, a slice or
an integer — and ``numpy.asarray(rows)`` materializes it (chunk by chunk,
into one array) for code that needs a real array.

    view = Rows(x, index=split.train, dtype="float32", transform=preprocessor)
    view[[3, 1]]  # == preprocessor.transform(x[split.train[[3, 1]]].astype("float32"))

``row_chunks(x)`` walks any such array (ndarray, memory map, ``Rows``) in
blocks of consecutive rows of about ``CHUNK_BYTES``, for statistics computed
without a copy of the data; ``block_ranges(x)`` names the same blocks' rows, for
work that reads them in lanes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import numpy

# 2 MiB of examples per block: a few blocks fit in the caches, and each lane of
# ``Moments.of`` holds one block and its float64 copy at a time. Measured (the variance
# pass over 900,000 rows of 784 float32 on 2 AMD Zen 5 cores, 2 lanes): 0.35 s with 2 MiB,
# 0.35–0.58 s with 4 MiB (the first pass in a process the slowest), 0.37–0.43 s with 1 MiB.
CHUNK_BYTES = 1 << 21


class Rows:
    """Rows ``index`` of ``source`` (all of them when ``None``), cast to ``dtype`` and passed
    through ``transform`` (an object with ``transform(x)``) when they are read.

    ``source`` is anything indexable by rows (a NumPy array, a memory map, another
    ``Rows``). Nothing is read or copied until rows are asked for.
    """

    def __init__(self, source: Any, index: Any = None, dtype: Any = None,
                 transform: Any = None) -> None:
        if index is not None:
            index = numpy.asarray(index)
            if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
                raise ValueError(f"index must be a 1-D array of row numbers; got {index.dtype} "
                                 f"of shape {index.shape}")
            index = index.astype(numpy.intp, copy=False)
        if isinstance(source, Rows) and source.transform is None:  # one gather, not two
            if source.index is not None:
                index = source.index if index is None else source.index[index]
            dtype = source.cast if dtype is None else dtype
            source = source.source
        if isinstance(source, numpy.memmap):  # reads are plain arrays; the mapping stays alive
            source = source.view(numpy.ndarray)
        self.source, self.index, self.transform = source, index, transform
        self.cast = None if dtype is None else numpy.dtype(dtype)
        example = self._read(slice(0, 1)) if transform is not None and len(source) else None
        if example is None:
            shape, kind = tuple(source.shape[1:]), self.cast or source.dtype
        else:
            shape, kind = tuple(example.shape[1:]), example.dtype
        self.shape = (len(source) if index is None else len(index), *shape)
        self.dtype = numpy.dtype(kind)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(numpy.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            rows = self[key[0]]
            return rows[key[1:]] if _is_integer(key[0]) else rows[(slice(None), *key[1:])]
        if _is_integer(key):
            i = operator.index(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} is out of range for {len(self)} rows")
            i %= len(self)
            return self._read(slice(i, i + 1) if self.index is None else self.index[i:i + 1])[0]
        if not isinstance(key, slice):
            key = numpy.asarray(key)
            if not key.size:
                key = key.astype(numpy.intp)
            elif key.dtype == bool:
                if key.shape != (len(self),):
                    raise IndexError(f"a boolean mask of shape {key.shape} for {len(self)} rows")
                key = numpy.flatnonzero(key)
        return self._read(key if self.index is None else self.index[key])

    def _read(self, where: Any) -> Any:
        x = self.source[where]
        if self.cast is not None and x.dtype != self.cast:
            x = x.astype(self.cast)
        return x if self.transform is None else self.transform.transform(x)

    def __array__(self, dtype: Any = None, copy: Any = None) -> numpy.ndarray:
        out = numpy.empty(self.shape, dtype=self.dtype if dtype is None else dtype)
        for start, chunk in _blocks(self):
            out[start:start + len(chunk)] = chunk
        return out

    def __repr__(self) -> str:
        parts = [f"{len(self)} of {len(self.source)} rows", f"shape={self.shape}",
                 f"dtype={self.dtype}"]
        if self.transform is not None:
            parts.append(f"transform={self.transform!r}")
        return f"Rows({', '.join(parts)})"


def row_chunks(x: Any, chunk_bytes: int | None = None) -> Iterator[Any]:
    """Consecutive blocks of rows of ``x`` (about ``chunk_bytes`` each, default
    ``CHUNK_BYTES``; at least one row)."""
    for _, chunk in _blocks(x, chunk_bytes):
        yield chunk


def block_ranges(x: Any, chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """The rows [start, stop) of each block ``row_chunks(x, chunk_bytes)`` yields, in order."""
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    row_bytes = int(numpy.prod(x.shape[1:], dtype=numpy.int64)) * numpy.dtype(x.dtype).itemsize
    step = max(1, chunk_bytes // max(row_bytes, 1))
    return [(start, min(start + step, len(x))) for start in range(0, len(x), step)]


def _blocks(x: Any, chunk_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    for start, stop in block_ranges(x, chunk_bytes):
        yield start, x[start:stop]


def _is_integer(key: Any) -> bool:
    return isinstance(key, (int, numpy.integer)) and not isinstance(key, bool)
