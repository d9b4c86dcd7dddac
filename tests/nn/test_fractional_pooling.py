"""Fractional max pooling (Graham 2014): Graham's regions against a loop written from the
paper's definitions, gradient checks in float64, fresh regions at every pass, bad input."""

import math

import numpy as np
import pytest

from ermlab.ensemble import Ensemble
from ermlab.gradcheck import check_module
from ermlab.nn import Flatten, FractionalMaxPool2d, Linear, Sequential, frozen_masks

MODES = [(True, True), (True, False), (False, True), (False, False)]


def boundaries(pseudo_random, sample, n_in, n_out):
    """a_0..a_{N_out} by the paper's recipe, one number at a time."""
    if pseudo_random:
        ratio = n_in / n_out
        a = [math.ceil(ratio * (i + sample)) - math.ceil(ratio * sample) for i in range(n_out)]
        return a + [n_in]
    ones = 2 * n_out - n_in
    order = sorted(range(n_out), key=lambda i: sample[i])
    steps = [0] * n_out
    for rank, i in enumerate(order):
        steps[i] = 1 if rank < ones else 2
    return [0] + list(np.cumsum(steps))


def reference(x, samples, alpha, pseudo_random, overlapping):
    n, c, h, w = x.shape
    oh, ow = int(h / alpha), int(w / alpha)
    y = np.empty((n, c, oh, ow))
    for i in range(n):
        for j in range(c):
            s = samples[i, j]
            a = boundaries(pseudo_random, s[1] if pseudo_random else s[ow:], h, oh)
            b = boundaries(pseudo_random, s[0] if pseudo_random else s[:ow], w, ow)
            assert set(np.diff(a)) <= {1, 2} and set(np.diff(b)) <= {1, 2}
            extra = 1 if overlapping else 0
            for p in range(oh):
                for q in range(ow):
                    y[i, j, p, q] = x[i, j, a[p]:min(a[p + 1] + extra, h),
                                      b[q]:min(b[q + 1] + extra, w)].max()
    return y


@pytest.mark.parametrize("pseudo_random, overlapping", MODES)
def test_graham_regions_equal_the_papers_definition(pseudo_random, overlapping):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 13, 9))
    pool = FractionalMaxPool2d(1.45, pseudo_random=pseudo_random, overlapping=overlapping,
                               rng=4)
    with frozen_masks(pool):
        y = pool(x)
        samples = pool.mask
    np.testing.assert_array_equal(y, reference(x, samples, 1.45, pseudo_random, overlapping))


@pytest.mark.parametrize("pseudo_random, overlapping", MODES)
def test_disjoint_regions_route_every_input_once(pseudo_random, overlapping):
    x = np.random.default_rng(5).normal(size=(2, 2, 10, 10))
    pool = FractionalMaxPool2d(1.6, pseudo_random=pseudo_random, overlapping=overlapping)
    pool.train()
    y = pool(x)
    grad = pool.backward(np.ones_like(y))
    assert grad.sum() == y.size  # each output's gradient lands once
    if not overlapping:  # the regions tile the map: every pixel is in one region
        assert y.max(axis=(2, 3)).tolist() == x.max(axis=(2, 3)).tolist()


@pytest.mark.parametrize("pseudo_random, overlapping", MODES)
def test_gradcheck_float64(pseudo_random, overlapping):
    x = np.random.default_rng(6).normal(size=(2, 2, 9, 7))
    pool = FractionalMaxPool2d(1.3, pseudo_random=pseudo_random, overlapping=overlapping, rng=1)
    with frozen_masks(pool):
        assert check_module(pool, x).passed(1e-6)
    torch_like = FractionalMaxPool2d(1.3, kernel_size=2, rng=1)
    with frozen_masks(torch_like):
        assert check_module(torch_like, x).passed(1e-6)


def test_fresh_regions_every_pass_and_averaged_at_test_time():
    x = np.random.default_rng(7).normal(size=(4, 2, 12, 12)).astype(np.float32)
    pool = FractionalMaxPool2d(1.5, rng=0)
    first, second = pool(x), pool(x)
    assert first.shape == (4, 2, 8, 8) and not np.array_equal(first, second)
    pool.eval()
    assert not np.array_equal(pool(x), pool(x))  # random at test time too

    def net(seed):
        rng = np.random.default_rng(seed)
        return Sequential(FractionalMaxPool2d(1.5, rng=rng), Flatten(), Linear(128, 3, rng=rng))

    twin = net(1).eval()
    by_hand = []
    for _ in range(5):
        s = twin(x).astype(np.float64)
        e = np.exp(s - s.max(axis=1, keepdims=True))
        by_hand.append(e / e.sum(axis=1, keepdims=True))
    got = Ensemble([net(1)], draws=5).predict_proba(x)
    np.testing.assert_allclose(got, np.mean(by_hand, axis=0), rtol=1e-6)


@pytest.mark.parametrize("alpha", [1, 2, 0.5, 2.5, "1.5", True])
def test_alpha_outside_1_2_is_one_clear_error(alpha):
    with pytest.raises(ValueError, match=r"alpha .* must be in \(1, 2\)") as error:
        FractionalMaxPool2d(alpha)
    assert "\n" not in str(error.value)


def test_too_small_input_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="cannot pool a 1×1 map"):
        FractionalMaxPool2d(1.5)(np.zeros((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="pseudo-random starts only"):
        FractionalMaxPool2d(1.5, pseudo_random=False, kernel_size=2)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        FractionalMaxPool2d(1.5)(np.zeros((4, 4)))
