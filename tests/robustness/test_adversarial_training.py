"""Adversarial training (Madry et al. 2018) as the Trainer's ``adversary``, on the toy problem
of Tsipras et al. (2019): one robust feature x₀ = ±y (right with probability 0.9) and d weak
features N(η y, 1). Standard training leans on the weak ones, which an L∞ attack of
ε = 2η flips all at once; adversarial training learns to use x₀ and keeps its accuracy."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.optim import Adam
from ermlab.robustness import FGSM, PGD, AdversarialAugment, robust_accuracy
from ermlab.training import Trainer

D, ETA = 40, 0.3
BOUNDS = (-6.0, 6.0)


def data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = 2.0 * y - 1
    robust = np.where(rng.random(n) < 0.9, sign, -sign)
    weak = rng.normal(ETA * sign[:, None], 1.0, (n, D))
    return np.clip(np.column_stack([robust, weak]), *BOUNDS).astype(np.float32), y


def fit(adversary, seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(D + 1, 16, rng=rng), nn.ReLU(), nn.Linear(16, 2, rng=rng))
    trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=0.01), rng=seed,
                      adversary=adversary)
    trainer.fit(*data(2000, 1), epochs=8, batch_size=100)
    return model


def test_adversarial_training_raises_robust_accuracy():
    x, y = data(500, 2)
    attack = PGD(eps=2 * ETA, steps=10, bounds=BOUNDS)
    standard = robust_accuracy(fit(None), x, y, attack, rng=0)
    robust = robust_accuracy(fit(PGD(eps=2 * ETA, steps=5, bounds=BOUNDS)), x, y, attack, rng=0)
    assert standard["accuracy"] > 0.9 and standard["robust_accuracy"] < 0.2, standard
    assert robust["accuracy"] > 0.8 and robust["robust_accuracy"] > 0.8, robust


def test_adversarial_augmentation_perturbs_a_fraction_against_predicted_labels():
    x, _ = data(40, 3)
    model = fit(None)
    attack = FGSM(eps=0.2, bounds=BOUNDS)
    out = AdversarialAugment(model, attack, fraction=0.25)(x, np.random.default_rng(0))
    changed = np.flatnonzero((out != x).any(axis=1))
    assert len(changed) == 10
    predicted = model.eval()(x[changed]).argmax(axis=1)
    np.testing.assert_array_equal(out[changed], attack(model, x[changed], predicted))
    assert np.abs(out - x).max() <= 0.2 + 1e-6


def test_adversarial_training_with_a_strategy_is_refused():
    from ermlab.distributed import SyncDataParallel

    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="without a distributed strategy"):
        Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters()),
                strategy=SyncDataParallel(2), adversary=FGSM(eps=0.1))
