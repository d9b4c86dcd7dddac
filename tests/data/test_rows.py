"""``Rows``: lazy rows of an array read like the NumPy array they stand for."""

import numpy
import pytest

from ermlab.data.preprocessing import Flatten, MeanImage, Pipeline
from ermlab.data.rows import Rows, row_chunks


@pytest.fixture
def x():
    return numpy.arange(7 * 2 * 3, dtype=numpy.float64).reshape(7, 2, 3)


INDEX = numpy.array([5, 0, 3, 6, 2])
KEYS = [2, -1, numpy.int64(4), slice(1, 4), slice(None, None, -2), [3, 0, 0], [],
        numpy.array([True, False, True, False, True]), (slice(0, 3), 1), (1, 0, 2),
        ([4, 1], slice(None), 0)]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_rows_read_like_the_gathered_array(x, key):
    view, expected = Rows(x, INDEX), x[INDEX]
    assert view.shape == expected.shape and len(view) == 5 and view.ndim == 3
    numpy.testing.assert_array_equal(view[key], expected[key])


def test_cast_transform_and_materialize(x):
    view = Rows(x, INDEX, dtype=numpy.float32)
    assert view.dtype == numpy.float32 and view[[1, 2]].dtype == numpy.float32
    pipeline = Pipeline([MeanImage(), Flatten()]).fit(x.astype(numpy.float32))
    transformed = Rows(view, transform=pipeline)
    expected = pipeline.transform(x[INDEX].astype(numpy.float32))
    assert transformed.shape == (5, 6) and transformed.dtype == numpy.float32
    numpy.testing.assert_array_equal(transformed[[4, 0]], expected[[4, 0]])
    numpy.testing.assert_array_equal(numpy.asarray(transformed), expected)
    numpy.testing.assert_array_equal(transformed[1:3], expected[1:3])
    assert transformed[numpy.arange(0)].shape == (0, 6)  # an empty batch (DP-SGD's Poisson)


def test_rows_of_rows_gather_once(x):
    inner = Rows(x, INDEX, dtype=numpy.float32)
    outer = Rows(inner, [4, 1])
    assert outer.source is x and outer.cast == numpy.float32
    numpy.testing.assert_array_equal(outer.index, INDEX[[4, 1]])
    numpy.testing.assert_array_equal(outer[:], x[INDEX[[4, 1]]])


def test_bad_keys_and_indices(x):
    view = Rows(x, INDEX)
    with pytest.raises(IndexError, match="out of range"):
        view[5]
    with pytest.raises(IndexError, match="boolean mask"):
        view[numpy.array([True, False])]
    with pytest.raises(ValueError, match="row numbers"):
        Rows(x, numpy.array([[0, 1]]))
    with pytest.raises(ValueError, match="row numbers"):
        Rows(x, numpy.array([0.5]))


def test_row_chunks_cover_every_row_once(x):
    chunks = list(row_chunks(x, chunk_bytes=2 * 6 * 8))
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    numpy.testing.assert_array_equal(numpy.concatenate(chunks), x)
    assert [len(c) for c in row_chunks(Rows(x, INDEX), chunk_bytes=1)] == [1] * 5


def test_a_memory_map_stays_mapped_and_reads_plain_arrays(tmp_path, x):
    numpy.save(tmp_path / "x.npy", x)
    mapped = numpy.load(tmp_path / "x.npy", mmap_mode="r")
    view = Rows(mapped, INDEX)
    assert numpy.shares_memory(view.source, mapped)
    batch = view[[0, 1]]
    assert type(batch) is numpy.ndarray
    numpy.testing.assert_array_equal(batch, x[INDEX[[0, 1]]])
