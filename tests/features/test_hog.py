"""Batch HoG against scikit-image's per-image hog (the oracle)."""

import numpy
import pytest

from ermlab.features import HoG, hog
from ermlab.features.hog import orientation_bins

skimage_feature = pytest.importorskip(
    "skimage.feature", reason="scikit-image is the HoG oracle: pip install scikit-image")

CASES = [
    {},
    {"pixels_per_cell": (4, 4), "cells_per_block": (2, 2)},
    {"pixels_per_cell": (5, 3), "cells_per_block": (2, 3), "orientations": 7, "block_norm": "L1"},
    {"pixels_per_cell": (4, 6), "cells_per_block": (1, 1), "block_norm": "L2"},
    {"pixels_per_cell": (4, 4), "cells_per_block": (2, 2), "block_norm": "L1-sqrt",
     "transform_sqrt": True},
]


def _reference(images, **options):
    channel_axis = -1 if images.shape[1] == 3 else None
    return numpy.stack([
        skimage_feature.hog(numpy.moveaxis(im, 0, -1) if channel_axis else im[0],
                            channel_axis=channel_axis, **options) for im in images])


@pytest.mark.parametrize("options", CASES)
def test_hog_matches_scikit_image_on_grey_images(grey_images, options):
    # scikit-image sums a cell's votes in float32: agreement to float32 rounding.
    ours = hog(grey_images, **options)
    reference = _reference(grey_images, **options)
    assert ours.shape == reference.shape and ours.dtype == numpy.float32
    numpy.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", CASES[:3])
def test_hog_matches_scikit_image_on_colour_images(colour_images, options):
    ours = hog(colour_images, **options)
    numpy.testing.assert_allclose(ours, _reference(colour_images, **options), rtol=1e-5,
                                  atol=1e-6)


def test_hog_float64_and_rank3_input(grey_images):
    x = grey_images[:, 0].astype(numpy.float64)  # (N, H, W): grey
    ours = hog(x, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
    assert ours.dtype == numpy.float64
    numpy.testing.assert_allclose(ours, _reference(x[:, None], pixels_per_cell=(4, 4),
                                                   cells_per_block=(2, 2)), rtol=1e-5, atol=1e-6)


def test_hog_step_and_its_errors(grey_images):
    assert HoG(pixels_per_cell=4, cells_per_block=2).transform(grey_images).shape == (6, 5 * 7 * 36)
    with pytest.raises(ValueError, match="too small"):
        hog(grey_images[:, :, :20])  # 20×35 pixels: 2×4 cells of 8, blocks of 3×3 need 24×24
    with pytest.raises(ValueError, match="block_norm"):
        HoG(block_norm="L3")


@pytest.mark.parametrize("orientations", [9, 7, 12, 13])
def test_orientation_bins_at_and_around_every_edge(orientations):
    # scikit-image's rule: bin b holds float32(b·(180/B)) ≤ θ < float32((b+1)·(180/B))
    edges = (numpy.float32(180 / orientations)
             * numpy.arange(orientations + 1, dtype=numpy.float32)).astype(numpy.float64)
    theta = numpy.concatenate([edges, numpy.nextafter(edges, -1), numpy.nextafter(edges, 181),
                               numpy.linspace(0, 180, 10001)])
    theta = theta[(theta >= 0) & (theta <= 180)]
    expected = numpy.searchsorted(edges, theta, side="right") - 1
    expected[theta >= edges[-1]] = orientations  # in no bin
    numpy.testing.assert_array_equal(orientation_bins(theta, orientations), expected)
