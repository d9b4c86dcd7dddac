"""Fractional max pooling (Graham, "Fractional Max-Pooling", 2014): pooling by a ratio α ∈ (1, 2).

An N_in × N_in map becomes N_out × N_out with N_out = ⌊N_in / α⌋, so the spatial size
shrinks more gently than 2×2 pooling's halving. Along each axis the pooling regions come
from an increasing sequence 0 = a_0 < a_1 < … < a_{N_out} = N_in whose increments are
1 or 2 (α̂ = N_in / N_out ∈ (1, 2]):

    random         the increments are a random permutation of (2 N_out − N_in) ones and
                   (N_in − N_out) twos;
    pseudo-random  a_i = ⌈α̂ (i + u)⌉ − ⌈α̂ u⌉, u ~ U[0, 1),  (a_{N_out} = N_in),

and output (i, j) is the maximum over the region P_ij = I_i × J_j with

    disjoint      I_i = [a_i, a_{i+1} − 1]            (the regions tile the map)
    overlapping   I_i = [a_i, min(a_{i+1}, N_in − 1)]  (neighbours share their border row).

``kernel_size=k`` gives torch's variant instead (``torch.nn.FractionalMaxPool2d``): k × k
windows starting at s_i = ⌊(i + u) β⌋ − ⌊u β⌋, β = (N_in − k) / (N_out − 1), and
s_{N_out − 1} = N_in − k (pseudo-random only); given torch's ``_random_samples`` u it
returns torch's output and gradient exactly.

Each image and channel gets its own sequences, drawn afresh at every forward — in
training mode (a new pooling for every pass, the regularization) and in evaluation mode
too: Graham averages the predictions of several test passes, which
``Ensemble([model], draws=D)`` does. The sample (``mask``, freezable like the other
stochastic layers') is u of shape (N, C, 2) — [u_w, u_h], torch's order — or, for random
sequences, the uniform keys (N, C, OW + OH) whose ranks order the increments.

bprop routes each output's gradient to its region's first maximum (row-major scan, as
torch and ``MaxPool2d``), summing where overlapping regions share a winner.

Reference: B. Graham. Fractional Max-Pooling. arXiv:1412.6071, 2014.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn.stochastic import Stochastic


def _uniform(generator: numpy.random.Generator, shape: tuple[int, ...]) -> numpy.ndarray:
    return generator.random(shape)


_uniform.mean = 0.5


class FractionalMaxPool2d(Stochastic):
    """Fractional max pooling over NCHW inputs; see the module docstring.

    Args:
        alpha: the reduction ratio α ∈ (1, 2); N_out = ⌊N_in / α⌋ per spatial axis.
        pseudo_random: pseudo-random (default) or random sequences.
        overlapping: overlapping (default) or disjoint regions.
        kernel_size: None (Graham's regions, default) or k for torch's k × k windows.
        rng: Generator, seed or None (see ``ermlab.nn.stochastic``).
    """

    forward_cache = ("_winner", "_x_shape")

    def __init__(self, alpha: float, pseudo_random: bool = True, overlapping: bool = True,
                 kernel_size: int | None = None, rng: Any = None) -> None:
        super().__init__(rng)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, numpy.floating)) \
                or not 1 < alpha < 2:
            raise ValueError(f"FractionalMaxPool2d alpha is the size reduction ratio and must "
                             f"be in (1, 2) (e.g. √2 ≈ 1.414); got {alpha!r}; for α = 2 use "
                             "MaxPool2d(2)")
        if kernel_size is not None and (isinstance(kernel_size, bool)
                                        or not isinstance(kernel_size, int) or kernel_size < 1):
            raise ValueError(f"FractionalMaxPool2d kernel_size must be None or an integer "
                             f"≥ 1; got {kernel_size!r}")
        if kernel_size is not None and not pseudo_random:
            raise ValueError("FractionalMaxPool2d with kernel_size (torch's windows) has "
                             "pseudo-random starts only; pass pseudo_random=True")
        self.alpha, self.kernel_size = float(alpha), kernel_size
        self.pseudo_random, self.overlapping = bool(pseudo_random), bool(overlapping)

    @property
    def random_at_test(self) -> bool:
        return True

    def output_size(self, size: int) -> int:
        return int(size / self.alpha)

    def _check(self, x: Any) -> tuple[int, int]:
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"FractionalMaxPool2d expects input of shape (N, C, H, W); got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        out = tuple(self.output_size(s) for s in x.shape[2:])
        for size, n_out in zip(x.shape[2:], out):
            if self.kernel_size is not None:
                ok = n_out >= 1 and n_out + self.kernel_size - 1 <= size
            else:
                ok = 1 <= n_out < size <= 2 * n_out
            if not ok:
                raise ValueError(f"FractionalMaxPool2d(alpha={self.alpha:g}) cannot pool a "
                                 f"{x.shape[2]}×{x.shape[3]} map to {out[0]}×{out[1]}"
                                 + ("" if self.kernel_size is None else
                                    f" with {self.kernel_size}×{self.kernel_size} windows")
                                 + "; use a larger input or a different alpha")
        return out

    # -- the regions ------------------------------------------------------------------

    def _sequence(self, xp: Any, sample: Any, n_in: int, n_out: int) -> Any:
        """Boundaries a_0..a_{N_out} (Graham) or window starts s_0..s_{N_out−1} (torch),
        per row of ``sample``: (M,) u values, or (M, N_out) keys of random sequences."""
        if self.kernel_size is not None:
            k, u = self.kernel_size, sample
            starts = xp.empty((len(u), n_out), dtype=xp.int64)
            if n_out > 1:
                beta = sample.dtype.type(n_in - k) / sample.dtype.type(n_out - 1)
                i = xp.arange(n_out - 1, dtype=sample.dtype)
                starts[:, :-1] = (xp.trunc((i[None, :] + u[:, None]) * beta).astype(xp.int64)
                                  - xp.trunc(u * beta).astype(xp.int64)[:, None])
            starts[:, -1] = n_in - k
            return starts
        bounds = xp.empty((len(sample), n_out + 1), dtype=xp.int64)
        bounds[:, 0], bounds[:, -1] = 0, n_in
        if self.pseudo_random:
            ratio = n_in / n_out
            u = sample.astype(xp.float64)
            i = xp.arange(1, n_out, dtype=xp.float64)
            bounds[:, 1:-1] = (xp.ceil(ratio * (i[None, :] + u[:, None]))
                               - xp.ceil(ratio * u)[:, None]).astype(xp.int64)
        else:
            ones = 2 * n_out - n_in  # increments: (2 N_out − N_in) ones, the rest twos
            rank = xp.argsort(xp.argsort(sample, axis=1), axis=1)
            steps = xp.where(rank < ones, 1, 2)
            bounds[:, 1:] = xp.cumsum(steps, axis=1)
        return bounds

    def _rows(self, xp: Any, sample: Any, n_in: int, n_out: int) -> Any:
        """Input indices of each region along one axis, (M, N_out, L), padded by repeating
        the region's last index (a repeat never wins: the first maximum does)."""
        sequence = self._sequence(xp, sample, n_in, n_out)
        if self.kernel_size is not None:
            return sequence[:, :, None] + xp.arange(self.kernel_size)[None, None, :]
        start, stop = sequence[:, :-1], sequence[:, 1:] - 1  # disjoint: [a_i, a_{i+1} − 1]
        if self.overlapping:
            stop = xp.minimum(stop + 1, n_in - 1)
        offsets = xp.arange(3 if self.overlapping else 2)
        return xp.minimum(start[:, :, None] + offsets[None, None, :], stop[:, :, None])

    def _draw_shape(self, n: int, c: int, out: tuple[int, int]) -> tuple[int, ...]:
        return (n, c, 2) if self.pseudo_random else (n, c, out[1] + out[0])

    # -- fprop / bprop ------------------------------------------------------------------

    def forward(self, x: Any) -> Any:
        oh, ow = self._check(x)
        xp = array_module(x)
        n, c, h, w = x.shape
        sample = self._sample(self._draw_shape(n, c, (oh, ow)), _uniform, x)
        sample = xp.asarray(sample, dtype=x.dtype).reshape(n * c, -1)
        if self.pseudo_random:
            cols, rows = (self._rows(xp, sample[:, 0], w, ow),
                          self._rows(xp, sample[:, 1], h, oh))
        else:
            cols, rows = (self._rows(xp, sample[:, :ow], w, ow),
                          self._rows(xp, sample[:, ow:], h, oh))
        lh, lw = rows.shape[2], cols.shape[2]
        index = (rows[:, :, None, :, None] * w + cols[:, None, :, None, :]).reshape(
            n * c, oh * ow * lh * lw)
        values = xp.take_along_axis(x.reshape(n * c, h * w), index, axis=1).reshape(
            n * c, oh * ow, lh * lw)
        winner = values.argmax(axis=2)
        out = xp.take_along_axis(values, winner[:, :, None], axis=2)
        if self.training:
            flat = xp.take_along_axis(index.reshape(n * c, oh * ow, lh * lw),
                                      winner[:, :, None], axis=2)[:, :, 0]
            self._winner = flat + (xp.arange(n * c) * (h * w))[:, None]
            self._x_shape = x.shape
        return out.reshape(n, c, oh, ow)

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        winner, shape = self._cached("_winner"), self._cached("_x_shape")
        grad = xp.bincount(winner.ravel(), weights=grad_out.reshape(-1),
                           minlength=int(numpy.prod(shape)))
        return grad.astype(grad_out.dtype).reshape(shape)

    def extra_repr(self) -> str:
        text = f"alpha={self.alpha:g}"
        text += "" if self.pseudo_random else ", pseudo_random=False"
        text += "" if self.overlapping else ", overlapping=False"
        return text + ("" if self.kernel_size is None else f", kernel_size={self.kernel_size}")
