"""Robustness: adversarial examples (FGSM, PGD), robust accuracy, adversarial training.

* ``attacks``: ``FGSM``, ``PGD`` (L∞ and L2, random start), ``parse("pgd:eps=0.1,steps=20")``.
* ``gradients``: ``gradients_at_test_time`` and ``input_gradient`` — ∇ₓL of the model as
  evaluated, from its own bprop (or of an ``Ensemble``).
* ``evaluation``: ``robust_accuracy`` (``ermlab evaluate RUN --attack SPEC``).
* ``augmentation``: ``AdversarialAugment``, an augmentation on predicted labels.
* Adversarial training (Madry et al. 2018) is the Trainer's ``adversary=`` option
  (``ermlab train --adversarial SPEC``).
* Noise-injected ResNets (Wang, Yuan, Shi & Osher 2019) are ``zoo.resnet20(noise_std=σ)``,
  averaged by ``Ensemble(models, draws=D)``.
"""

from ermlab.robustness.attacks import ATTACKS, FGSM, PGD, Attack, parse
from ermlab.robustness.augmentation import AdversarialAugment
from ermlab.robustness.evaluation import predict, robust_accuracy
from ermlab.robustness.gradients import gradients_at_test_time, input_gradient
from ermlab.robustness.preprocessed import AffineInput, RawUnits

__all__ = [
    "ATTACKS",
    "AdversarialAugment",
    "AffineInput",
    "Attack",
    "FGSM",
    "PGD",
    "RawUnits",
    "input_gradient",
    "parse",
    "predict",
    "robust_accuracy",
    "gradients_at_test_time",
]
