"""Colour quantization: a palette of K colours learned from the training pixels.

k-means on pixels drawn from the training images gives K palette colours
(scikit-learn's ``MiniBatchKMeans``, seeded); each pixel is then replaced by
its nearest palette colour,

    q(p) = argmin_k ‖p − c_k‖²,

which reduces an image to K colours (``quantize``). The feature of an image
is the fraction of its pixels that each palette colour takes — a colour
histogram whose bins the data chose, instead of a fixed grid. Grey images
get a palette of grey levels.

Reference: P. Heckbert, "Color image quantization for frame buffer display",
SIGGRAPH 1982.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import Extractor
from ermlab.features.images import as_images


def fit_kmeans(points: numpy.ndarray, k: int, seed: int) -> numpy.ndarray:
    """k centres of ``points`` by scikit-learn's ``MiniBatchKMeans`` (k-means++ start, seeded).

    The fit runs on one OpenMP thread: these fits are small (≤ a few 10⁴ points, about a
    second), and scikit-learn's OpenMP threads spin-wait on a busy machine — 14× slower on
    two shared cores than one thread.
    """
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        kmeans = MiniBatchKMeans(k, random_state=seed, n_init=1, batch_size=4096)
        return kmeans.fit(points.astype(numpy.float64)).cluster_centers_


def nearest(points: numpy.ndarray, centres: numpy.ndarray, chunk: int = 65536) -> numpy.ndarray:
    """Index of the nearest centre (squared Euclidean distance) for each row of ``points``:
    argmin_k ‖p‖² − 2 p·c_k + ‖c_k‖² (‖p‖² is the same for every k), in chunks of rows."""
    centres = centres.astype(points.dtype, copy=False)
    squared = (centres * centres).sum(axis=1)
    out = numpy.empty(len(points), dtype=numpy.intp)
    for start in range(0, len(points), chunk):
        block = points[start:start + chunk]
        out[start:start + chunk] = (squared - 2 * block @ centres.T).argmin(axis=1)
    return out


class ColourQuantization(Extractor):
    """The ``quantize`` step (spec ``quantize[:COLOURS]``): the fraction of each image's pixels
    nearest each of ``colours`` palette colours fitted on ``pixels`` training pixels.

    Args:
        colours: palette size K ≥ 2.
        pixels: how many training pixels (drawn at random) the palette is fitted on.
        seed: of the draw and of k-means, so the palette is reproducible.
    """

    name = "quantize"
    _state = ("palette",)

    def __init__(self, colours: int = 16, pixels: int = 20000, seed: int = 0) -> None:
        for what, value, low in (("colours", colours, 2), ("pixels", pixels, 2)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"quantize: {what} must be an integer ≥ {low}; got {value!r}")
        self.colours, self.pixels, self.seed = int(colours), int(pixels), int(seed)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "colours": self.colours, "pixels": self.pixels,
                "seed": self.seed}

    def fit(self, images: Any) -> ColourQuantization:
        x = as_images(images, "quantize")
        pixels = _pixels(x)
        rng = numpy.random.default_rng(self.seed)
        sample = pixels[rng.integers(len(pixels), size=min(self.pixels, len(pixels)))]
        distinct = len(numpy.unique(sample, axis=0))
        if distinct < self.colours:
            raise ValueError(f"quantize: {self.colours} palette colours but the training pixels "
                             f"drawn hold only {distinct} distinct colours; ask for fewer colours")
        self.palette_ = fit_kmeans(sample, self.colours, self.seed).astype(x.dtype)
        return self

    def quantize(self, images: Any) -> numpy.ndarray:
        """``images`` with every pixel replaced by its nearest palette colour."""
        self.check_fitted()
        x = as_images(images, "quantize")
        self._check_channels(x)
        codes = nearest(_pixels(x), self.palette_)
        return numpy.moveaxis(self.palette_[codes].reshape(len(x), *x.shape[2:], x.shape[1]),
                              -1, 1).astype(x.dtype)

    def transform(self, images: Any) -> numpy.ndarray:
        self.check_fitted()
        x = as_images(images, "quantize")
        self._check_channels(x)
        codes = nearest(_pixels(x), self.palette_).reshape(len(x), -1)
        rows = numpy.arange(len(x))[:, None] * self.colours
        counts = numpy.bincount((rows + codes).ravel(), minlength=len(x) * self.colours)
        return (counts.reshape(len(x), self.colours) / codes.shape[1]).astype(x.dtype)

    def _check_channels(self, x: numpy.ndarray) -> None:
        if x.shape[1] != self.palette_.shape[1]:
            raise ValueError(f"quantize: the palette was fitted on images of "
                             f"{self.palette_.shape[1]} channels; got {x.shape[1]}")


def _pixels(x: numpy.ndarray) -> numpy.ndarray:
    """(N, C, H, W) → (N·H·W, C), one row per pixel."""
    return numpy.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
