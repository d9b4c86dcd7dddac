"""The noisy quadratic model's "network": scores s = Dθ − x, one parameter θ ∈ ℝᵈ.

With D = diag(√(d h / 2)) and the mean squared error over the d components
(``losses.MeanSquaredError`` against zero targets), an example x = D c costs

    l = (1/d) Σ_i (D_i θ_i − D_i c_i)² = (1/d) Σ_i (d h_i / 2)(θ_i − c_i)² = ½ (θ − c)ᵀ H (θ − c),

the noisy quadratic model of Zhang et al. (2019), "Which algorithmic choices
matter at which batch sizes? Insights from a noisy quadratic model".

bprop: ∂L/∂θ = Σ_n D g_n (g = ∂L/∂s), ∂L/∂x = −g.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module, as_generator, resolve_dtype
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter


class NoisyQuadraticModel(Module):
    """s = Dθ − x with D = ``scale``; θ starts at N(0, I) drawn from ``rng``."""

    def __init__(self, scale: Any, rng: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dtype = resolve_dtype(dtype)
        scale = numpy.asarray(scale, dtype=dtype)
        self.scale = scale
        self.theta = Parameter(as_generator(rng).standard_normal(scale.shape).astype(dtype),
                               "theta", regularize=False)

    def forward(self, x: Any) -> Any:
        if x.ndim != 2 or x.shape[1] != self.scale.shape[0]:
            raise ValueError(f"NoisyQuadraticModel expects inputs of shape (N, "
                             f"{self.scale.shape[0]}); got {tuple(x.shape)}")
        return self.theta.data * self.scale - x

    def accumulate_grad(self, grad_out: Any) -> None:
        xp = array_module(grad_out)
        self.theta.grad += xp.sum(grad_out, axis=0) * self.scale

    def grad_input(self, grad_out: Any) -> Any:
        return -grad_out
