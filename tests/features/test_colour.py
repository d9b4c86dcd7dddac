"""HSV histograms against scikit-image's rgb2hsv + numpy.histogram; colour quantization."""

import numpy
import pytest

from ermlab.features import ColourQuantization, HSVHistogram, hsv_histogram, rgb_to_hsv

skimage_color = pytest.importorskip(
    "skimage.color", reason="the HSV histogram needs scikit-image: pip install scikit-image")


@pytest.mark.parametrize("channels", ["h", "hsv", "sv"])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_hsv_histogram_is_numpy_histogram_of_rgb2hsv(colour_images, channels, dtype):
    x = colour_images.astype(dtype)
    ours = hsv_histogram(x, bins=10, channels=channels)
    pixels = x.shape[2] * x.shape[3]
    for image, row in zip(x, ours):
        hsv = skimage_color.rgb2hsv(numpy.moveaxis(image, 0, -1))
        reference = numpy.concatenate([
            numpy.histogram(hsv[..., "hsv".index(c)], bins=10, range=(0, 1))[0] / pixels
            for c in "hsv" if c in channels])
        numpy.testing.assert_allclose(row, reference, rtol=0, atol=1e-7)
    numpy.testing.assert_allclose(ours.sum(axis=1), len(channels), rtol=1e-6)


def test_grey_images_give_the_grey_level_histogram(grey_images):
    ours = HSVHistogram(bins=4).transform(grey_images)
    for image, row in zip(grey_images, ours):
        counts = numpy.histogram(image, bins=4, range=(0, 1))[0]
        numpy.testing.assert_allclose(row, counts / image.size, atol=1e-7)


def test_rgb_to_hsv_is_scikit_images_per_image(colour_images):
    ours = rgb_to_hsv(colour_images)
    for image, hsv in zip(colour_images, ours):
        reference = skimage_color.rgb2hsv(numpy.moveaxis(image, 0, -1))
        numpy.testing.assert_array_equal(numpy.moveaxis(hsv, 0, -1), reference)


def test_quantization_palette_histograms_and_reproducibility(colour_images):
    step = ColourQuantization(colours=6, pixels=2000, seed=3).fit(colour_images)
    features = step.transform(colour_images)
    assert features.shape == (5, 6)
    numpy.testing.assert_allclose(features.sum(axis=1), 1.0, rtol=1e-6)
    quantized = step.quantize(colour_images)
    pixels = numpy.moveaxis(quantized, 1, -1).reshape(-1, 3)
    # every pixel became a palette colour, its nearest (brute force over the palette)
    assert len(numpy.unique(pixels, axis=0)) <= 6
    original = numpy.moveaxis(colour_images, 1, -1).reshape(-1, 3)
    distances = ((original[:, None, :] - step.palette_[None]) ** 2).sum(axis=2)
    numpy.testing.assert_allclose(pixels, step.palette_[distances.argmin(axis=1)], atol=1e-6)
    again = ColourQuantization(colours=6, pixels=2000, seed=3).fit(colour_images)
    numpy.testing.assert_array_equal(again.palette_, step.palette_)


def test_quantization_refuses_more_colours_than_the_pixels_hold(grey_images):
    with pytest.raises(ValueError, match="distinct colours"):
        ColourQuantization(colours=3).fit(grey_images[3:4])  # one flat image: 1 colour
