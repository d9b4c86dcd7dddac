"""The one door into ``ermlab.features``: a batch of images, checked once, as (N, C, H, W).

Every extractor takes a batch of images, grey or colour, of any size:

* (N, H, W) — grey images, read as (N, 1, H, W);
* (N, C, H, W) — ermlab's layout (NCHW), with C = 1 (grey) or C = 3 (RGB).

Pixels are floats in [0, 1] (``ermlab.data`` scales images so) or ``uint8``
in [0, 255], which is divided by 255. Anything else — a table of rows (N, D),
a rank that is not 3 or 4, another number of channels, NaN or ±inf, floats
outside [0, 1] — is refused with one line saying what was wrong and what to do,
before any work starts.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import resolve_dtype, to_numpy

# Floats a little outside [0, 1] (rounding after a resize, say) are accepted.
RANGE_SLACK = 1e-3


def as_images(x: Any, what: str = "images", dtype: Any = None) -> numpy.ndarray:
    """``x`` as a float (N, C, H, W) NumPy array (C ∈ {1, 3}), after checking it.

    ``dtype``: of the result (default: ermlab's default float dtype; float64
    inputs stay float64 when ``dtype`` is None).
    """
    x = to_numpy(x) if hasattr(x, "shape") else numpy.asarray(x)
    if x.ndim == 2:
        raise ValueError(f"{what}: features are computed from images (N, H, W) or (N, C, H, W); "
                         f"got rows of shape {x.shape[1:]} (table data, not images): leave out "
                         "the image features, or reshape the rows to images first")
    if x.ndim not in (3, 4):
        raise ValueError(f"{what}: expected a batch of images (N, H, W) or (N, C, H, W); got an "
                         f"array of shape {x.shape} (rank {x.ndim})")
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: images have 1 (grey) or 3 (RGB) channels on axis 1 (NCHW); "
                         f"got {x.shape[1]} channels in shape {x.shape}"
                         + (" — channels last? use x.transpose(0, 3, 1, 2)"
                            if x.shape[-1] in (1, 3) else ""))
    if len(x) == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{what}: the batch holds no pixels (shape {x.shape})")
    if x.dtype == numpy.uint8:
        x = x.astype(resolve_dtype(dtype)) / 255
    elif x.dtype.kind != "f":
        raise ValueError(f"{what}: pixels must be floats in [0, 1] or uint8 in [0, 255]; got "
                         f"{x.dtype}")
    _check_pixels(x, what)
    target = x.dtype if dtype is None and x.dtype == numpy.float64 else resolve_dtype(dtype)
    return numpy.ascontiguousarray(x, dtype=target)


def _check_pixels(x: numpy.ndarray, what: str) -> None:
    finite = numpy.isfinite(x)
    if not finite.all():
        bad = numpy.flatnonzero((~finite).reshape(len(x), -1).any(axis=1))
        raise ValueError(f"{what}: {int((~finite).sum())} pixels are NaN or infinite, in "
                         f"{len(bad)} of {len(x)} images (the first: image {int(bad[0])}); "
                         "remove or repair those images first")
    low, high = float(x.min()), float(x.max())
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise ValueError(f"{what}: pixels must lie in [0, 1]; got values in [{low:g}, {high:g}] "
                         "— divide by 255, and compute features before any mean subtraction")


def to_channels_last(images: numpy.ndarray) -> numpy.ndarray:
    """(N, C, H, W) → (N, H, W, C), the layout of scikit-image's colour functions."""
    return numpy.moveaxis(images, 1, -1)
