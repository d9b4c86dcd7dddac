"""Input preprocessing fitted on the training split only: mean subtraction, scaling, flattening.

Every transform follows scikit-learn's face: ``fit(x_train)`` estimates its
statistics from the training inputs alone, ``transform(x)`` applies them to any
split, fitted attributes end in ``_``. Statistics from the test set never leak
into training: the test set is shifted by the *training* mean, so its own mean
after ``transform`` is not exactly zero.

State for saving: ``config()`` is JSON (the transform's name and
hyperparameters), ``state_dict()`` is a dict of NumPy arrays (the fitted
statistics, for safetensors); ``from_config(config)`` followed by
``load_state_dict(state)`` rebuilds a fitted transform.

Statistics are accumulated in float64 and applied in the data's dtype. The
array module comes from the data, so CuPy inputs stay on the GPU.

Which one: for images (pixels scaled to [0, 1]) subtract the mean image,
``MeanImage``, or the per-channel mean, ``ChannelMean``, as the classic courses
do (cs231n); ``ermlab train`` does so by default. ``Standardize(per="feature")``
suits tables, whose columns have unrelated units; on images it divides rarely
lit border pixels by a tiny σ and costs accuracy (see ``ermlab.run``).
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module, to_numpy


class Transform:
    """Base class: ``fit`` on training inputs, ``transform`` any inputs of the same shape."""

    name = "transform"
    _state: tuple[str, ...] = ()

    def fit(self, x: Any) -> Transform:
        self.input_shape_ = tuple(int(d) for d in x.shape[1:])
        self._fit(x, array_module(x))
        return self

    def transform(self, x: Any) -> Any:
        if not hasattr(self, "input_shape_"):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(x_train) first")
        if tuple(x.shape[1:]) != self.input_shape_:
            raise ValueError(f"{type(self).__name__} was fitted on inputs of shape "
                             f"(N, {', '.join(map(str, self.input_shape_))}); got {x.shape}")
        return self._transform(x, array_module(x))

    def fit_transform(self, x: Any) -> Any:
        return self.fit(x).transform(x)

    def config(self) -> dict[str, Any]:
        """JSON-able name and hyperparameters."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """The fitted statistics as NumPy arrays (``input_shape`` included)."""
        if not hasattr(self, "input_shape_"):
            raise ValueError(f"{type(self).__name__} is not fitted; nothing to save")
        state = {"input_shape": numpy.asarray(self.input_shape_, dtype=numpy.int64)}
        state.update({key: to_numpy(getattr(self, key + "_")) for key in self._state})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> Transform:
        missing = [key for key in ("input_shape", *self._state) if key not in state]
        if missing:
            raise ValueError(f"{type(self).__name__} state lacks {', '.join(missing)}")
        self.input_shape_ = tuple(int(d) for d in numpy.asarray(state["input_shape"]))
        for key in self._state:
            setattr(self, key + "_", numpy.asarray(state[key], dtype=numpy.float64))
        return self

    def _fit(self, x: Any, xp: Any) -> None:
        pass

    def _transform(self, x: Any, xp: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        options = {k: v for k, v in self.config().items() if k != "name"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


class MeanImage(Transform):
    """Subtract the mean training image: x ← x − (1/N) Σₙ x_train[n] (one mean per pixel)."""

    name = "mean_image"
    _state = ("mean",)

    def _fit(self, x, xp):
        self.mean_ = x.mean(axis=0, dtype=xp.float64)

    def _transform(self, x, xp):
        return x - xp.asarray(self.mean_, dtype=x.dtype)


class ChannelMean(Transform):
    """Subtract the per-channel training mean: x[:, c] ← x[:, c] − mean over (n, h, w) of channel c.

    Inputs are NCHW (channels on axis 1); for 2-D inputs (N, D) this is the
    per-feature mean, the same as ``MeanImage``.
    """

    name = "channel_mean"
    _state = ("mean",)

    def _fit(self, x, xp):
        self.mean_ = x.mean(axis=_reduce_axes(x, "channel"), dtype=xp.float64)

    def _transform(self, x, xp):
        return x - _broadcast(xp.asarray(self.mean_, dtype=x.dtype), x, "channel")


class Standardize(Transform):
    """Zero mean, unit variance: x ← (x − μ) / σ with μ, σ from the training split.

    ``per`` chooses what shares one (μ, σ): ``"feature"`` (every pixel its own,
    as scikit-learn's ``StandardScaler``), ``"channel"`` (one per channel, as
    torchvision's ``Normalize`` with dataset statistics) or ``"global"`` (one
    for all). σ is the population standard deviation (ddof = 0); a σ below
    10·ε (a constant feature, e.g. an always-black border pixel) is replaced by
    1, so such features are centred but not divided by zero (as scikit-learn).
    """

    name = "standardize"
    _state = ("mean", "scale")

    def __init__(self, per: str = "feature"):
        if per not in ("feature", "channel", "global"):
            raise ValueError(f"per must be 'feature', 'channel' or 'global'; got {per!r}")
        self.per = per

    def config(self):
        return {"name": self.name, "per": self.per}

    def _fit(self, x, xp):
        axes = _reduce_axes(x, self.per)
        self.mean_ = x.mean(axis=axes, dtype=xp.float64)
        scale = xp.sqrt(x.var(axis=axes, dtype=xp.float64))
        tiny = 10 * numpy.finfo(x.dtype if x.dtype.kind == "f" else numpy.float64).eps
        self.scale_ = xp.where(scale < tiny, 1.0, scale)

    def _transform(self, x, xp):
        mean = _broadcast(xp.asarray(self.mean_, dtype=x.dtype), x, self.per)
        scale = _broadcast(xp.asarray(self.scale_, dtype=x.dtype), x, self.per)
        return (x - mean) / scale


class Flatten(Transform):
    """Flatten each example to a vector for an MLP: (N, d₁, …, d_k) → (N, d₁·…·d_k)."""

    name = "flatten"

    def _transform(self, x, xp):
        return x.reshape(len(x), -1)


class Pipeline(Transform):
    """Transforms applied in order; each is fitted on the output of the previous ones."""

    name = "pipeline"

    def __init__(self, steps: list[Transform]):
        self.steps = list(steps)

    def fit(self, x: Any) -> Pipeline:
        self.input_shape_ = tuple(int(d) for d in x.shape[1:])
        for step in self.steps:
            x = step.fit_transform(x)
        return self

    def _transform(self, x, xp):
        for step in self.steps:
            x = step.transform(x)
        return x

    def config(self):
        return {"name": self.name, "steps": [step.config() for step in self.steps]}

    def state_dict(self):
        state = super().state_dict()
        for i, step in enumerate(self.steps):
            state.update({f"{i}.{key}": value for key, value in step.state_dict().items()})
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for i, step in enumerate(self.steps):
            prefix = f"{i}."
            step.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                  if k.startswith(prefix)})
        return self


TRANSFORMS = {cls.name: cls for cls in (MeanImage, ChannelMean, Standardize, Flatten)}


def from_config(config: dict[str, Any]) -> Transform:
    """An unfitted transform from ``config()`` output (then ``load_state_dict``)."""
    options = dict(config)
    name = options.pop("name", None)
    if name == Pipeline.name:
        return Pipeline([from_config(step) for step in options.get("steps", [])])
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: "
                         f"{', '.join(sorted([*TRANSFORMS, Pipeline.name]))}")
    return TRANSFORMS[name](**options)


def _reduce_axes(x: Any, per: str) -> tuple[int, ...]:
    if per == "global":
        return tuple(range(x.ndim))
    if per == "channel":
        if x.ndim < 2:
            raise ValueError(f"per-channel statistics need inputs (N, C, ...); got {x.shape}")
        return (0, *range(2, x.ndim))
    return (0,)


def _broadcast(stat: Any, x: Any, per: str) -> Any:
    if per == "channel":
        return stat.reshape((1, -1) + (1,) * (x.ndim - 2))
    return stat
