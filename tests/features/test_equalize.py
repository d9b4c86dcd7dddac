"""Batch histogram equalization against scikit-image's equalize_hist per image."""

import warnings

import numpy
import pytest

from ermlab.features import Equalize, equalize

exposure = pytest.importorskip(
    "skimage.exposure", reason="scikit-image is the equalization oracle: pip install "
                               "scikit-image")


def _reference(images, nbins):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "this might be a colour image": one histogram is meant
        return numpy.stack([
            numpy.moveaxis(exposure.equalize_hist(numpy.moveaxis(im, 0, -1), nbins), -1, 0)
            for im in images])


@pytest.mark.parametrize("nbins", [256, 7, 1])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_equalize_matches_scikit_image(grey_images, colour_images, nbins, dtype):
    # the same binning (numpy.histogram's, edges in the data's precision) and numpy.interp:
    # equal to the last bit, in float32 and float64
    for images in (grey_images, colour_images ** 3):
        x = images.astype(dtype)
        ours = equalize(x, nbins)
        assert ours.dtype == dtype and ours.shape == x.shape
        numpy.testing.assert_array_equal(ours, _reference(x, nbins))


def test_equalize_spreads_levels_and_is_an_image_step(grey_images):
    dark = grey_images[:1] * 0.2
    out = Equalize().transform(dark)
    assert out.max() == pytest.approx(1.0) and dark.max() < 0.21
    assert out.shape == dark.shape
