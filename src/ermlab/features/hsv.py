"""Colour histograms in HSV space: what colours an image holds, wherever they are.

Hue (which colour), saturation (how pure) and value (how bright) separate
colour from lighting better than RGB. The feature of an image is, per chosen
channel, the fraction of its pixels in each of ``bins`` equal bins of [0, 1]:

    h[k] = (1 / HW) · #{p : k/B ≤ c_p < (k+1)/B}      (the last bin includes 1)

so each channel's histogram sums to 1 — numpy.histogram's bins, as in the
cs231n feature exercise (hue histogram, 10 bins). The RGB → HSV conversion is
scikit-image's ``rgb2hsv``, called once on the whole batch (it is elementwise).
Grey images have no hue or saturation (both 0), so their histogram is that of
the value channel, the grey level, whatever ``channels`` says.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import Extractor
from ermlab.features.images import as_images, to_channels_last

CHANNELS = "hsv"


def rgb_to_hsv(images: Any) -> numpy.ndarray:
    """(N, 3, H, W) RGB in [0, 1] → (N, 3, H, W) HSV in [0, 1] (scikit-image's ``rgb2hsv``)."""
    x = as_images(images, "rgb_to_hsv")
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_hsv: needs RGB images (N, 3, H, W); got {x.shape}")
    rgb2hsv = _skimage_color().rgb2hsv
    return numpy.ascontiguousarray(numpy.moveaxis(rgb2hsv(to_channels_last(x)), -1, 1))


def hsv_histogram(images: Any, bins: int = 10, channels: str = "h") -> numpy.ndarray:
    """Per image, the fraction of pixels in each of ``bins`` bins of each HSV channel named in
    ``channels`` (a subset of ``"hsv"``, in that order): (N, bins · len(channels)).

    Grey images give the histogram of their grey level (bins features).
    """
    check_options(bins, channels)
    x = as_images(images, "hsv_histogram")
    if x.shape[1] == 1:
        planes = x[:, :1]
    else:
        picked = [CHANNELS.index(c) for c in CHANNELS if c in channels]
        planes = rgb_to_hsv(x)[:, picked]
    return histogram_fractions(planes.reshape(len(x), planes.shape[1], -1), bins).reshape(
        len(x), -1).astype(x.dtype)


def histogram_fractions(values: numpy.ndarray, bins: int) -> numpy.ndarray:
    """(N, K, P) values in [0, 1] → (N, K, bins): numpy.histogram(v, bins, (0, 1)) / P per row,
    for all rows at once (values outside [0, 1] count in no bin). As numpy, the bin edges are
    in the values' precision (float32 data: float32 edges)."""
    edges = numpy.linspace(0.0, 1.0, bins + 1).astype(values.dtype)  # numpy's, in the data's
    index = numpy.searchsorted(edges, values, side="right") - 1
    index[values == 1.0] = bins - 1
    inside = (values >= 0) & (values <= 1)
    rows = numpy.arange(values.shape[0] * values.shape[1]).reshape(values.shape[:2])[..., None]
    flat = (rows * bins + numpy.clip(index, 0, bins - 1))[inside]
    counts = numpy.bincount(flat, minlength=values.shape[0] * values.shape[1] * bins)
    return counts.reshape(*values.shape[:2], bins) / values.shape[2]


def check_options(bins: int, channels: str) -> None:
    if isinstance(bins, bool) or int(bins) != bins or bins < 1:
        raise ValueError(f"hsv_histogram: bins must be an integer ≥ 1; got {bins!r}")
    if not channels or any(c not in CHANNELS for c in channels) or \
            len(set(channels)) != len(channels):
        raise ValueError(f"hsv_histogram: channels are some of h, s, v (e.g. 'h' or 'hsv'); "
                         f"got {channels!r}")


def _skimage_color() -> Any:
    try:
        from skimage import color
    except ImportError:
        raise ImportError('the HSV colour histogram needs scikit-image: pip install '
                          '"ermlab[features]"') from None
    return color


class HSVHistogram(Extractor):
    """The ``hsv-hist`` step (spec ``hsv-hist[:BINS[:CHANNELS]]``, e.g. ``hsv-hist:10`` for
    10 hue bins, ``hsv-hist:8:hsv`` for 8 bins of each channel); see ``hsv_histogram``."""

    name = "hsv-hist"

    def __init__(self, bins: int = 10, channels: str = "h") -> None:
        check_options(bins, channels)
        _skimage_color()  # a missing scikit-image shows now, not after the other steps
        self.bins, self.channels = int(bins), str(channels)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "bins": self.bins, "channels": self.channels}

    def transform(self, images: numpy.ndarray) -> numpy.ndarray:
        return hsv_histogram(images, self.bins, self.channels)
