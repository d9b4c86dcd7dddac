"""cubic_interpolate where Python floats raise: bisection instead of an exception."""

import pytest

from ermlab.optim.line_search import cubic_interpolate


def test_coincident_points_give_the_midpoint_of_the_bounds():
    assert cubic_interpolate(1.0, 2.0, -1.0, 1.0, 2.0, -1.0, bounds=(1.0, 3.0)) == 2.0


def test_a_cubic_beyond_the_float_range_gives_the_midpoint_of_the_bounds():
    # d₁ = 1e200: d₁² overflows a Python float (OverflowError) where torch's tensors give inf
    assert cubic_interpolate(0.0, 0.0, 1e200, 1.0, 0.0, 0.0, bounds=(0.5, 1.5)) == 1.0


def test_a_zero_denominator_gives_the_midpoint_of_the_bounds():
    # g2 − g1 + 2 d₂ = 0 with d₂ = 0: g1 = g2 and d₁² = g1 g2
    assert cubic_interpolate(0.0, 0.0, 1.0, 1.0, 1.0, 1.0) == pytest.approx(0.5)
