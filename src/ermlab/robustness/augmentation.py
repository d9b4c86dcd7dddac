"""Adversarial augmentation: a transform ``(x, rng) -> x`` that perturbs part of each batch.

Augmentations see the inputs only, so the adversarial examples are made against the
model's own predicted labels ŷ = argmax f(x) — Kurakin, Goodfellow & Bengio ("Adversarial
Machine Learning at Scale", ICLR 2017), who recommend them to avoid *label leaking* (an
FGSM example built from the true label gives the label away) — and a fraction k/m of
each batch of m is replaced (their mixed batches; Goodfellow et al. 2015's objective
α L(x) + (1 − α) L(x + δ) in expectation, with α = 1 − fraction):

    x_i ← x_i + δ_i for a random subset of ⌈fraction · m⌉ examples,  δ_i = attack(f, x_i, ŷ_i).

Use it as the Trainer's ``augment`` (after, or composed with, other augmentations).
For adversarial training with the true labels (Madry et al. 2018) use the Trainer's
``adversary`` instead.
"""

from __future__ import annotations

import math
from typing import Any

from ermlab.backend import array_module, as_generator
from ermlab.nn.module import Module
from ermlab.robustness.evaluation import predict


class AdversarialAugment:
    """Replace a random ``fraction`` of each batch by adversarial examples against ``model``.

    Args:
        model: the Module being trained (attacked as it is at the time of the batch).
        attack: an ``Attack`` (``FGSM(eps=0.1)``, ``PGD(...)``).
        fraction: share of each batch perturbed, in (0, 1] (default 0.5).
    """

    def __init__(self, model: Module, attack: Any, fraction: float = 0.5) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"AdversarialAugment attacks an ermlab Module; got "
                            f"{type(model).__name__}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 < fraction <= 1:
            raise ValueError(f"AdversarialAugment fraction must be in (0, 1]; got {fraction!r}")
        self.model, self.attack, self.fraction = model, attack, float(fraction)

    def __call__(self, x: Any, rng: Any = None) -> Any:
        generator = as_generator(rng)
        xp = array_module(x)
        count = math.ceil(self.fraction * len(x))
        chosen = xp.asarray(generator.permutation(len(x))[:count])
        part = x[chosen]
        labels = xp.asarray(predict(self.model, part))
        out = x.copy()
        out[chosen] = self.attack(self.model, part, labels, rng=generator)
        return out

    def __repr__(self) -> str:
        return f"AdversarialAugment({self.attack!r}, fraction={self.fraction:g})"
