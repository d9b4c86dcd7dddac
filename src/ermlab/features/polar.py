"""The geometric view of a feature transform: circles, and polar coordinates.

Two concentric circles are not linearly separable in (x₁, x₂): every line
leaves points of both classes on each side, so a linear classifier f(x) =
Wx + b stays near chance. In polar coordinates

    r = √(x₁² + x₂²),   θ = atan2(x₂, x₁)

the classes differ in r alone, and a line r = r₀ separates them: the same
linear classifier, on the transformed points, classifies all of them
correctly — and its boundary, drawn back in (x₁, x₂), is a circle.
``polar_demo`` trains both with the ermlab Trainer (a ``Linear`` layer,
softmax cross-entropy) and draws the two boundaries.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy


def to_polar(points: Any) -> numpy.ndarray:
    """(N, 2) Cartesian points → (N, 2) polar coordinates (r, θ), θ ∈ (−π, π]."""
    x = numpy.asarray(points)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"to_polar: needs 2-D points (N, 2); got an array of shape {x.shape}")
    return numpy.stack([numpy.hypot(x[:, 0], x[:, 1]), numpy.arctan2(x[:, 1], x[:, 0])],
                       axis=1).astype(x.dtype if x.dtype.kind == "f" else numpy.float64)


@dataclass
class PolarDemo:
    """Training accuracies of the linear classifier before and after the transform."""

    accuracy_cartesian: float
    accuracy_polar: float
    figure: Path | None


def polar_demo(path: str | Path | None = None, n: int = 400, noise: float = 0.05,
               epochs: int = 100, seed: int = 0) -> PolarDemo:
    """Train a linear softmax classifier on ``circles`` in (x₁, x₂) and in (r, θ);
    return both training accuracies and, with ``path``, draw their decision boundaries."""
    from ermlab.data.toy import circles

    x, y = circles(n=n, noise=noise, rng=seed, dtype=numpy.float64)
    cartesian = _fit_linear(x, y, epochs, seed)
    polar = _fit_linear(to_polar(x), y, epochs, seed)
    figure = None
    if path is not None:
        figure = _draw(Path(path), x, y, cartesian, polar)
    return PolarDemo(cartesian.accuracy(x, y), polar.accuracy(to_polar(x), y), figure)


@dataclass
class _Fitted:
    trainer: Any
    mean: numpy.ndarray
    scale: numpy.ndarray

    def predict(self, x: numpy.ndarray) -> numpy.ndarray:
        return self.trainer.predict((x - self.mean) / self.scale)

    def accuracy(self, x: numpy.ndarray, y: numpy.ndarray) -> float:
        return float((self.predict(x) == y).mean())


def _fit_linear(x: numpy.ndarray, y: numpy.ndarray, epochs: int, seed: int) -> _Fitted:
    """A Linear layer + softmax cross-entropy, SGD with momentum, on standardized inputs."""
    from ermlab import losses, nn, optim
    from ermlab.training import Trainer

    mean, scale = x.mean(axis=0), x.std(axis=0)
    model = nn.Linear(2, 2, rng=seed, dtype=numpy.float64)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                      optim.SGD(model.parameters(), lr=0.5, momentum=0.9), rng=seed)
    trainer.fit((x - mean) / scale, y, epochs=epochs, batch_size=len(x))
    return _Fitted(trainer, mean, scale)


def _draw(path: Path, x: numpy.ndarray, y: numpy.ndarray, cartesian: _Fitted,
          polar: _Fitted) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ermlab.training.checkpoint import atomic_write_bytes

    r = to_polar(x)
    grid = numpy.linspace(-1.5, 1.5, 201)
    g1, g2 = numpy.meshgrid(grid, grid)
    plane = numpy.stack([g1.ravel(), g2.ravel()], axis=1)
    rg, tg = numpy.meshgrid(numpy.linspace(0, r[:, 0].max() * 1.1, 201),
                            numpy.linspace(-numpy.pi, numpy.pi, 201))
    polar_plane = numpy.stack([rg.ravel(), tg.ravel()], axis=1)
    panels = [
        ("linear on (x₁, x₂)", g1, g2, cartesian.predict(plane), x, cartesian.accuracy(x, y)),
        ("linear on (r, θ), in (r, θ)", rg, tg, polar.predict(polar_plane), r,
         polar.accuracy(r, y)),
        ("linear on (r, θ), back in (x₁, x₂)", g1, g2, polar.predict(to_polar(plane)), x,
         polar.accuracy(r, y)),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for axis, (title, a, b, labels, points, accuracy) in zip(axes, panels):
        axis.contourf(a, b, labels.reshape(a.shape), levels=[-0.5, 0.5, 1.5],
                      colors=["#cfe2f3", "#f4cccc"], alpha=0.8)
        axis.contour(a, b, labels.reshape(a.shape), levels=[0.5], colors="k", linewidths=1)
        axis.scatter(points[:, 0], points[:, 1], c=numpy.where(y == 0, "#1f77b4", "#d62728"),
                     s=6)
        axis.set_title(f"{title}\ntraining accuracy {100 * accuracy:.1f} %", fontsize=9)
    axes[1].set_xlabel("r")
    axes[1].set_ylabel("θ")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue(), durable=False)
    return path
