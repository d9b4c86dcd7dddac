"""Test images for ermlab.features: small, with the cases that break binning code."""

import numpy
import pytest


@pytest.fixture(scope="session")
def grey_images() -> numpy.ndarray:
    """(6, 1, 24, 35) float32: random, 8-bit quantized (exact angles such as 0°, 45°, 90°,
    180°), flat, and step edges — the cases where a bin edge decides."""
    rng = numpy.random.default_rng(0)
    x = rng.random((6, 1, 24, 35)).astype(numpy.float32)
    x[1] = numpy.round(x[1] * 255) / 255
    x[2] = numpy.round(x[2] * 4) / 4
    x[3] = 0.5
    x[4, :, :, :13] = 0.0
    x[4, :, :, 13:] = 1.0
    x[4, :, 11:, 20:] = 0.25
    x[5] = numpy.add.outer(numpy.arange(24), numpy.arange(35)) % 5 / 4
    return x


@pytest.fixture(scope="session")
def colour_images() -> numpy.ndarray:
    """(5, 3, 24, 32) float32: crops of scikit-image's astronaut photograph (8-bit levels),
    or random 8-bit images when scikit-image is absent."""
    try:
        from skimage import data

        photo = data.astronaut()[::8, ::8].astype(numpy.float32) / 255  # (64, 64, 3)
        crops = [photo[r:r + 24, c:c + 32] for r, c in ((0, 0), (10, 5), (30, 30), (40, 32),
                                                         (20, 16))]
        x = numpy.moveaxis(numpy.stack(crops), -1, 1)
    except ImportError:
        rng = numpy.random.default_rng(1)
        x = numpy.round(rng.random((5, 3, 24, 32)) * 255).astype(numpy.float32) / 255
    x = numpy.ascontiguousarray(x)
    x[4, :, :8] = x[4, :1, :8]  # grey pixels: no hue, no saturation
    return x
