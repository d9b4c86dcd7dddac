"""Local response normalization across channels (Krizhevsky et al. 2012, AlexNet §3.3).

With torch's conventions (``torch.nn.LocalResponseNorm``), for an input a of shape
(N, C, ...) and a window of n = ``size`` channels,

    s_c = k + (α / n) Σ_{c' ∈ W(c)} a_{c'}²,      b_c = a_c / s_c^β,
    W(c) = {c − ⌊n/2⌋, …, c + ⌊(n−1)/2⌋} ∩ [0, C).

bprop, with g = ∂L/∂b:

    ∂L/∂a_j = g_j s_j^{−β} − (2αβ / n) a_j Σ_{c : j ∈ W(c)} g_c a_c s_c^{−β−1},

where c ranges over j − ⌊(n−1)/2⌋ … j + ⌊n/2⌋ (the mirrored window). Both window sums
are a loop over the n channel offsets of zero-padded slices.

Where frameworks differ: AlexNet's paper writes α (not α/n) with k = 2, n = 5,
α = 1e−4, β = 0.75; torch (and here) divide α by n, so AlexNet's constants are
``LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)``. Caffe's ACROSS_CHANNELS mode
matches torch.
"""

from __future__ import annotations

from typing import Any

from ermlab.backend import array_module
from ermlab.nn.module import Module


def _window_sum(xp: Any, values: Any, before: int, after: int) -> Any:
    """Σ_{t=−before}^{after} values[:, c + t] with zeros outside [0, C)."""
    channels = values.shape[1]
    pad_width = [(0, 0)] * values.ndim
    pad_width[1] = (before, after)
    padded = xp.pad(values, pad_width)
    total = padded[:, :channels].copy()
    for t in range(1, before + after + 1):
        total += padded[:, t:t + channels]
    return total


class LocalResponseNorm(Module):
    """b_c = a_c / (k + α/n Σ_{c' ∈ W(c)} a_{c'}²)^β across channels (torch semantics).

    Args:
        size: n, the number of channels in the window.
        alpha, beta, k: the constants of the equation (torch's defaults).
    """

    forward_cache = ("_x", "_scale")

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"LocalResponseNorm: size must be a positive integer; got {size!r}")
        self.size, self.alpha, self.beta, self.k = size, float(alpha), float(beta), float(k)

    def forward(self, x: Any) -> Any:
        if getattr(x, "ndim", 0) < 3:
            raise ValueError(
                f"{self!r} expects an input (N, C, ...) of rank ≥ 3, e.g. NCHW; "
                f"got shape {tuple(getattr(x, 'shape', ()))}"
            )
        xp = array_module(x)
        n = self.size
        scale = _window_sum(xp, x * x, n // 2, (n - 1) // 2)
        scale *= self.alpha / n
        scale += self.k
        y = x * scale ** -self.beta
        if self.training:
            self._x, self._scale = x, scale
        return y

    def grad_input(self, grad_out: Any) -> Any:
        xp = array_module(grad_out)
        x, scale = self._cached("_x"), self._cached("_scale")
        n = self.size
        inv = scale ** -self.beta
        inner = grad_out * x * inv / scale
        mirrored = _window_sum(xp, inner, (n - 1) // 2, n // 2)
        return grad_out * inv - (2.0 * self.alpha * self.beta / n) * x * mirrored

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
