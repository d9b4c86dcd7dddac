"""The polar-transform demo and the weight templates."""

import numpy
import pytest

from ermlab import nn
from ermlab.features.polar import polar_demo, to_polar
from ermlab.features.templates import linear_weight, save_templates, template_images


def test_polar_transform_makes_circles_linearly_separable(tmp_path):
    demo = polar_demo(tmp_path / "polar.png", n=200, epochs=100, seed=0)
    assert demo.accuracy_polar == 1.0
    assert demo.accuracy_cartesian < 0.75  # no line separates two concentric circles
    assert demo.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_to_polar_is_radius_and_angle():
    points = numpy.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, -1.0]])
    numpy.testing.assert_allclose(to_polar(points), [[1, 0], [2, numpy.pi / 2], [3, numpy.pi],
                                                     [numpy.sqrt(2), -numpy.pi / 4]])
    with pytest.raises(ValueError, match=r"needs 2-D points \(N, 2\)"):
        to_polar(numpy.zeros((3, 3)))


def test_templates_are_the_rows_of_w_as_images(tmp_path):
    weight = numpy.arange(2 * 3 * 4 * 5, dtype=numpy.float64).reshape(2, 60) ** 2
    images = template_images(weight, (3, 4, 5))
    assert images.shape == (2, 4, 5, 3)
    row = weight[1].reshape(3, 4, 5)
    numpy.testing.assert_allclose(images[1, 2, 3], (row[:, 2, 3] - row.min()) / numpy.ptp(row))
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3, rng=0))
    path = save_templates(linear_weight(model), (1, 4, 5), tmp_path / "t.png", ["a", "b", "c"])
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not a single Linear layer"):
        linear_weight(nn.Sequential(nn.Linear(20, 4, rng=0), nn.ReLU(), nn.Linear(4, 3, rng=0)))
    with pytest.raises(ValueError, match="no pixel templates"):
        template_images(numpy.zeros((3, 21)), (1, 4, 5))
