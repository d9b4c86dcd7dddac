"""Trajectories are the optimizer's own iterates; the GIF has one frame per shown step."""

import numpy
import pytest

from ermlab.lab import trajectories as tr
from ermlab.lab.problems.functions import CONDITION


def quadratic_grad(p):
    return numpy.array([p[0], CONDITION * p[1]])


def test_adam_path_equals_adam_by_hand():
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    points, values = tr.path("quadratic", tr.optimizer(f"adam:lr={lr}"), steps=25)
    theta, m, v = numpy.array([-3.0, 1.0]), numpy.zeros(2), numpy.zeros(2)
    expected = [theta.copy()]
    for t in range(1, 26):
        g = quadratic_grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (numpy.sqrt(v / (1 - b2**t)) + eps)
        expected.append(theta.copy())
    numpy.testing.assert_allclose(points, numpy.array(expected), rtol=1e-12, atol=1e-14)
    numpy.testing.assert_allclose(values, 0.5 * (points[:, 0] ** 2 + CONDITION * points[:, 1] ** 2))


def test_noisy_momentum_path_equals_heavy_ball_by_hand_with_the_same_draws():
    lr, mu, sigma = 0.01, 0.9, 0.5
    points, _ = tr.path("quadratic", tr.optimizer(f"momentum:lr={lr}"), steps=15, noise=sigma,
                        seed=3)
    rng = numpy.random.default_rng(3)
    theta, buf = numpy.array([-3.0, 1.0]), None
    for k in range(1, 16):
        g = quadratic_grad(theta) + sigma * rng.standard_normal(2)
        buf = g if buf is None else mu * buf + g
        theta = theta - lr * buf
        numpy.testing.assert_allclose(points[k], theta, rtol=1e-12)


def test_newton_lands_on_the_quadratic_minimum_in_one_step_and_saddle_is_escaped():
    found = tr.paths("quadratic", ["newton", "lbfgs:max_iter=1"], steps=3)
    numpy.testing.assert_allclose(found[0].points[1], [0.0, 0.0], atol=1e-6)
    assert found[1].values[-1] < found[1].values[0]
    sgd, adam = tr.paths("saddle", ["sgd:lr=0.01", "adam:lr=0.01"], steps=100)
    assert abs(sgd.points[-1, 1]) < 0.01 < 1.0 < abs(adam.points[-1, 1])  # Adam escapes


def test_gif_has_one_frame_per_shown_step(tmp_path):
    from PIL import Image

    found = tr.paths("beale", ["sgd:lr=1e-3", "adam:lr=0.1"], steps=9)
    frames = tr.animate("beale", found, tmp_path / "beale.gif", every=2, resolution=30, dpi=30,
                        progress=False)
    assert frames == 6  # steps 0, 2, 4, 6, 8 and the last, 9
    with Image.open(tmp_path / "beale.gif") as gif:
        assert gif.n_frames == 6
    assert [p.name for p in tmp_path.iterdir()] == ["beale.gif"]  # no temporary left


def test_figure_draws_every_trajectory():
    found = tr.paths("rosenbrock", tr.CONTOUR_OPTIMIZERS[:3], steps=5)
    legend = tr.figure("rosenbrock", found, resolution=30).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(tr.CONTOUR_OPTIMIZERS[:3])


@pytest.mark.parametrize("spec, message", [
    ("adam:lr", "options are key=value"),
    ("adamm", "unknown optimizer"),
    ("sgd:lr=0.1:gamma=2", "gamma"),
])
def test_bad_optimizer_specs_fail_before_work(spec, message):
    with pytest.raises(ValueError, match=message):
        tr.optimizer(spec)


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown test function 'rosen'"):
        tr.paths("rosen", ["sgd"], 3)
    with pytest.raises(ValueError, match="name the file"):
        tr.animate("beale", tr.paths("beale", ["sgd"], 2), tmp_path / "x.png")


def test_a_step_that_raises_arithmetic_error_ends_the_path_in_nan():
    class Overflowing:
        """Gradient descent whose third step overflows, as Python floats do (``x ** 2``)."""

        def __init__(self, params):
            self.theta, self.steps = params[0], 0

        def zero_grad(self):
            pass

        def step(self, closure):
            closure()
            self.steps += 1
            if self.steps == 3:
                raise OverflowError("(34, 'Numerical result out of range')")
            self.theta.data -= 0.1 * self.theta.grad

    points, values = tr.path("quadratic", Overflowing, 5)
    assert numpy.isfinite(points[:3]).all() and numpy.isnan(points[3:]).all()
    assert numpy.isfinite(values[:3]).all() and numpy.isnan(values[3:]).all()
