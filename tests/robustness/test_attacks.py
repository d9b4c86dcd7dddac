"""Attack arguments, the spec parser, the random start, and what an attack leaves behind."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.robustness import FGSM, PGD, input_gradient, parse


def small_model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(6, 8, rng=rng), nn.ReLU(), nn.Dropout(0.5, rng=rng),
                         nn.Linear(8, 3, rng=rng))


def inputs(n=5):
    return np.random.default_rng(1).uniform(0, 1, (n, 6)).astype(np.float32), np.arange(n) % 3


@pytest.mark.parametrize("make, message", [
    (lambda: FGSM(eps=0), "eps must be a number > 0"),
    (lambda: PGD(eps=-0.1), "eps must be a number > 0"),
    (lambda: FGSM(eps=1.5), "eps 1.5 is outside the data range"),
    (lambda: PGD(eps=300, bounds=(0, 255)), "eps 300 is outside the data range"),
    (lambda: PGD(eps=0.1, steps=0), "steps must be an integer > 0"),
    (lambda: PGD(eps=0.1, norm="l1"), "norm must be one of"),
    (lambda: FGSM(eps=0.1, bounds=(1, 0)), "lower < upper"),
    (lambda: parse("cw:eps=0.1"), "unknown attack 'cw'"),
    (lambda: parse("pgd:steps=10"), "needs eps=E"),
    (lambda: parse("pgd:eps=0.1,iters=3"), "'iters=3' is not KEY=VALUE"),
    (lambda: parse("fgsm:eps=0.1,steps=3"), "'steps=3' is not KEY=VALUE"),
    (lambda: parse("pgd:eps=a"), "eps='a' is not a valid value"),
])
def test_bad_arguments_are_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_inputs_outside_the_bounds_and_a_too_large_l2_ball_are_refused_before_work():
    model = small_model()
    x, y = inputs()
    with pytest.raises(ValueError, match="outside the attack bounds") as error:
        FGSM(eps=0.1)(model, x * 255, y)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="eps 3 is outside the data range: the L2 diameter"):
        PGD(eps=3, norm="l2")(model, x, y)  # the unit cube in 6 dimensions: √6 ≈ 2.45


def test_parse_builds_the_attack():
    attack = parse("pgd:eps=0.2,steps=5,step_size=0.05,norm=l2,random_start=0,samples=2",
                   bounds=(-1, 1))
    assert isinstance(attack, PGD) and attack.eps == 0.2 and attack.steps == 5
    assert attack.step_size == 0.05 and attack.norm == "l2" and not attack.random_start
    assert attack.samples == 2 and attack.lower == -1 and attack.upper == 1
    assert PGD(eps=0.1, steps=20).step_size == pytest.approx(2.5 * 0.1 / 20)
    assert isinstance(parse("FGSM:eps=0.3"), FGSM)


def test_l2_random_start_is_uniform_in_the_ball():
    d = 6
    start = PGD(eps=0.5, norm="l2").start((4000, d), rng=0)
    radius = np.linalg.norm(start, axis=1)
    assert radius.max() <= 0.5
    # uniform in the ball: P(r ≤ ε·2^(−1/d)) = 1/2
    assert abs((radius <= 0.5 * 0.5 ** (1 / d)).mean() - 0.5) < 0.03
    cube = PGD(eps=0.5).start((4000, d), rng=0)
    assert np.abs(cube).max() <= 0.5 and abs(cube.std() - 0.5 / np.sqrt(3)) < 0.01


def test_attack_keeps_modes_parameter_gradients_and_is_seeded():
    model = small_model()
    x, y = inputs()
    for p in model.parameters():
        p.grad[...] = 7.0
    model.eval()
    first = PGD(eps=0.1, steps=3)(model, x, y, rng=3)
    assert not model.training and all((p.grad == 7.0).all() for p in model.parameters())
    np.testing.assert_array_equal(PGD(eps=0.1, steps=3)(model, x, y, rng=3), first)
    assert not np.array_equal(PGD(eps=0.1, steps=3)(model, x, y, rng=4), first)
    assert first.dtype == np.float32


def test_expectation_over_draws_equals_one_draw_for_a_deterministic_model():
    model = small_model()
    x, y = inputs()
    one = FGSM(eps=0.1)(model, x, y)
    np.testing.assert_allclose(FGSM(eps=0.1, samples=3)(model, x, y), one, atol=1e-7)
    gradient = input_gradient(model, x, y)
    assert gradient.shape == x.shape and np.abs(gradient).sum() > 0
