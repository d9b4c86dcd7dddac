"""Optimizer trajectories over the contours of a 2-D test function, as PNG and animated GIF.

The seeds' picture of optimization (Alec Radford's 2014 animations): several
optimizers start from the same point of a 2-D loss surface — Beale's function,
Rosenbrock's valley, the saddle x² − y² — and their iterates θ₀, θ₁, … are
drawn over the contour lines, so that one sees momentum overshoot, adaptive
methods rescale the coordinates, and SGD crawl off a saddle point.

Each path is the optimizer's own iterates: θ is one ``Parameter`` of shape (2,)
(float64), every step sets ``θ.grad`` to the exact gradient of
``ermlab.lab.problems.functions`` (plus σξ, ξ ~ N(0, I), with ``noise=σ``: the
stochastic variant) and calls ``optimizer.step(closure)`` — the closure also
lets L-BFGS, BFGS and Newton run (one ``step`` of theirs is ``max_iter``
iterations; pass ``max_iter=1`` to see every iteration).

    >>> from ermlab.lab import trajectories as tr
    >>> found = tr.paths("beale", ["sgd:lr=1e-3", "momentum:lr=1e-3", "adam:lr=0.1"], steps=300)
    >>> tr.figure("beale", found).savefig("beale.png")
    >>> tr.animate("saddle", tr.paths("saddle", tr.SADDLE_OPTIMIZERS, 120), "saddle.gif")

Optimizers are named as ``ermlab train --optimizer`` names them (``sgd``, ``adam``,
``rmsprop`` …, also ``lbfgs``, ``bfgs``, ``newton``), plus ``momentum`` (SGD with
μ = 0.9) and ``nesterov`` (SGD, μ = 0.9, Nesterov), each with options after
colons: ``"rmsprop:lr=0.01:alpha=0.9"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ermlab.nn.parameter import Parameter

ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "momentum": ("sgd", {"momentum": 0.9}),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
}
FULL_BATCH = {"lbfgs": "LBFGS", "bfgs": "BFGS", "newton": "Newton"}
# Learning rates that show each method's character on the seeds' two pictures.
CONTOUR_OPTIMIZERS = ("sgd:lr=1e-3", "momentum:lr=1e-3", "nesterov:lr=1e-3", "adagrad:lr=0.5",
                      "adadelta:lr=1", "rmsprop:lr=0.02", "adam:lr=0.05")
SADDLE_OPTIMIZERS = ("sgd:lr=0.01", "momentum:lr=0.01", "nesterov:lr=0.01", "adagrad:lr=0.1",
                     "adadelta:lr=1", "rmsprop:lr=0.01", "adam:lr=0.01")


@dataclass(frozen=True)
class Trajectory:
    """One optimizer's iterates: ``points`` (steps + 1, 2), from the start, and f there."""

    label: str
    points: numpy.ndarray
    values: numpy.ndarray


def optimizer(spec: str) -> Callable[[list[Parameter]], Any]:
    """A factory ``params -> optimizer`` from ``"name[:key=value[:key=value…]]"``."""
    from ermlab import config, optim

    name, *options = [part.strip() for part in str(spec).split(":")]
    key = name.lower()
    kwargs: dict[str, Any] = {}
    if key in ALIASES:
        key, preset = ALIASES[key]
        kwargs.update(preset)
    for option in options:
        if "=" not in option:
            raise ValueError(f"optimizer {spec!r}: options are key=value after colons, e.g. "
                             f"'adam:lr=0.1:betas=0.9,0.99'; got {option!r}")
        option_key, value = option.split("=", 1)
        kwargs[option_key.strip()] = _value(value)
    if key in FULL_BATCH:
        cls = getattr(optim, FULL_BATCH[key])
    else:
        cls = config.optimizer_class(key)
    if "lr" not in kwargs and _lr_required(cls):
        kwargs["lr"] = config.FALLBACK_LR

    def make(params: list[Parameter]) -> Any:
        try:
            return cls(params, **kwargs)
        except TypeError as error:
            raise ValueError(f"optimizer {spec!r}: {error}") from None

    make([Parameter(numpy.zeros(2))])  # bad options fail here, before any work
    return make


def path(function: str, make_optimizer: Callable[[list[Parameter]], Any], steps: int,
         start: Sequence[float] | None = None, noise: float = 0.0,
         seed: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The iterates θ₀ … θ_steps of one optimizer on ``function`` and f at each.

    A path that leaves the finite numbers stops there (the rest is NaN): an iterate
    that is not finite, or a step that raises ``ArithmeticError`` (overflow, division
    by zero in the optimizer's float arithmetic), ends it — as on ``saddle`` and
    ``monkey_saddle``, which are unbounded below.
    """
    test = _test_function(function)
    f = test.function
    rng = numpy.random.default_rng(seed)
    theta = Parameter(numpy.array(start if start is not None else test.start, dtype=float),
                      "theta", regularize=False)
    opt = make_optimizer([theta])

    def closure() -> float:
        value, grad = f(theta.data)
        if noise:
            grad = grad + noise * rng.standard_normal(2)
        opt.zero_grad()
        theta.grad[...] = grad
        return float(value)

    points = numpy.full((steps + 1, 2), numpy.nan)
    points[0] = theta.data
    for k in range(1, steps + 1):
        try:
            with numpy.errstate(over="ignore", invalid="ignore"):
                opt.step(closure)
        except ArithmeticError:  # Python-float overflow or division by zero: off the numbers
            break
        if not numpy.isfinite(theta.data).all():
            break
        points[k] = theta.data
    with numpy.errstate(over="ignore", invalid="ignore"):
        values = numpy.asarray(f(points.T)[0], dtype=float)
    return points, values


def paths(function: str, optimizers: Sequence[str] | Mapping[str, Callable], steps: int,
          start: Sequence[float] | None = None, noise: float = 0.0,
          seed: int = 0) -> list[Trajectory]:
    """One ``Trajectory`` per optimizer (specs, or labels mapped to factories), same start,
    same noise draws."""
    _test_function(function)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1; got {steps!r}")
    if not noise >= 0:
        raise ValueError(f"noise is a standard deviation ≥ 0; got {noise}")
    factories = (dict(optimizers) if isinstance(optimizers, Mapping)
                 else {spec: optimizer(spec) for spec in optimizers})
    if not factories:
        raise ValueError("give at least one optimizer, e.g. 'sgd:lr=0.01'")
    return [Trajectory(label, *path(function, make, int(steps), start, noise, seed))
            for label, make in factories.items()]


def figure(function: str, trajectories: Sequence[Trajectory], resolution: int = 200,
           title: str | None = None) -> Any:
    """The contour plot of ``function`` with every trajectory drawn over it."""
    return _draw(function, trajectories, resolution, title)[0]


def _draw(function: str, trajectories: Sequence[Trajectory], resolution: int,
          title: str | None = None) -> tuple[Any, list[tuple[Any, Any]]]:
    """The figure and, per trajectory, its (line, head marker) artists."""
    from ermlab.lab._mpl import new_figure

    if not trajectories:
        raise ValueError("no trajectories to draw")
    fig = new_figure(6.5, 5.5)
    axes = fig.add_subplot()
    _background(axes, function, resolution)
    artists = []
    for color, trajectory in zip(_colors(len(trajectories)), trajectories):
        (line,) = axes.plot(*trajectory.points.T, color=color, linewidth=1.6,
                            label=trajectory.label)
        (head,) = axes.plot(*_last_finite(trajectory.points)[:, None], marker="o", markersize=5,
                            color=color)
        artists.append((line, head))
    axes.legend(loc="upper left", fontsize=8, framealpha=0.85)
    axes.set_title(title or _title(function, trajectories))
    return fig, artists


def animate(function: str, trajectories: Sequence[Trajectory], output: str | Path,
            fps: int = 20, every: int = 1, resolution: int = 150, tail: int | None = None,
            dpi: int = 80, progress: bool = True) -> int:
    """Write an animated GIF of the trajectories moving together; returns the frame count.

    Frame k shows every optimizer after step ``k · every`` (frame 0: the start), a
    line behind it (the last ``tail`` steps, or all), so there are
    ⌈steps / every⌉ + 1 frames. (Pillow stores two identical frames in a row as one
    longer frame, so a GIF in which nothing moves for a while has fewer frames.)
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    if int(every) != every or every < 1 or int(fps) != fps or fps < 1:
        raise ValueError(f"every and fps must be integers ≥ 1; got every={every!r}, fps={fps!r}")
    output = Path(output)
    if output.suffix.lower() != ".gif":
        raise ValueError(f"the animation is a GIF: name the file *.gif; got {output}")
    steps = len(trajectories[0].points) - 1
    shown = list(range(0, steps + 1, every))
    if shown[-1] != steps:
        shown.append(steps)
    fig, pairs = _draw(function, trajectories, resolution)
    axes = fig.axes[0]
    fig.canvas.draw()  # lay the figure out once; frames then only redraw
    fig.set_layout_engine("none")

    def draw(frame: int) -> list[Any]:
        k = shown[frame]
        first = 0 if tail is None else max(0, k - tail)
        for (line, head), trajectory in zip(pairs, trajectories):
            line.set_data(*trajectory.points[first:k + 1].T)
            head.set_data(*_last_finite(trajectory.points[:k + 1])[:, None])
        axes.set_title(f"{_title(function, trajectories)} — step {k}")
        return [artist for pair in pairs for artist in pair]

    bar = _progress_bar(len(shown), f"GIF {output.name}", progress)
    animation = FuncAnimation(fig, draw, frames=len(shown), blit=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp.gif")
    try:
        animation.save(temporary, writer=PillowWriter(fps=int(fps)), dpi=dpi,
                       progress_callback=lambda i, n: bar.update(1) if bar else None)
        temporary.replace(output)
    finally:
        temporary.unlink(missing_ok=True)
        if bar:
            bar.close()
    return len(shown)


# -- helpers ---------------------------------------------------------------------------------


def _test_function(function: Any) -> Any:
    from ermlab.lab.problems.functions import FUNCTIONS

    if function not in FUNCTIONS:
        raise ValueError(f"unknown test function {function!r}; choose one of "
                         f"{', '.join(FUNCTIONS)}")
    return FUNCTIONS[function]


def _background(axes: Any, function: str, resolution: int) -> None:
    """f over the function's window as a shaded image with contour lines (log-spaced
    levels where f ≥ f* is known). The image is one raster, cheap to redraw per frame."""
    from matplotlib.colors import LogNorm, Normalize

    test = _test_function(function)
    (x_lo, x_hi), (y_lo, y_hi) = test.bounds
    x, y = numpy.meshgrid(numpy.linspace(x_lo, x_hi, resolution),
                          numpy.linspace(y_lo, y_hi, resolution))
    z = numpy.asarray(test.function(numpy.stack([x, y]))[0], dtype=float)
    if test.minimum_value is not None:
        z = z - test.minimum_value
        low = max(z.min(), 1e-9 * z.max(), 1e-12)
        z = numpy.maximum(z, low)
        norm = LogNorm(low, z.max())
        levels = numpy.logspace(math.log10(low), math.log10(z.max()), 16)
    else:
        norm = Normalize(z.min(), z.max())
        levels = numpy.linspace(z.min(), z.max(), 15)
    axes.imshow(z, extent=(x_lo, x_hi, y_lo, y_hi), origin="lower", norm=norm, cmap="viridis",
                alpha=0.6, aspect="auto", interpolation="bilinear")
    axes.contour(x, y, z, levels=levels, norm=norm, colors="k", linewidths=0.4, alpha=0.5)
    for minimum in test.minima:
        axes.plot(*minimum, marker="*", markersize=14, color="white", markeredgecolor="k",
                  linestyle="none")
    axes.set_xlim(x_lo, x_hi)
    axes.set_ylim(y_lo, y_hi)
    axes.set_xlabel("x")
    axes.set_ylabel("y")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _last_finite(points: numpy.ndarray) -> numpy.ndarray:
    finite = numpy.isfinite(points).all(axis=1)
    return points[finite][-1] if finite.any() else points[0]


def _title(function: str, trajectories: Sequence[Trajectory]) -> str:
    return f"{function}: {len(trajectories[0].points) - 1} steps"


def _progress_bar(total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="frame", leave=False)


def _value(text: str) -> Any:
    """An option's value: a number, true/false, a tuple of numbers ``0.9,0.99``, or text."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "," in text:
        return tuple(_value(part) for part in text.split(","))
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _lr_required(cls: type) -> bool:
    import inspect

    parameter = inspect.signature(cls.__init__).parameters.get("lr")
    return parameter is not None and parameter.default is inspect.Parameter.empty
