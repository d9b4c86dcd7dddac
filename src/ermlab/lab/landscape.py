"""Loss landscapes of a trained network: the interpolation slice and random-direction slices.

Two ways of looking at a loss surface in millions of dimensions through one or
two dimensions:

* The 1-D interpolation slice of Goodfellow, Vinyals & Saxe (2015), "Qualitatively
  characterizing neural network optimization problems": the loss along the
  straight line from the initial weights θ₀ to the trained weights θ₁,

      θ(α) = (1 − α) θ₀ + α θ₁,      α ∈ [−0.5, 1.5] by default;

  a smooth, monotone descent along it says that the path SGD took was "easy".

* Random-direction slices with filter normalization, Li, Xu, Taylor, Studer &
  Goldstein (2018), "Visualizing the loss landscape of neural nets": around the
  trained θ,

      f(α) = L(θ + α d),          f(α, β) = L(θ + α d + β e),

  with d, e Gaussian directions rescaled filter by filter, d_{i,j} ← d_{i,j} /
  ‖d_{i,j}‖ · ‖θ_{i,j}‖ (filter j of layer i: a slice along the first axis, an
  output unit of a ``Linear`` or an output channel of a ``Conv2d``), so that the
  slice does not depend on the scale of each filter (networks with batch norm or
  ReLU are invariant to it). One-dimensional parameters (biases, batch-norm
  scale and shift) get a zero direction, as in the paper's plots (``ignore_1d``).

The loss is the data loss (no penalty λΩ) of the model in evaluation mode on a
fixed subset of examples, so that every point of a slice sees the same data.
``from_run`` does all of it for an ``ermlab train`` run directory: θ₁ the run's
tested (best) weights, θ₀ its initial weights (rebuilt from its seed), the
examples from its training split.

    >>> from ermlab.lab import landscape
    >>> scene = landscape.from_run("runs/digits-mlp-...")
    >>> alphas, losses = scene.interpolation()
    >>> landscape.line_figure(alphas, {"train": losses}).savefig("slice.png")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

Weights = list[numpy.ndarray]


def random_direction(weights: Sequence[numpy.ndarray], rng: Any = None,
                     normalization: str = "filter", ignore_1d: bool = True) -> Weights:
    """A Gaussian direction shaped like ``weights``, normalized (Li et al. 2018, §4).

    ``normalization``: ``"filter"`` (each slice along the first axis scaled to the
    norm of the same slice of θ), ``"layer"`` (each array to the norm of θ's), or
    ``"none"``. ``ignore_1d``: zero direction for 1-D arrays (biases, batch norm).
    """
    from ermlab.backend import as_generator

    if normalization not in ("filter", "layer", "none"):
        raise ValueError(f"normalization is 'filter', 'layer' or 'none'; got {normalization!r}")
    rng = as_generator(rng)
    direction = []
    for w in weights:
        w = numpy.asarray(w)
        d = rng.standard_normal(w.shape).astype(w.dtype)
        if w.ndim <= 1 and ignore_1d:
            d[...] = 0
        elif normalization == "filter" and w.ndim > 1:
            axes = tuple(range(1, w.ndim))
            scale = (numpy.linalg.norm(w.reshape(len(w), -1), axis=1)
                     / (numpy.linalg.norm(d.reshape(len(d), -1), axis=1) + 1e-10))
            d *= scale.reshape((-1,) + (1,) * len(axes)).astype(w.dtype)
        elif normalization != "none":
            d *= numpy.linalg.norm(w) / (numpy.linalg.norm(d) + 1e-10)
        direction.append(d)
    return direction


@dataclass
class Scene:
    """A model, a loss evaluator on fixed data, and two points of weight space.

    Attributes:
        parameters: the model's Parameters (their ``data`` is moved and restored).
        evaluate: ``() -> float``, the loss of the model as its parameters stand, in
            evaluation mode (each module's training/evaluation mode is restored after).
        theta0: initial weights (copies), for the interpolation slice.
        theta1: trained weights (copies), the centre of the random slices.
    """

    parameters: list[Any]
    evaluate: Callable[[], float]
    theta0: Weights
    theta1: Weights

    def loss_at(self, weights: Sequence[numpy.ndarray]) -> float:
        """L at ``weights``; the parameters are put back afterwards."""
        saved = [p.data.copy() for p in self.parameters]
        try:
            for p, w in zip(self.parameters, weights):
                p.data[...] = w
            return float(self.evaluate())
        finally:
            for p, w in zip(self.parameters, saved):
                p.data[...] = w

    def interpolation(self, alphas: Sequence[float] | None = None,
                      progress: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(α, L((1 − α)θ₀ + αθ₁)) — Goodfellow et al. 2015."""
        alphas = numpy.linspace(-0.5, 1.5, 41) if alphas is None else numpy.asarray(alphas)
        losses = [self.loss_at([(1 - a) * w0 + a * w1 for w0, w1 in zip(self.theta0, self.theta1)])
                  for a in _bar(alphas, "interpolation", progress)]
        return alphas, numpy.array(losses)

    def slice_1d(self, direction: Sequence[numpy.ndarray] | None = None,
                 alphas: Sequence[float] | None = None, seed: int = 0,
                 progress: bool = False) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(α, L(θ₁ + α d)) along a filter-normalized random d (or the one given)."""
        d = random_direction(self.theta1, seed) if direction is None else list(direction)
        alphas = numpy.linspace(-1, 1, 41) if alphas is None else numpy.asarray(alphas)
        losses = [self.loss_at([w + a * dw for w, dw in zip(self.theta1, d)])
                  for a in _bar(alphas, "1-D slice", progress)]
        return alphas, numpy.array(losses)

    def slice_2d(self, directions: tuple[Sequence, Sequence] | None = None,
                 alphas: Sequence[float] | None = None, betas: Sequence[float] | None = None,
                 seed: int = 0, progress: bool = False) -> tuple[numpy.ndarray, ...]:
        """(α, β, grid) with grid[i, j] = L(θ₁ + α_j d + β_i e) (rows: β, as contour plots
        take them)."""
        if directions is None:
            rng = numpy.random.default_rng(seed)
            directions = (random_direction(self.theta1, rng), random_direction(self.theta1, rng))
        d, e = directions
        alphas = numpy.linspace(-1, 1, 21) if alphas is None else numpy.asarray(alphas)
        betas = alphas if betas is None else numpy.asarray(betas)
        grid = numpy.empty((len(betas), len(alphas)))
        points = [(i, j) for i in range(len(betas)) for j in range(len(alphas))]
        for i, j in _bar(points, "2-D slice", progress):
            grid[i, j] = self.loss_at([w + alphas[j] * dw + betas[i] * ew
                                       for w, dw, ew in zip(self.theta1, d, e)])
        return alphas, betas, grid


def scene(model: Any, loss: Any, x: Any, y: Any, theta0: Sequence[numpy.ndarray],
          theta1: Sequence[numpy.ndarray] | None = None, batch_size: int = 1024) -> Scene:
    """A ``Scene`` for ``model`` (its current weights are θ₁ unless given) on data (x, y)."""
    parameters = model.parameters()
    theta1 = [p.data.copy() for p in parameters] if theta1 is None else list(theta1)
    for name, weights in (("theta0", theta0), ("theta1", theta1)):
        shapes = [tuple(numpy.shape(w)) for w in weights]
        if shapes != [tuple(p.shape) for p in parameters]:
            raise ValueError(f"{name} has arrays of shapes {shapes}; the model's parameters are "
                             f"{[tuple(p.shape) for p in parameters]}")

    def evaluate() -> float:
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            total = 0.0
            for start in range(0, len(x), batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                total += float(loss.forward(model.forward(xb), yb)) * len(xb)
        finally:  # each module's training/evaluation mode, as before
            for module, training in modes:
                object.__setattr__(module, "training", training)  # as Module.train sets it
        return total / len(x)

    return Scene(parameters, evaluate, [numpy.array(w, copy=True) for w in theta0],
                 [numpy.array(w, copy=True) for w in theta1])


def from_run(directory: str | Path, examples: int = 1000, split: str = "train",
             seed: int = 0) -> Scene:
    """The ``Scene`` of an ``ermlab train`` run: θ₀ its initial weights (rebuilt from the
    run's seed), θ₁ its tested weights (best, else last), the loss on ``examples``
    examples of its ``train``, ``validation`` or ``test`` split (drawn with ``seed``)."""
    from ermlab import run

    if split not in ("train", "validation", "test"):
        raise ValueError(f"split is train, validation or test; got {split!r}")
    if int(examples) != examples or examples < 1:
        raise ValueError(f"examples must be an integer ≥ 1; got {examples!r}")
    directory = Path(directory)
    if not (directory / run.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a run directory (no {run.CONFIG_FILE}); "
                                "give a folder `ermlab train` wrote")
    restored = run.restore(directory)
    config = restored.config
    data = run.prepare_data(config, run.load_preprocessor_state(directory),
                            trained_on=restored.inputs)
    x, y = {"train": (data.x_train, data.y_train), "validation": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test)}[split]
    chosen = numpy.arange(len(x))  # (read into memory: the splits may be lazy ``Rows``)
    if len(x) > examples:
        chosen = numpy.sort(numpy.random.default_rng(seed).choice(len(x), examples, replace=False))
    x, y = numpy.asarray(x[chosen]), numpy.asarray(y[chosen])
    model = restored.trainer.model
    input_shape = run.model_input_shape(config, restored.preprocessor, restored.inputs.shape)
    initial = run.build_model(config, input_shape, len(data.class_names),
                              numpy.random.default_rng(config["seed"]))
    theta0 = [p.data.copy() for p in initial.parameters()]
    return scene(model, restored.trainer.loss, x, y, theta0)


def from_problem(problem: str | Any, optimizer: str = "adam:lr=0.001", epochs: int | None = None,
                 budget: str = "small", examples: int = 1000, seed: int = 0,
                 progress: bool = False) -> Scene:
    """Train a lab learning problem (``ermlab.lab.problems``; default budget ``small``) with
    one optimizer (a ``trajectories.optimizer`` spec) through the Trainer, and return its
    ``Scene``: θ₀ the initial weights, θ₁ the trained ones, the loss on ``examples``
    training examples. ``relu4`` is the seeds' picture: a 4-layer ReLU network, 10 inputs,
    32 units per hidden layer, 10 classes, softmax loss."""
    from ermlab import losses, regularizers
    from ermlab.lab import problems, trajectories
    from ermlab.training import Trainer

    if isinstance(problem, str):
        problem = problems.get(problem, budget)
    if not hasattr(problem, "split"):
        raise ValueError(f"{problem.problem_name} is a 2-D test function; a landscape needs a "
                         "learning problem (relu4, logreg, mlp, fmnist_2c2d, noisy_quadratic)")
    make = trajectories.optimizer(optimizer)
    data = problem.split()
    rng = numpy.random.default_rng(seed)
    n_outputs = int(data.y_train.max()) + 1 if problem.classification else \
        data.y_train.reshape(len(data.y_train), -1).shape[1]
    model = problem.model(problem, data.x_train.shape[1:], n_outputs, rng)
    theta0 = [p.data.copy() for p in model.parameters()]
    loss = losses.get(problem.loss)
    regularizer = regularizers.L2(problem.weight_decay) if problem.weight_decay else None
    callbacks = []
    if progress:
        from ermlab.training import ProgressBar

        callbacks.append(ProgressBar())
    trainer = Trainer(model, loss, make(model.parameters()), regularizer, callbacks, rng=rng)
    trainer.fit(data.x_train, data.y_train, epochs=epochs or problem.epochs,
                batch_size=problem.batch_size)
    x, y = data.x_train[:examples], data.y_train[:examples]
    return scene(model, loss, x, y, theta0)


# -- figures ---------------------------------------------------------------------------------


def line_figure(alphas: numpy.ndarray, curves: dict[str, numpy.ndarray],
                xlabel: str = "α  (θ = (1 − α)θ₀ + αθ₁)", title: str | None = None,
                marks: Sequence[float] = (0.0, 1.0)) -> Any:
    """Loss against α for each named curve; dashed lines at ``marks`` (θ₀ and θ₁)."""
    from ermlab.lab._mpl import new_figure

    fig = new_figure(6, 4)
    axes = fig.add_subplot()
    for name, losses in curves.items():
        axes.plot(alphas, losses, marker="o", markersize=2.5, label=name)
    for mark in marks:
        axes.axvline(mark, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    if all(numpy.nanmin(v) > 0 for v in curves.values()):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title or "loss along a line in weight space")
    return fig


def contour_figure(alphas: numpy.ndarray, betas: numpy.ndarray, grid: numpy.ndarray,
                   title: str | None = None) -> Any:
    """Contours of L(θ + αd + βe) (Li et al. 2018, Fig. 1), θ at the centre cross."""
    from ermlab.lab._mpl import new_figure

    fig = new_figure(5.5, 4.8)
    axes = fig.add_subplot()
    z = numpy.log10(numpy.maximum(grid, 1e-12))
    filled = axes.contourf(alphas, betas, z, levels=25, cmap="viridis")
    axes.contour(alphas, betas, z, levels=12, colors="k", linewidths=0.4, alpha=0.6)
    axes.plot([0], [0], marker="+", markersize=12, color="white")
    fig.colorbar(filled, ax=axes, label="log₁₀ loss")
    axes.set_xlabel("α  (direction d)")
    axes.set_ylabel("β  (direction e)")
    axes.set_title(title or "loss around θ, filter-normalized directions")
    return fig


def _bar(items: Sequence[Any], description: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="point", leave=False)
