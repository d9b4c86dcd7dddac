"""Robust accuracy: the accuracy on adversarial examples, next to the clean accuracy.

    clean accuracy  = (1/N) Σ_i [argmax f(x_i) = y_i]
    robust accuracy = (1/N) Σ_i [argmax f(x_i + δ_i) = y_i],   δ_i = attack(f, x_i, y_i)

(Madry et al. 2018's "adversarial accuracy"). Predictions are the model's in evaluation
mode — or the averaged probabilities of an ``Ensemble`` (over members and noise draws);
a model that is random at test time draws fresh noise for the prediction.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import as_generator, to_numpy
from ermlab.ensemble import Ensemble
from ermlab.nn.module import Module


def predict(target: Module | Ensemble, x: Any) -> numpy.ndarray:
    """Class predictions of a Module (evaluation mode, its mode restored) or an Ensemble."""
    if isinstance(target, Ensemble):
        return target.predict(x, batch_size=len(x))
    training = target.training
    target.eval()
    try:
        return to_numpy(target.forward(x)).argmax(axis=1)
    finally:
        target.train(training)


def robust_accuracy(target: Module | Ensemble, x: Any, y: Any, attack: Any,
                    batch_size: int = 256, rng: Any = None, loss: Any = None) -> dict[str, float]:
    """``{"accuracy", "robust_accuracy", "examples"}`` of ``target`` on (x, y) under ``attack``
    (an ``Attack``, e.g. ``PGD(eps=0.1, steps=20)``), in batches of ``batch_size``."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of one length; got {len(x)} and {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer ≥ 1; got {batch_size!r}")
    generator = as_generator(rng)
    labels = to_numpy(y)
    clean = robust = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        truth = labels[start:start + batch_size]
        clean += int((predict(target, xb) == truth).sum())
        x_adv = attack(target, xb, yb, rng=generator, loss=loss)
        robust += int((predict(target, x_adv) == truth).sum())
    n = len(x)
    return {"accuracy": clean / n, "robust_accuracy": robust / n, "examples": n}
