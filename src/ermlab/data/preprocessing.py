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

Statistics are accumulated in float64 and applied in the data's dtype. They
are computed chunk by chunk (``Moments``: a block of rows at a time, merged by
Chan et al.'s update), so fitting needs no float64 copy of the data and works
on memory maps and lazy ``ermlab.data.rows.Rows``; a ``Pipeline`` fits each
step on its predecessors' output computed block by block, never whole.
Transforms marked ``per_batch`` (all of these) are cheap and act on each
example alone, so ``ermlab train`` applies them to each mini-batch as it is
read instead of holding a transformed copy of the data. The array module
comes from the data, so CuPy inputs stay on the GPU.

Which one: for images (pixels scaled to [0, 1]) subtract the mean image,
``MeanImage``, or the per-channel mean, ``ChannelMean``, as the classic courses
do (cs231n); ``ermlab train`` does so by default. ``Standardize(per="feature")``
suits tables, whose columns have unrelated units; on images it divides rarely
lit border pixels by a tiny σ and costs accuracy (see ``ermlab.run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

from ermlab.backend import array_module, resolve_dtype, to_numpy
from ermlab.data.rows import Rows, block_ranges
from ermlab.threads import check_threads, default_threads, run_ranges, sample_lanes


@dataclass
class Moments:
    """Per-feature statistics of examples (N, *shape), accumulated in float64 block by block.

    ``count`` n, ``minimum`` and ``maximum``, ``mean`` μ = (1/n) Σₙ xₙ and
    ``m2`` = Σₙ (xₙ − μ)² (the variance is m2 / n), each of the examples'
    shape. Blocks A and B merge by Chan, Golub & LeVeque's update

        δ = μ_B − μ_A,   μ = μ_A + δ·n_B/n,   m2 = m2_A + m2_B + δ²·n_A·n_B/n,

    with each block's own m2 computed two-pass in float64, so the result is
    the two-pass float64 formula's to rounding, without a float64 copy of the
    data. Chan, Golub & LeVeque, "Algorithms for computing the sample
    variance: analysis and recommendations", The American Statistician, 1983.
    """

    count: int
    dtype: Any
    minimum: Any = None
    maximum: Any = None
    mean: Any = None
    m2: Any = None

    @classmethod
    def of(cls, x: Any, mean: bool = True, variance: bool = False,
           threads: int | None = None) -> Moments:
        """The statistics of ``x`` (array, memory map or ``Rows``), read one block at a time:
        minimum and maximum always, the mean when ``mean``, m2 when ``variance``.

        The blocks are read and summarized in lanes (``ermlab.threads``; ``threads``
        defaults to ``default_threads()``), since NumPy lets go of the GIL in its gathers,
        casts and reductions and the first read of a memory map is page faults, then
        merged one by one in their order: the result is the same, bit for bit, at any
        number of threads. Lanes take ``ROUND_BLOCKS`` blocks each per round, so a few
        summaries wait for their merge at a time, and wait for each other asleep (a
        lane takes milliseconds).
        """
        moments = cls(0, numpy.dtype(x.dtype))
        ranges = block_ranges(x)
        lanes = check_threads(threads, "Moments.of") or default_threads()
        lanes = lanes if _on_host(x) else 1
        per_round = lanes * ROUND_BLOCKS
        for first in range(0, len(ranges), per_round):
            part = ranges[first:first + per_round]
            summaries = run_ranges(sample_lanes(len(part), lanes, len(part)), _summaries, x,
                                   part, mean, variance, awake=False)
            with numpy.errstate(invalid="ignore", over="ignore"):  # NaN/inf: see ``finite``
                for summary in (each for lane in summaries for each in lane):
                    moments._add(*summary)
        return moments

    def _add(self, k: int, low: Any, high: Any, mean: Any, m2: Any) -> None:
        """Merge one block's summary (``_summary``) into these statistics."""
        if self.count:
            xp = array_module(low)
            low, high = xp.minimum(self.minimum, low), xp.maximum(self.maximum, high)
        self.minimum, self.maximum = low, high
        if mean is not None:
            self._merge(k, mean, m2)
        self.count += k

    def _merge(self, k: int, mean: Any, m2: Any) -> None:
        if not self.count:
            self.mean, self.m2 = mean, m2
            return
        n = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / n)
        if m2 is not None:
            self.m2 = self.m2 + m2 + delta * delta * (self.count * k / n)

    @property
    def variance(self) -> Any:
        """The population variance m2 / n (ddof = 0)."""
        return self.m2 / self.count

    def pooled(self, axes: tuple[int, ...]) -> Moments:
        """The statistics of the features on ``axes`` (axes of one example) taken together:
        μ_g = mean of the μ_j, m2_g = Σ_j m2_j + n Σ_j (μ_j − μ_g)² (equal counts n)."""
        if not axes:
            return self
        xp = array_module(self.mean)
        mean = self.mean.mean(axis=axes)
        m2 = None
        if self.m2 is not None:
            spread = self.mean - xp.expand_dims(mean, axes)
            m2 = self.m2.sum(axis=axes) + self.count * (spread * spread).sum(axis=axes)
        size = int(numpy.prod([self.mean.shape[a] for a in axes]))
        return Moments(self.count * size, self.dtype, self.minimum.min(axis=axes),
                       self.maximum.max(axis=axes), mean, m2)

    def reshaped(self, shape: tuple[int, ...]) -> Moments:
        """The same statistics for examples reshaped to ``shape`` (e.g. flattened)."""
        def reshape(a: Any) -> Any:
            return None if a is None else a.reshape(shape)

        return Moments(self.count, self.dtype, reshape(self.minimum), reshape(self.maximum),
                       reshape(self.mean), reshape(self.m2))

    @property
    def finite(self) -> bool:
        """Whether every value seen is finite (NaN and ±inf reach the minimum or maximum)."""
        if not self.count:
            return True
        xp = array_module(self.minimum)
        return bool(xp.isfinite(self.minimum).all() and xp.isfinite(self.maximum).all())


ROUND_BLOCKS = 8  # blocks per lane per round of ``Moments.of``


def _summary(chunk: Any, mean: bool, variance: bool, work: Any) -> tuple[Any, ...]:
    """One block's count, minimum, maximum and, when asked for, mean and own two-pass m2
    (on a float64 copy of the block in ``work``, a float64 array of its module of at
    least the block's size)."""
    xp, k = array_module(chunk), len(chunk)
    low, high = chunk.min(axis=0), chunk.max(axis=0)
    if variance:
        centred = work[:chunk.size].reshape(chunk.shape)
        centred[...] = chunk
        chunk_mean = centred.sum(axis=0) / k
        centred -= chunk_mean
        return k, low, high, chunk_mean, xp.einsum("i...,i...->...", centred, centred)
    if mean:
        return k, low, high, chunk.sum(axis=0, dtype=xp.float64) / k, None
    return k, low, high, None, None


def _summaries(x: Any, ranges: list[tuple[int, int]], mean: bool, variance: bool,
               lo: int, hi: int) -> list[tuple[Any, ...]]:
    """``_summary`` of the blocks ``ranges[lo:hi]`` of ``x``, read here (one lane's part),
    the float64 copies in one work array (the first block is the largest)."""
    summaries, work = [], None
    with numpy.errstate(invalid="ignore", over="ignore"):  # NaN/inf data: see ``finite``
        for start, stop in ranges[lo:hi]:
            chunk = x[start:stop]
            if variance and (work is None or work.size < chunk.size):
                work = array_module(chunk).empty(chunk.size, numpy.float64)
            summaries.append(_summary(chunk, mean, variance, work))
            del chunk  # let go of this block before the next is read
    return summaries


def _on_host(x: Any) -> bool:
    """Whether ``x`` (or the array under its ``Rows``) is a NumPy array, not a CuPy one."""
    while isinstance(x, Rows):
        x = x.source
    return array_module(x) is numpy


class Transform:
    """Base class: ``fit`` on training inputs, ``transform`` any inputs of the same shape.

    A subclass fitted from statistics sets ``needs`` (``"mean"`` or
    ``"variance"``) and writes ``_fit_moments(moments)``; one that needs the
    data itself writes ``_fit(x, xp)``. ``per_batch`` marks a transform that is
    cheap and treats each example alone, so it may be applied to each
    mini-batch as it is read (``ermlab.data.rows.Rows``).
    """

    name = "transform"
    _state: tuple[str, ...] = ()
    needs: str | None = None
    per_batch = False

    def fit(self, x: Any, moments: Moments | None = None) -> Transform:
        """Fit on training inputs ``x`` (array, memory map or ``Rows``); ``moments``, when
        given, are ``x``'s statistics (``Moments.of(x)``) and save a pass over the data."""
        self.input_shape_ = tuple(int(d) for d in x.shape[1:])
        if self.needs is None:
            self._fit(x, array_module(x))
            return self
        if moments is None or moments.mean is None or (self.needs == "variance" and
                                                       moments.m2 is None):
            moments = Moments.of(x, variance=self.needs == "variance")
        if not moments.count:
            raise ValueError(f"{type(self).__name__} cannot be fitted on 0 examples")
        self._fit_moments(moments)
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

    def _fit_moments(self, moments: Moments) -> None:
        raise NotImplementedError

    def _transform(self, x: Any, xp: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        options = {k: v for k, v in self.config().items() if k != "name"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


def _floating(x: Any, xp: Any) -> Any:
    """``x`` itself when floating point, else (integer or boolean pixels) converted to the
    default float dtype: the statistics cast to an integer dtype were rounded, and the
    subtraction wrapped around (uint8 pixels minus their mean)."""
    return x if x.dtype.kind in "fc" else x.astype(resolve_dtype())


class MeanImage(Transform):
    """Subtract the mean training image: x ← x − (1/N) Σₙ x_train[n] (one mean per pixel)."""

    name = "mean_image"
    _state = ("mean",)
    needs = "mean"
    per_batch = True

    def _fit_moments(self, moments):
        self.mean_ = moments.mean

    def _transform(self, x, xp):
        x = _floating(x, xp)
        return x - xp.asarray(self.mean_, dtype=x.dtype)


class ChannelMean(Transform):
    """Subtract the per-channel training mean: x[:, c] ← x[:, c] − mean over (n, h, w) of channel c.

    Inputs are NCHW (channels on axis 1); for 2-D inputs (N, D) this is the
    per-feature mean, the same as ``MeanImage``.
    """

    name = "channel_mean"
    _state = ("mean",)
    needs = "mean"
    per_batch = True

    def _fit_moments(self, moments):
        self.mean_ = moments.pooled(_feature_axes(self.input_shape_, "channel")).mean

    def _transform(self, x, xp):
        x = _floating(x, xp)
        return x - _broadcast(xp.asarray(self.mean_, dtype=x.dtype), x, "channel")


class Standardize(Transform):
    """Zero mean, unit variance: x ← (x − μ) / σ with μ, σ from the training split.

    ``per`` chooses what shares one (μ, σ): ``"feature"`` (every pixel its own,
    as scikit-learn's ``StandardScaler``), ``"channel"`` (one per channel, as
    torchvision's ``Normalize`` with dataset statistics) or ``"global"`` (one
    for all). σ is the population standard deviation (ddof = 0). A feature
    whose variance is within the rounding error of its float64 two-pass
    computation over n values,

        σ² ≤ n·ε·σ² + (n·|μ|·ε)²      (ε of float64; Chan, Golub & LeVeque 1983),

    is constant (e.g. an always-black border pixel): its σ is replaced by 1, so
    it is centred but not divided by zero. This is scikit-learn's
    ``StandardScaler`` rule (``_is_constant_feature``): relative to the
    feature's mean, so a small σ is scaled unless it is the mean's rounding.
    """

    name = "standardize"
    _state = ("mean", "scale")
    needs = "variance"
    per_batch = True

    def __init__(self, per: str = "feature"):
        if per not in ("feature", "channel", "global"):
            raise ValueError(f"per must be 'feature', 'channel' or 'global'; got {per!r}")
        self.per = per

    def config(self):
        return {"name": self.name, "per": self.per}

    def _fit_moments(self, moments):
        pooled = moments.pooled(_feature_axes(self.input_shape_, self.per))
        xp = array_module(pooled.mean)
        self.mean_ = pooled.mean
        variance, n, eps = pooled.variance, pooled.count, numpy.finfo(numpy.float64).eps
        constant = variance <= n * eps * variance + (n * pooled.mean * eps) ** 2
        self.scale_ = xp.where(constant, 1.0, xp.sqrt(variance))

    def _transform(self, x, xp):
        x = _floating(x, xp)
        mean = _broadcast(xp.asarray(self.mean_, dtype=x.dtype), x, self.per)
        scale = _broadcast(xp.asarray(self.scale_, dtype=x.dtype), x, self.per)
        return (x - mean) / scale


class Flatten(Transform):
    """Flatten each example to a vector for an MLP: (N, d₁, …, d_k) → (N, d₁·…·d_k)."""

    name = "flatten"
    per_batch = True

    def _transform(self, x, xp):
        return x.reshape(len(x), int(numpy.prod(x.shape[1:])))  # an empty batch too


class Pipeline(Transform):
    """Transforms applied in order; each is fitted on the output of the previous ones.

    That output is read block by block (``Rows``), never held whole, and a
    step that only reshapes (``Flatten``) costs no pass over the data. A step
    that is not ``per_batch`` (e.g. a feature pipeline) gets its input as one
    array, and the steps after it are fitted on its output.
    """

    name = "pipeline"

    def __init__(self, steps: list[Transform]):
        self.steps = list(steps)

    @property
    def per_batch(self) -> bool:
        return all(step.per_batch for step in self.steps)

    @property
    def needs(self) -> str | None:
        wanted = {step.needs for step in self.steps}
        return next((kind for kind in ("variance", "mean") if kind in wanted), None)

    def fit(self, x: Any, moments: Moments | None = None) -> Pipeline:
        """Fit the steps in order; ``moments`` (of ``x``) serve the steps up to the first one
        that changes values (the steps before it only reshape)."""
        self._fit_steps(x, moments)
        return self

    def fit_transform(self, x: Any, moments: Moments | None = None) -> Any:
        """Fit, and ``x`` transformed: a step that is not ``per_batch`` (image features) is
        computed once, while fitting, not again for the result."""
        x = self._fit_steps(x, moments)
        last = self.steps[-1] if self.steps else None
        return Rows(x, transform=last) if last is not None and last.per_batch else x

    def _fit_steps(self, x: Any, moments: Moments | None) -> Any:
        """Fit the steps in order; returns ``x`` through all but the last step (lazily, as
        ``Rows``, after the last step that is not ``per_batch``)."""
        self.input_shape_ = tuple(int(d) for d in x.shape[1:])
        for i, step in enumerate(self.steps):
            if not step.per_batch:
                x = step.fit_transform(numpy.asarray(x) if isinstance(x, Rows) else x)
                moments = None
                continue
            step.fit(x, None if moments is None else moments.reshaped(tuple(x.shape[1:])))
            if step.needs is not None:
                moments = None
            if i + 1 < len(self.steps):
                x = Rows(x, transform=step)
        return x

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


def _feature_axes(shape: tuple[int, ...], per: str) -> tuple[int, ...]:
    """The axes of one example (of ``shape``) that share a statistic."""
    if per == "global":
        return tuple(range(len(shape)))
    if per == "channel":
        if not shape:
            raise ValueError("per-channel statistics need inputs (N, C, ...); got (N,)")
        return tuple(range(1, len(shape)))
    return ()


def _broadcast(stat: Any, x: Any, per: str) -> Any:
    if per == "channel":
        return stat.reshape((1, -1) + (1,) * (x.ndim - 2))
    return stat
