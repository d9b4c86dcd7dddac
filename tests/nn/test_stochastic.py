"""Stochastic layers: gradients with a fixed mask, expectations (statistical), test-time rules.

Statistical tests average T independent training-mode outputs and compare
with the test-time output; the bound is 5 standard errors of the mean, the
standard error computed from the exact variance of the layer's noise. Seeds
are fixed, so the tests are deterministic; a wrong scale (e.g. 1/(1 − p)
missing, or p taken as the keep probability) moves the mean by far more.
"""

import numpy as np
import pytest

from ermlab import backend, nn
from ermlab.gradcheck import check_module
from ermlab.nn.stochastic import frozen_masks, linear_decay, residual_block, use_generator

TOL = 1e-7


def f64():
    return backend.default_dtype(np.float64)


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def mean_of_training_outputs(layer, x, trials):
    layer.train()
    return sum(layer.forward(x) for _ in range(trials)) / trials


# -- gradient checks with a fixed mask ----------------------------------------------------


@pytest.mark.parametrize("inverted", [True, False])
def test_dropout_gradcheck_with_frozen_mask(inverted):
    layer = nn.Dropout(0.3, inverted=inverted, rng=1)
    x = normal(0, (4, 6))
    with frozen_masks(layer):
        result = check_module(layer, x)
        assert 0 < layer.mask.sum() < layer.mask.size  # some units dropped, some kept
    assert result.max_rel_error < TOL, result


@pytest.mark.parametrize("per_example", [False, True])
def test_dropconnect_gradcheck_with_frozen_mask(per_example):
    with f64():
        layer = nn.DropConnect(nn.Linear(5, 3, rng=0), p=0.4, per_example=per_example, rng=2)
    layer.linear.bias.data[:] = normal(3, 3)
    with frozen_masks(layer):
        result = check_module(layer, normal(1, (4, 5)))
    assert set(result.errors) == {"input", "param:linear.weight", "param:linear.bias"}
    assert result.max_rel_error < TOL, result


def test_gaussian_noise_gradcheck_with_frozen_noise():
    layer = nn.GaussianNoise(0.5, rng=0)
    with frozen_masks(layer):
        assert check_module(layer, normal(0, (3, 4))).max_rel_error < TOL


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("inverted", [False, True])
def test_stochastic_depth_gradcheck_kept_and_dropped(keep, inverted):
    with f64():
        branch = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Tanh(), nn.Linear(4, 4, rng=1))
    block = residual_block(branch, 0.7, inverted=inverted)
    block.branch.freeze_mask(np.array(keep))
    x = normal(2, (3, 4))
    result = check_module(block, x)
    assert result.max_rel_error < TOL, result
    block.zero_grad()
    block.forward(x)
    g = normal(3, (3, 4))
    grad_x = block.backward(g)
    if not keep:  # only the identity path: the block is y = x, branch weights get nothing
        np.testing.assert_array_equal(grad_x, g)
        assert all(not p.grad.any() for p in branch.parameters())


def test_stochastic_depth_row_mode_gradcheck():
    with f64():
        branch = nn.Sequential(nn.Linear(3, 3, rng=0), nn.Tanh())
    layer = nn.StochasticDepth(branch, 0.5, mode="row")
    layer.freeze_mask(np.array([True, False, True, False]))
    assert check_module(layer, normal(0, (4, 3))).max_rel_error < TOL
    y = layer.forward(normal(0, (4, 3)))
    assert not y[1].any() and not y[3].any() and y[0].any()


def test_whole_model_gradcheck_with_frozen_masks():
    with f64():
        model = nn.Sequential(
            nn.Linear(5, 6, rng=0), nn.GaussianNoise(0.1), nn.ReLU(), nn.Dropout(0.5),
            nn.DropConnect(nn.Linear(6, 2, rng=1), 0.5),
        )
    use_generator(model, 7)
    with frozen_masks(model):
        assert check_module(model, normal(0, (4, 5))).max_rel_error < TOL


# -- expectations: E[training output] = test output ----------------------------------------


@pytest.mark.parametrize("inverted", [True, False])
def test_dropout_preserves_expected_activation(inverted):
    p, trials = 0.3, 4000
    layer = nn.Dropout(p, inverted=inverted, rng=0)
    x = normal(1, (5, 8)) + 2.0
    mean = mean_of_training_outputs(layer, x, trials)
    layer.eval()
    expected = layer.forward(x)
    np.testing.assert_allclose(expected, x if inverted else (1 - p) * x, rtol=1e-15)
    scale = 1 / (1 - p) if inverted else 1.0
    stderr = np.abs(x) * scale * np.sqrt(p * (1 - p) / trials)  # std of one draw: |x|·s·√(p(1−p))
    assert np.all(np.abs(mean - expected) < 5 * stderr)
    # p is the DROP probability: the kept fraction of units is 1 − p.
    layer.train()
    kept = np.mean([layer.forward(x) != 0 for _ in range(200)])
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / (200 * x.size))


def test_dropout_is_identity_at_test_time_and_mask_matches_output():
    layer = nn.Dropout(0.5, rng=0)
    x = normal(0, (6, 7)).astype(np.float32)
    assert layer.eval().forward(x) is x
    y = layer.train().forward(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.where(layer.mask, 2 * x, 0), rtol=1e-7)


def test_dropconnect_expected_output_is_mean_weight_output():
    p, trials = 0.5, 4000
    with f64():
        layer = nn.DropConnect(nn.Linear(6, 3, rng=0), p, rng=1)
    layer.linear.bias.data[:] = [0.5, -1.0, 2.0]
    x = normal(2, (4, 6))
    mean = mean_of_training_outputs(layer, x, trials)
    expected = layer.eval().forward(x)
    w, b = layer.linear.weight.data, layer.linear.bias.data
    np.testing.assert_allclose(expected, x @ ((1 - p) * w).T + b, rtol=1e-13)
    # Var y_no = Σ_i W_oi² x_ni² p(1 − p) (independent Bernoulli weights).
    stderr = np.sqrt((x**2) @ (w**2).T * p * (1 - p) / trials)
    assert np.all(np.abs(mean - expected) < 5 * stderr)


def test_dropconnect_masks_weights_not_inputs():
    with f64():
        layer = nn.DropConnect(nn.Linear(4, 3, rng=0), 0.5, rng=3)
    x = normal(0, (2, 4))
    y = layer.train().forward(x)
    w = layer.linear.weight.data
    np.testing.assert_allclose(y, x @ (layer.mask * w).T, rtol=1e-13)
    layer.per_example = True
    y = layer.forward(x)
    assert layer.mask.shape == (2, 3, 4)
    for n in range(2):
        np.testing.assert_allclose(y[n], (layer.mask[n] * w) @ x[n], rtol=1e-13)


def test_gaussian_noise_training_moments_and_test_identity():
    sigma = 0.3
    layer = nn.GaussianNoise(sigma, rng=0)
    x = np.full((200, 100), 1.5)
    noise = layer.forward(x) - x
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(noise.size)
    assert abs(noise.std() - sigma) < 5 * sigma / np.sqrt(2 * noise.size)
    assert layer.eval().forward(x) is x


@pytest.mark.parametrize("mode", ["batch", "row"])
@pytest.mark.parametrize("inverted", [False, True])
def test_stochastic_depth_expected_output_matches_test_output(mode, inverted):
    p, trials = 0.6, 3000
    with f64():
        branch = nn.Sequential(nn.Linear(3, 3, rng=0), nn.Tanh())
    layer = nn.StochasticDepth(branch, p, mode=mode, inverted=inverted, rng=0)
    x = normal(1, (5, 3))
    mean = mean_of_training_outputs(layer, x, trials)
    test = layer.eval().forward(x)
    full = branch.forward(x)
    np.testing.assert_allclose(test, full if inverted else p * full, rtol=1e-15)
    scale = 1 / p if inverted else 1.0
    stderr = np.abs(full) * scale * np.sqrt(p * (1 - p) / trials)
    assert np.all(np.abs(mean - test) < 5 * stderr)


def test_stochastic_depth_skips_a_dropped_branch():
    calls = []

    class Counting(nn.Identity):
        def forward(self, x):
            calls.append(self.training)
            return x * 2.0

    layer = nn.StochasticDepth(Counting(), 0.5, rng=0)
    x = np.ones((2, 3))
    outputs = [layer.forward(x) for _ in range(400)]
    dropped = sum(not y.any() for y in outputs)
    assert abs(dropped / 400 - 0.5) < 5 * np.sqrt(0.25 / 400)
    assert calls.count(True) == 400 - dropped  # the branch ran only when it survived


def test_linear_decay_gives_the_published_probabilities():
    # Huang et al. 2016: p_0 = 1 (input), p_L = 0.5, p_l = 1 − l/L (1 − p_L); a 110-layer
    # ResNet has L = 54 blocks and keeps (3L − 1)/4 = 40.25 of them on average.
    probs = linear_decay(54, 0.5)
    assert len(probs) == 54
    assert probs[0] == pytest.approx(1 - 1 / 108, abs=1e-15)
    assert probs[26] == pytest.approx(0.75, abs=1e-15)  # the middle block l = 27
    assert probs[-1] == pytest.approx(0.5, abs=1e-15)
    assert sum(probs) == pytest.approx((3 * 54 - 1) / 4, abs=1e-12)
    assert np.all(np.diff(probs) < 0)
    assert linear_decay(3, 1.0) == [1.0, 1.0, 1.0]


# -- randomness is seeded ----------------------------------------------------------------------


def test_seeded_runs_repeat_exactly():
    def run(seed):
        with f64():
            model = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Dropout(0.5), nn.GaussianNoise(1.0),
                                  nn.DropConnect(nn.Linear(4, 2, rng=1), 0.5))
        use_generator(model, seed)
        x = normal(0, (3, 4))
        return [model.forward(x) for _ in range(3)]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_default_generator_follows_backend_seed():
    layer = nn.Dropout(0.5)
    x = np.ones((10, 10))
    backend.seed(3)
    a = layer.forward(x)
    backend.seed(3)
    np.testing.assert_array_equal(layer.forward(x), a)


def test_unfreeze_draws_fresh_masks_and_frozen_shape_is_checked():
    layer = nn.Dropout(0.5, rng=0).freeze_mask()
    x = np.ones((8, 8))
    np.testing.assert_array_equal(layer.forward(x), layer.forward(x))
    with pytest.raises(ValueError, match="frozen mask of shape"):
        layer.forward(np.ones((2, 2)))
    layer.unfreeze_mask()
    assert not np.array_equal(layer.forward(x), layer.forward(x))


def test_backward_without_training_forward_is_a_clear_error():
    layer = nn.Dropout(0.5)
    layer.eval().forward(np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="without a forward pass in training mode"):
        layer.backward(np.ones((2, 2)))


# -- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), True])
def test_drop_probability_outside_unit_interval_is_rejected(p):
    with pytest.raises(ValueError, match=r"probability of DROPPING.*\[0, 1\)"):
        nn.Dropout(p)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.DropConnect(nn.Linear(2, 2), p)


@pytest.mark.parametrize("p", [0.0, -0.5, 1.01])
def test_survival_probability_outside_range_is_rejected(p):
    with pytest.raises(ValueError, match=r"KEEPING.*\(0, 1\]"):
        nn.StochasticDepth(nn.Identity(), p)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        nn.GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        nn.DropConnect(nn.ReLU(), 0.5)
    with pytest.raises(ValueError, match="mode"):
        nn.StochasticDepth(nn.Identity(), 0.5, mode="layer")
    with pytest.raises(ValueError, match="num_blocks"):
        linear_decay(0)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 2\)"):
        nn.DropConnect(nn.Linear(2, 2), 0.5).forward(np.ones((3, 4), np.float32))
