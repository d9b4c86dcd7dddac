"""Data edge cases found by an audit: integer inputs to the statistics transforms, an IDX
header whose size overflows int64, a CSV whose first row has an empty cell, huge labels."""

import struct

import numpy as np
import pytest

from ermlab.data import idx
from ermlab.data.preprocessing import ChannelMean, MeanImage, Standardize
from ermlab.data.user import load_arrays, load_csv


@pytest.mark.parametrize("transform", [MeanImage(), ChannelMean(), Standardize(),
                                       Standardize(per="global")],
                         ids=["mean_image", "channel_mean", "standardize", "standardize-global"])
def test_integer_pixels_are_transformed_as_floats(transform):
    """uint8 pixels minus their mean wrapped around in uint8 (the statistics rounded to
    integers); now the transform works in the default float dtype."""
    x = np.random.default_rng(0).integers(0, 256, (100, 2, 3)).astype(np.uint8)
    got = transform.fit_transform(x)
    expected = transform.fit(x.astype(np.float32)).transform(x.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    assert abs(float(got.mean())) < 1e-3


def test_an_idx_header_whose_size_overflows_is_named_truncated():
    """2³¹·2³¹·2³¹ items wrapped to 0 in int64, the size check passed, and NumPy's reshape
    error named no file."""
    raw = bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 2**31)
    with pytest.raises(ValueError, match=r"big\.idx: IDX file truncated: the header promises "
                                         r"shape \(2147483648, 2147483648, 2147483648\)"):
        idx.parse_idx(raw, "big.idx")


def test_an_empty_cell_in_the_first_row_is_not_a_header(tmp_path):
    """'1,,0' was taken for a header (a cell that is not a number) and its row dropped."""
    path = tmp_path / "t.csv"
    path.write_text("1,,0\n3,4,1\n5,6,0\n7,8,1\n")
    with pytest.raises(ValueError, match="line 1, column '1': '' is not a number"):
        load_csv(path, test_fraction=0)
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    assert len(load_csv(path, test_fraction=0).x_train) == 2  # a header still is one


def test_a_float_label_beyond_int64_is_named():
    with pytest.raises(ValueError, match=r"must be integers \(class indices\); got 1e\+20 at "
                                         r"index 2"):
        load_arrays(np.ones((4, 1)), np.array([0, 1, 1e20, 0.0]))
