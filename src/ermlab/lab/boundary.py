"""The decision-boundary demo: a 2-D data set, a grid of hidden units × L2 strength.

The seeds' ConvNetJS figure (Karpathy's "2D classification" demo, and cs231n's
notes on setting the number of layers and their sizes): a small network trained
on two interleaved classes in the plane, its decision regions shaded behind the
data. Across a row the hidden layer widens — more units, a more wiggly boundary
that can fit every point; down a column the L2 strength λ of λ‖W‖² grows — the
boundary smooths out and the capacity unused by the data is taken away. The
lesson of the seeds: do not use a smaller network for fear of over-fitting; use
a larger one and regularize it.

Every panel is the one Trainer (``ermlab.config.build``) fitting an MLP
2 → h → 2 with the softmax loss and λ on the weights (Adam, lr 0.03, 300
epochs); the shading is the trained network's P(class 1 | x) on a mesh over the
data. ReLU by default: ConvNetJS used tanh, which fits the spirals far more
slowly here (32 units, 300 epochs: 67 % training accuracy with tanh, 96 % with
ReLU; moons and circles: 99–100 % either way).

    >>> from ermlab.lab import boundary
    >>> x, y = boundary.dataset("spirals")
    >>> panels = boundary.grid(x, y, hidden=(2, 8, 32), l2=(0, 1e-4, 1e-3))
    >>> boundary.figure(panels, x, y).savefig("boundaries.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy

DATASETS = ("spirals", "moons", "circles")


@dataclass
class Panel:
    """One trained network: its width, its λ, training accuracy, and P(class 1) on a mesh."""

    hidden: int
    l2: float
    trainer: Any
    accuracy: float
    mesh_x: numpy.ndarray
    mesh_y: numpy.ndarray
    probability: numpy.ndarray


def dataset(name: str, n: int = 200, noise: float | None = None,
            seed: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``spirals``, ``moons`` or ``circles`` from ``ermlab.data.toy``: n points, labels 0/1."""
    from ermlab.data import toy

    makers = {"spirals": (toy.two_spirals, 0.05), "moons": (toy.moons, 0.15),
              "circles": (toy.circles, 0.1)}
    if name not in makers:
        raise ValueError(f"unknown 2-D data set {name!r}; choose one of {', '.join(DATASETS)}")
    if int(n) != n or n < 4:
        raise ValueError(f"n must be an integer ≥ 4; got {n!r}")
    make, default_noise = makers[name]
    return make(n=int(n), noise=default_noise if noise is None else noise, rng=seed)


def train(x: numpy.ndarray, y: numpy.ndarray, hidden: int, l2: float, epochs: int = 300,
          lr: float = 0.03, batch_size: int = 32, activation: str = "relu",
          seed: int = 0) -> Any:
    """The Trainer of one panel, fitted: MLP 2 → ``hidden`` → 2, Adam, λ = ``l2``."""
    from ermlab import config

    settings = {"hidden": [int(hidden)], "activation": activation, "optimizer": "adam",
                "lr": lr, "l2": float(l2), "batch_size": batch_size, "epochs": epochs,
                "patience": None}
    trainer = config.build(settings, n_inputs=x.shape[1], n_outputs=int(y.max()) + 1, rng=seed)
    trainer.fit(x, y, epochs=epochs, batch_size=batch_size, rng=seed)
    return trainer


def grid(x: numpy.ndarray, y: numpy.ndarray, hidden: Sequence[int] = (2, 8, 32),
         l2: Sequence[float] = (0.0, 1e-4, 1e-3), epochs: int = 300, lr: float = 0.03,
         resolution: int = 100, activation: str = "relu", seed: int = 0,
         progress: bool = True) -> list[Panel]:
    """One ``Panel`` per (λ, hidden) pair, row by row (λ) and column by column (hidden)."""
    x, y = numpy.asarray(x), numpy.asarray(y)
    if x.ndim != 2 or x.shape[1] != 2 or len(x) != len(y):
        raise ValueError(f"the boundary demo needs 2-D points x of shape (n, 2) and n labels; "
                         f"got x {x.shape} and y {y.shape}")
    if set(numpy.unique(y)) - {0, 1}:
        raise ValueError("the boundary demo shades P(class 1): labels must be 0 and 1")
    if not hidden or not l2 or min(hidden) < 1 or min(l2) < 0:
        raise ValueError(f"hidden needs widths ≥ 1 and l2 strengths ≥ 0; got {hidden}, {l2}")
    mesh_x, mesh_y = _mesh(x, resolution)
    points = numpy.stack([mesh_x.ravel(), mesh_y.ravel()], axis=1).astype(x.dtype)
    settings = [(h, lam) for lam in l2 for h in hidden]
    panels = []
    for h, lam in _bar(settings, progress):
        trainer = train(x, y, h, lam, epochs=epochs, lr=lr, activation=activation, seed=seed)
        probability = _softmax(trainer.predict_scores(points))[:, 1].reshape(mesh_x.shape)
        accuracy = float((trainer.predict(x) == y).mean())
        panels.append(Panel(int(h), float(lam), trainer, accuracy, mesh_x, mesh_y, probability))
    return panels


def figure(panels: Sequence[Panel], x: numpy.ndarray, y: numpy.ndarray,
           title: str | None = None) -> Any:
    """The grid of panels: rows λ, columns hidden units; data on the shaded regions."""
    from ermlab.lab._mpl import new_figure

    widths = sorted({p.hidden for p in panels})
    strengths = sorted({p.l2 for p in panels})
    fig = new_figure(2.6 * len(widths), 2.4 * len(strengths) + 0.4)
    cells = fig.subplots(len(strengths), len(widths), squeeze=False, sharex=True, sharey=True)
    for panel in panels:
        axes = cells[strengths.index(panel.l2)][widths.index(panel.hidden)]
        axes.contourf(panel.mesh_x, panel.mesh_y, panel.probability,
                      levels=numpy.linspace(0, 1, 11), cmap="RdBu", alpha=0.6)
        axes.contour(panel.mesh_x, panel.mesh_y, panel.probability, levels=[0.5], colors="k",
                     linewidths=1.0)
        axes.scatter(*x[y == 0].T, s=6, color="#b2182b", edgecolors="white", linewidths=0.3)
        axes.scatter(*x[y == 1].T, s=6, color="#2166ac", edgecolors="white", linewidths=0.3)
        axes.set_title(f"{panel.hidden} units, λ = {panel.l2:g}: {panel.accuracy:.0%}",
                       fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    fig.suptitle(title or "decision boundaries: hidden units (→) × L2 strength λ (↓)",
                 fontsize=10)
    return fig


def _mesh(x: numpy.ndarray, resolution: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    low, high = x.min(axis=0), x.max(axis=0)
    margin = 0.15 * (high - low)
    return numpy.meshgrid(numpy.linspace(low[0] - margin[0], high[0] + margin[0], resolution),
                          numpy.linspace(low[1] - margin[1], high[1] + margin[1], resolution))


def _softmax(scores: numpy.ndarray) -> numpy.ndarray:
    shifted = numpy.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _bar(items: Sequence[Any], enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="decision boundaries", unit="network", leave=False)
