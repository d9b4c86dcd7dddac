"""Histograms of oriented gradients (HoG) of a whole batch at once (Dalal & Triggs 2005).

Per pixel, the centred differences give the gradient (g_r, g_c) — zero on the
border rows and columns — its strength ‖g‖ = √(g_r² + g_c²) and its unsigned
direction θ = atan2(g_r, g_c) mod 180°. Each cell of ``pixels_per_cell``
pixels gets a histogram of ``orientations`` bins of width 180°/B; a pixel
votes its strength into the bin of its direction, and the histogram is
divided by the number of pixels in the cell:

    h[cell, b] = (1 / (c_r c_c)) Σ_{p ∈ cell, θ_p ∈ [b·180/B, (b+1)·180/B)} ‖g_p‖

Overlapping blocks of ``cells_per_block`` cells are normalized (L2-Hys: v ←
v / √(‖v‖² + ε²), clipped at 0.2, normalized again; ε = 10⁻⁵) and
concatenated. Colour images use, per pixel, the channel with the strongest
gradient. Rows and columns beyond the last whole cell are ignored.

This is scikit-image's ``skimage.feature.hog`` (same conventions, same
output order (block row, block column, cell row, cell column, bin)), computed
for N images in a few vectorized NumPy passes instead of N calls; the tests
compare the two (relative difference ≤ 10⁻⁵: scikit-image sums a cell's votes
in float32), and ``benchmarks/features.py`` measures the speed.

References: N. Dalal and B. Triggs, "Histograms of oriented gradients for human
detection", CVPR 2005. scikit-image, ``skimage/feature/_hog.py``.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import Extractor
from ermlab.features.images import as_images

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
EPS = 1e-5


def hog(images: Any, orientations: int = 9, pixels_per_cell: tuple[int, int] = (8, 8),
        cells_per_block: tuple[int, int] = (3, 3), block_norm: str = "L2-Hys",
        transform_sqrt: bool = False) -> numpy.ndarray:
    """HoG feature vectors (N, D) of a batch of images (N, H, W) or (N, C, H, W).

    D = n_blocks_r · n_blocks_c · b_r · b_c · orientations, n_blocks = n_cells − b + 1,
    n_cells = size // pixels_per_cell (scikit-image's defaults). Float32 images
    give float32 features, float64 give float64.

    Example:
        >>> features = hog(numpy.random.rand(5, 1, 32, 32).astype("float32"))
        >>> features.shape  # 4×4 cells, 2×2 blocks of 3×3 cells, 9 bins
        (5, 324)
    """
    x = as_images(images, "hog")
    shape = check_geometry(x.shape[2:], orientations, pixels_per_cell, cells_per_block,
                           block_norm)
    if transform_sqrt:
        x = numpy.sqrt(x)
    g_row, g_col = _gradients(x)
    histogram = _cell_histograms(g_row, g_col, orientations, pixels_per_cell, shape)
    return _normalize_blocks(histogram, cells_per_block, block_norm).astype(x.dtype)


def check_geometry(size: tuple[int, ...], orientations: int, pixels_per_cell: tuple[int, int],
                   cells_per_block: tuple[int, int], block_norm: str) -> tuple[int, int]:
    """The number of cells (rows, columns) of an image of ``size`` = (H, W), after checking
    the options; one line naming the problem otherwise."""
    if int(orientations) != orientations or orientations < 1:
        raise ValueError(f"hog: orientations must be an integer ≥ 1; got {orientations!r}")
    for what, pair in (("pixels_per_cell", pixels_per_cell), ("cells_per_block",
                                                              cells_per_block)):
        if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
            raise ValueError(f"hog: {what} is two integers ≥ 1, e.g. (8, 8); got {pair!r}")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"hog: block_norm must be one of {', '.join(BLOCK_NORMS)}; got "
                         f"{block_norm!r}")
    cells = (int(size[0]) // pixels_per_cell[0], int(size[1]) // pixels_per_cell[1])
    if cells[0] < cells_per_block[0] or cells[1] < cells_per_block[1]:
        need = (cells_per_block[0] * pixels_per_cell[0], cells_per_block[1] * pixels_per_cell[1])
        raise ValueError(f"hog: images of {size[0]}×{size[1]} pixels are too small for blocks of "
                         f"{cells_per_block[0]}×{cells_per_block[1]} cells of "
                         f"{pixels_per_cell[0]}×{pixels_per_cell[1]} pixels (at least "
                         f"{need[0]}×{need[1]}); use smaller cells or blocks")
    return cells


def _gradients(x: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Centred differences (N, H, W) along rows and columns, zero on the border; for colour
    images those of the channel with the largest magnitude at each pixel."""
    g_row = numpy.zeros_like(x)
    g_col = numpy.zeros_like(x)
    g_row[:, :, 1:-1, :] = x[:, :, 2:, :] - x[:, :, :-2, :]
    g_col[:, :, :, 1:-1] = x[:, :, :, 2:] - x[:, :, :, :-2]
    if x.shape[1] == 1:
        return g_row[:, 0], g_col[:, 0]
    strongest = numpy.hypot(g_row, g_col).argmax(axis=1)[:, None]
    return (numpy.take_along_axis(g_row, strongest, axis=1)[:, 0],
            numpy.take_along_axis(g_col, strongest, axis=1)[:, 0])


def _cell_histograms(g_row: numpy.ndarray, g_col: numpy.ndarray, orientations: int,
                     pixels_per_cell: tuple[int, int], cells: tuple[int, int]) -> numpy.ndarray:
    """(N, cells_r, cells_c, orientations) float64: the mean vote per cell and bin."""
    n = len(g_row)
    (c_r, c_c), (n_r, n_c) = pixels_per_cell, cells
    g_row = g_row[:, :n_r * c_r, :n_c * c_c].astype(numpy.float64)
    g_col = g_col[:, :n_r * c_r, :n_c * c_c].astype(numpy.float64)
    magnitude = numpy.sqrt(g_col * g_col + g_row * g_row)
    orientation = numpy.rad2deg(numpy.arctan2(g_row, g_col)) % 180
    bins = orientation_bins(orientation, orientations)
    cell = (numpy.arange(n_r * c_r) // c_r)[:, None] * n_c + numpy.arange(n_c * c_c) // c_c
    index = (numpy.arange(n)[:, None, None] * (n_r * n_c) + cell) * (orientations + 1) + bins
    sums = numpy.bincount(index.ravel(), weights=magnitude.ravel(),
                          minlength=n * n_r * n_c * (orientations + 1))
    sums = sums.reshape(n, n_r, n_c, orientations + 1)[..., :orientations]
    return sums / (c_r * c_c)


def orientation_bins(orientation: numpy.ndarray, orientations: int) -> numpy.ndarray:
    """The bin b of each direction θ ∈ [0, 180]: edges[b] ≤ θ < edges[b + 1], with
    scikit-image's edges, single-precision floats b · (180/B) in float32. A direction that
    rounds to 180 falls in no bin there, so here in the extra bin B (dropped later)."""
    width = numpy.float32(180.0 / orientations)
    edges = (width * numpy.arange(orientations + 2, dtype=numpy.float32)).astype(numpy.float64)
    edges[-1] = numpy.inf
    bins = numpy.minimum((orientation * (1 / float(width))).astype(numpy.intp), orientations)
    bins -= orientation < edges[bins]  # the guess is off by at most one bin: put it right
    bins += orientation >= edges[bins + 1]
    return bins


def _normalize_blocks(histogram: numpy.ndarray, cells_per_block: tuple[int, int],
                      block_norm: str) -> numpy.ndarray:
    """(N, D): every block of b_r × b_c cells normalized, in scikit-image's order."""
    b_r, b_c = cells_per_block
    windows = numpy.lib.stride_tricks.sliding_window_view(histogram, (b_r, b_c), axis=(1, 2))
    blocks = windows.transpose(0, 1, 2, 4, 5, 3)  # (N, blocks_r, blocks_c, b_r, b_c, bins)
    axes = (3, 4, 5)
    if block_norm in ("L1", "L1-sqrt"):
        out = blocks / (numpy.abs(blocks).sum(axis=axes, keepdims=True) + EPS)
        out = numpy.sqrt(out) if block_norm == "L1-sqrt" else out
    else:
        out = blocks / numpy.sqrt((blocks ** 2).sum(axis=axes, keepdims=True) + EPS ** 2)
        if block_norm == "L2-Hys":
            out = numpy.minimum(out, 0.2)
            out = out / numpy.sqrt((out ** 2).sum(axis=axes, keepdims=True) + EPS ** 2)
    return out.reshape(len(histogram), -1)


class HoG(Extractor):
    """The ``hog`` step of a feature pipeline (spec ``hog[:CELL[:BLOCK]]``, e.g. ``hog:4:2``
    for 4×4-pixel cells in blocks of 2×2 cells); see ``hog`` for the arguments."""

    name = "hog"

    def __init__(self, orientations: int = 9, pixels_per_cell: int | tuple[int, int] = 8,
                 cells_per_block: int | tuple[int, int] = 3, block_norm: str = "L2-Hys",
                 transform_sqrt: bool = False) -> None:
        self.orientations = int(orientations)
        self.pixels_per_cell = _pair(pixels_per_cell)
        self.cells_per_block = _pair(cells_per_block)
        self.block_norm = block_norm
        self.transform_sqrt = bool(transform_sqrt)
        check_geometry((10**9, 10**9), self.orientations, self.pixels_per_cell,
                       self.cells_per_block, block_norm)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "orientations": self.orientations,
                "pixels_per_cell": list(self.pixels_per_cell),
                "cells_per_block": list(self.cells_per_block), "block_norm": self.block_norm,
                "transform_sqrt": self.transform_sqrt}

    def transform(self, images: numpy.ndarray) -> numpy.ndarray:
        return hog(images, self.orientations, self.pixels_per_cell, self.cells_per_block,
                   self.block_norm, self.transform_sqrt)


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, (int, numpy.integer)):
        return (int(value), int(value))
    pair = tuple(value)
    if len(pair) != 2:
        raise ValueError(f"hog: a cell or block size is one integer or two; got {value!r}")
    return (int(pair[0]), int(pair[1]))
