"""Histogram equalization of every image of a batch at once (an image step of a pipeline).

Each image's grey levels are replaced by their cumulative distribution, so
that the output's levels spread evenly over [0, 1] whatever the lighting:

    x ← F(x),   F = the image's empirical CDF over ``nbins`` equal bins of
                [min x, max x], interpolated linearly between the bin centres

(one histogram over all channels of a colour image). This is scikit-image's
``skimage.exposure.equalize_hist`` — numpy.histogram's binning, numpy.interp
between the centres — computed for N images in one pass instead of N calls;
the tests compare the two (float64: equal to 10⁻¹²).

Reference: R. C. Gonzalez and R. E. Woods, Digital Image Processing, ch. 3
(histogram equalization); scikit-image, ``skimage/exposure/exposure.py``.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import ImageStep
from ermlab.features.images import as_images


def equalize(images: Any, nbins: int = 256) -> numpy.ndarray:
    """Histogram-equalized images, of the input's shape (N, C, H, W) and float dtype."""
    if isinstance(nbins, bool) or int(nbins) != nbins or nbins < 1:
        raise ValueError(f"equalize: nbins must be an integer ≥ 1; got {nbins!r}")
    x = as_images(images, "equalize")
    flat = x.reshape(len(x), -1)
    index, low, width = _numpy_bins(flat, int(nbins))
    rows = numpy.arange(len(x))[:, None]
    counts = numpy.bincount((rows * nbins + index).ravel(), minlength=len(x) * nbins)
    cdf = counts.reshape(len(x), nbins).cumsum(axis=1)
    cdf = (cdf / cdf[:, -1:]).astype(x.dtype).astype(numpy.float64)
    return _interpolate(flat.astype(numpy.float64), low, width, cdf, index).astype(
        x.dtype).reshape(x.shape)


def _numpy_bins(flat: numpy.ndarray, nbins: int) -> tuple[numpy.ndarray, ...]:
    """numpy.histogram's bin of every value, per row over [min, max] of the row (an empty
    range widened by ±0.5), with its edges in the values' dtype; and each row's first edge
    and the edges (N, nbins + 1)."""
    low = flat.min(axis=1, keepdims=True)
    high = flat.max(axis=1, keepdims=True)
    flat_rows = low == high
    low = numpy.where(flat_rows, low - 0.5, low)
    high = numpy.where(flat_rows, high + 0.5, high)
    steps = numpy.arange(nbins + 1, dtype=flat.dtype)  # numpy.linspace, in the data's dtype
    edges = steps * ((high - low) / flat.dtype.type(nbins)) + low
    edges[:, -1] = high[:, 0]
    index = ((flat - low) / (high - low) * nbins).astype(numpy.intp)
    index[index == nbins] -= 1
    rows = numpy.arange(len(flat))[:, None] * (nbins + 1)
    index -= flat < _gather(edges, rows + index)
    index += (flat >= _gather(edges, rows + index + 1)) & (index != nbins - 1)
    return index, low, edges


def _gather(table: numpy.ndarray, flat_index: numpy.ndarray) -> numpy.ndarray:
    """table.ravel()[flat_index] (numpy.take: much faster than take_along_axis here)."""
    return numpy.take(table.ravel(), flat_index)


def _interpolate(flat: numpy.ndarray, low: numpy.ndarray, edges: numpy.ndarray,
                 cdf: numpy.ndarray, index: numpy.ndarray) -> numpy.ndarray:
    """numpy.interp(flat, centres, cdf) per row: linear between the neighbouring centres,
    the end values outside them."""
    centres = ((edges[:, :-1] + edges[:, 1:]) / 2).astype(numpy.float64)  # in data precision
    nbins = centres.shape[1]
    rows = numpy.arange(len(flat))[:, None] * nbins
    left = index - (flat < _gather(centres, rows + index))
    if nbins == 1:
        return numpy.broadcast_to(cdf, flat.shape)
    inner = rows + numpy.clip(left, 0, nbins - 2)
    x0, y0 = _gather(centres, inner), _gather(cdf, inner)
    slope = (_gather(cdf, inner + 1) - y0) / (_gather(centres, inner + 1) - x0)
    out = numpy.where(flat == x0, y0, slope * (flat - x0) + y0)
    out = numpy.where(left < 0, cdf[:, :1], out)
    return numpy.where(left >= nbins - 1, cdf[:, -1:], out)

class Equalize(ImageStep):
    """The ``equalize`` step (spec ``equalize[:NBINS]``): the extractors after it see
    histogram-equalized images; see ``equalize``."""

    name = "equalize"

    def __init__(self, nbins: int = 256) -> None:
        if isinstance(nbins, bool) or int(nbins) != nbins or nbins < 1:
            raise ValueError(f"equalize: nbins must be an integer ≥ 1; got {nbins!r}")
        self.nbins = int(nbins)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "nbins": self.nbins}

    def transform(self, images: numpy.ndarray) -> numpy.ndarray:
        return equalize(images, self.nbins)
