"""The decision-boundary grid: one trained network per (λ, width), shaded by its own
predictions."""

import numpy
import pytest

from ermlab.lab import boundary


@pytest.fixture(scope="module")
def moons():
    x, y = boundary.dataset("moons", n=80, seed=1)
    panels = boundary.grid(x, y, hidden=(2, 16), l2=(0.0, 0.05), epochs=150, resolution=25,
                           progress=False)
    return x, y, panels


def test_one_panel_per_width_and_strength_in_rows_of_lambda(moons):
    x, y, panels = moons
    assert [(p.l2, p.hidden) for p in panels] == [(0.0, 2), (0.0, 16), (0.05, 2), (0.05, 16)]
    fig = boundary.figure(panels, x, y)
    titles = [axes.get_title() for axes in fig.axes]
    assert len(titles) == 4
    assert titles[1].startswith("16 units, λ = 0:") and titles[2].startswith("2 units, λ = 0.05:")


def test_shading_is_the_networks_own_decision(moons):
    x, y, panels = moons
    for panel in panels:
        points = numpy.stack([panel.mesh_x.ravel(), panel.mesh_y.ravel()], axis=1)
        points = points.astype(x.dtype)
        decided = panel.trainer.predict(points).reshape(panel.mesh_x.shape)
        numpy.testing.assert_array_equal(decided == 1, panel.probability > 0.5)
        assert panel.accuracy == pytest.approx((panel.trainer.predict(x) == y).mean())


def test_capacity_fits_and_l2_shrinks_the_weights(moons):
    x, y, panels = moons
    by = {(p.l2, p.hidden): p for p in panels}
    assert by[(0.0, 16)].accuracy >= 0.95

    def weight_norm(panel):
        return sum(float((p.data ** 2).sum()) for p in panel.trainer.model.parameters()
                   if p.regularize)

    assert weight_norm(by[(0.05, 16)]) < 0.5 * weight_norm(by[(0.0, 16)])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown 2-D data set 'spiral'"):
        boundary.dataset("spiral")
    x, y = boundary.dataset("circles", n=20)
    with pytest.raises(ValueError, match="labels must be 0 and 1"):
        boundary.grid(x, y + 1, progress=False)
    with pytest.raises(ValueError, match="shape \\(n, 2\\)"):
        boundary.grid(numpy.zeros((5, 3)), numpy.zeros(5, int), progress=False)
