"""Noise-injected ResNets (Wang, Yuan, Shi & Osher 2019) and their ensembles.

The noise is there in evaluation mode, repeats with the seed, has the stated standard
deviation; the ensemble averages members and draws; the input gradient of an ensemble
(−log of the averaged probability) equals central finite differences in float64.
"""

import numpy as np
import pytest

from ermlab import nn
from ermlab.ensemble import Ensemble, softmax
from ermlab.gradcheck import check_module, numerical_gradient
from ermlab.nn import zoo
from ermlab.nn.blocks import BasicBlock
from ermlab.robustness import input_gradient


def images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)


def test_noise_is_drawn_in_eval_mode_and_repeats_with_the_seed():
    x = images()
    noisy = zoo.resnet20(4, (1, 8, 8), noise_std=0.1, rng=0).eval()
    first, second = noisy(x), noisy(x)
    assert np.abs(first - second).max() > 1e-3  # fresh noise at every test-time forward
    again = zoo.resnet20(4, (1, 8, 8), noise_std=0.1, rng=0).eval()
    np.testing.assert_array_equal(again(x), first)
    np.testing.assert_array_equal(again(x), second)
    plain = zoo.resnet20(4, (1, 8, 8), rng=0).eval()
    np.testing.assert_array_equal(plain(x), plain(x))
    boxes = [m for m in noisy.modules() if isinstance(m, nn.GaussianNoise)]
    assert len(boxes) == 9 and all(b.at_test and b.sigma == 0.1 for b in boxes)
    assert not any(isinstance(m, nn.GaussianNoise) for m in plain.modules())


def test_injected_noise_has_the_standard_deviation_sigma():
    layer = nn.GaussianNoise(0.3, at_test=True, rng=1).eval()
    x = np.zeros((200, 500), np.float32)
    noise = layer(x)
    assert abs(noise.std() - 0.3) < 0.003 and abs(noise.mean()) < 0.003
    assert nn.GaussianNoise(0.3, rng=1).eval()(x).std() == 0  # the default: training only


def test_noisy_block_bprop_with_the_noise_fixed_matches_finite_differences():
    block = BasicBlock(2, 2, noise_std=0.5, rng=0, dtype="float64")
    x = np.random.default_rng(1).normal(size=(2, 2, 4, 4))
    with nn.frozen_masks(block):
        result = check_module(block, x)
    assert result.passed(1e-6), result


def test_ensemble_averages_members_and_noise_draws():
    x = images(5)
    members = [zoo.resnet20(4, (1, 8, 8), noise_std=0.2, rng=seed) for seed in (0, 1)]
    twins = [zoo.resnet20(4, (1, 8, 8), noise_std=0.2, rng=seed).eval() for seed in (0, 1)]
    got = Ensemble(members, weights=[1, 3], draws=4).predict_proba(x)
    by_hand = [np.mean([softmax(twin(x).astype(np.float64)) for _ in range(4)], axis=0)
               for twin in twins]
    np.testing.assert_allclose(got, 0.25 * by_hand[0] + 0.75 * by_hand[1], rtol=1e-6)
    assert all(m.training for m in members)  # modes restored


def test_ensemble_input_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    members = [nn.Sequential(nn.Linear(6, 5, rng=rng, dtype="float64"), nn.Tanh(),
                             nn.Linear(5, 3, rng=rng, dtype="float64")) for _ in range(2)]
    ensemble = Ensemble(members, weights=[0.3, 0.7])
    x, y = rng.normal(size=(4, 6)), np.array([0, 2, 1, 2])

    def objective():
        return float(-np.log(ensemble.predict_proba(x)[np.arange(4), y]).sum())

    numeric = numerical_gradient(objective, x, 1e-6)
    np.testing.assert_allclose(input_gradient(ensemble, x, y), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.1"])
def test_negative_noise_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="noise_std is the standard deviation σ ≥ 0") as error:
        zoo.resnet20(10, (1, 8, 8), noise_std=bad)
    assert "\n" not in str(error.value)


def test_ensemble_draws_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="draws must be an integer ≥ 1"):
        Ensemble([nn.Linear(2, 2)], draws=0)
    with pytest.raises(ValueError, match="to_probabilities=softmax"):
        input_gradient(Ensemble([nn.Linear(2, 2)], to_probabilities=None),
                       np.zeros((1, 2)), np.zeros(1, int))
