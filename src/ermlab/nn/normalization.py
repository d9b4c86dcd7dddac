"""Batch normalization (Ioffe & Szegedy 2015), with torch.nn.BatchNorm1d/2d's exact semantics.

For each feature (BatchNorm1d) or channel (BatchNorm2d) c, over the m values
of the mini-batch that share it (the batch, and the spatial positions):

    training   μ = (1/m) Σ x,   σ² = (1/m) Σ (x − μ)²        (biased, used to normalize)
               x̂ = (x − μ) / √(σ² + ε),   y = γ x̂ + β
               running_mean ← (1 − α) running_mean + α μ
               running_var  ← (1 − α) running_var  + α σ² · m / (m − 1)   (unbiased)
    test       y = γ (x − running_mean) / √(running_var + ε) + β

with α = ``momentum`` (0.1); ``momentum=None`` uses the cumulative average
α = 1 / num_batches_tracked, as torch does. bprop in training mode, with
G = ∂L/∂y and means over the m values of the channel:

    ∂L/∂γ = Σ G ⊙ x̂,   ∂L/∂β = Σ G,
    ∂L/∂x = (γ / √(σ² + ε)) (G − mean(G) − x̂ ⊙ mean(G ⊙ x̂))

Frozen statistics. With ``frozen = True`` a training-mode forward normalizes with the
running statistics, as at test time, leaves them unchanged and keeps its cache; bprop is
then that of the test-time affine map, ∂L/∂x = G γ / √(running_var + ε) (γ and β still
get their gradients). ``ermlab.robustness.gradients_at_test_time`` uses it to differentiate
the evaluated model; torch's equivalent is a BatchNorm in ``eval()`` under autograd.

Buffers (saved in ``state_dict`` under torch's names): ``running_mean``,
``running_var`` and ``num_batches_tracked`` (an int64 scalar). Parameters
``weight`` γ (ones) and ``bias`` β (zeros) are not regularized.

Where frameworks differ: the momentum α here (torch's) weights the NEW batch
statistic; Keras/TensorFlow's ``momentum`` = 1 − α weights the old running
value. The running variance uses the unbiased estimate (torch, and the paper's
inference step), but normalization uses the biased one.

Reference: S. Ioffe, C. Szegedy. Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift. ICML 2015.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module, resolve_dtype
from ermlab.nn.linear import check_float_input
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter


class _BatchNorm(Module):
    """Shared code; subclasses set ``_ranks`` (accepted input ranks) and ``_layout``."""

    _ranks: tuple[int, ...] = ()
    _layout = ""
    forward_cache = ("_x_hat", "_inv_std", "_batch_stats")
    frozen = False

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(
                f"{name} num_features must be a positive integer; got {num_features!r}"
            )
        if not eps > 0:
            raise ValueError(f"{name} eps must be > 0; got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name} momentum must be in [0, 1] or None; got {momentum!r}")
        dtype = self._dtype = resolve_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(numpy.ones(num_features, dtype), "weight", regularize=False)
            self.bias = Parameter(numpy.zeros(num_features, dtype), "bias", regularize=False)
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", numpy.zeros(num_features, dtype))
            self.register_buffer("running_var", numpy.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", numpy.zeros((), numpy.int64))

    def _check_input(self, x: Any) -> None:
        name = type(self).__name__
        if getattr(x, "ndim", None) not in self._ranks:
            raise ValueError(
                f"{name} expects input of shape {self._layout}; got shape "
                f"{tuple(getattr(x, 'shape', ()))} (rank {getattr(x, 'ndim', None)})"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}({self.num_features}) expects {self.num_features} features/channels on "
                f"axis 1; got input of shape {tuple(x.shape)}"
            )
        check_float_input(self, x, self._dtype)

    def forward(self, x: Any) -> Any:
        self._check_input(x)
        xp = array_module(x)
        axes = (0, *range(2, x.ndim))
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)
        use_batch = (self.training and not self.frozen) or not self.track_running_stats
        if use_batch:
            m = x.size // self.num_features
            if m < 2 and self.training:
                raise ValueError(
                    f"{type(self).__name__} needs more than 1 value per channel in training "
                    f"mode; got input of shape {tuple(x.shape)} (use a batch of ≥ 2 examples, "
                    "or call eval())"
                )
            mean = x.mean(axis=axes)
            centred = x - mean.reshape(shape)
            var = (centred * centred).mean(axis=axes)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, m)
        else:
            mean, var = self.running_mean, self.running_var
            centred = x - mean.reshape(shape)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        x_hat = centred * inv_std.reshape(shape)
        if self.training:
            self._x_hat, self._inv_std, self._batch_stats = x_hat, inv_std, use_batch
        if not self.affine:
            return x_hat
        return x_hat * self.weight.data.reshape(shape) + self.bias.data.reshape(shape)

    def _update_running(self, mean: Any, var: Any, m: int) -> None:
        self.num_batches_tracked += 1
        alpha = self.momentum
        if alpha is None:
            alpha = 1.0 / float(self.num_batches_tracked)
        self.running_mean *= 1 - alpha
        self.running_mean += alpha * mean
        self.running_var *= 1 - alpha
        self.running_var += alpha * var * (m / (m - 1))

    def accumulate_grad(self, grad_out: Any) -> None:
        if not self.affine:
            return
        xp = array_module(grad_out)
        axes = (0, *range(2, grad_out.ndim))
        self.weight.add_grad(xp.sum(grad_out * self._cached("_x_hat"), axis=axes))
        self.bias.add_grad(xp.sum(grad_out, axis=axes))

    def grad_input(self, grad_out: Any) -> Any:
        x_hat, inv_std = self._cached("_x_hat"), self._cached("_inv_std")
        axes = (0, *range(2, grad_out.ndim))
        shape = (1, self.num_features) + (1,) * (grad_out.ndim - 2)
        scale = inv_std if not self.affine else self.weight.data * inv_std
        if not self._cached("_batch_stats"):
            return scale.reshape(shape) * grad_out
        g_mean = grad_out.mean(axis=axes).reshape(shape)
        gx_mean = (grad_out * x_hat).mean(axis=axes).reshape(shape)
        return scale.reshape(shape) * (grad_out - g_mean - x_hat * gx_mean)

    def extra_repr(self) -> str:
        text = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        text += "" if self.affine else ", affine=False"
        return text + ("" if self.track_running_stats else ", track_running_stats=False")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over features: input (N, C) or (N, C, L), statistics per C.

    Same arguments, defaults and buffers as ``torch.nn.BatchNorm1d``:
    ``num_features`` C, ``eps`` = 1e-5, ``momentum`` = 0.1 (or None),
    ``affine`` = True, ``track_running_stats`` = True; plus ``dtype``.
    See the module docstring for the equations.
    """

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over channels: input (N, C, H, W) (NCHW), statistics per C.

    Same arguments, defaults and buffers as ``torch.nn.BatchNorm2d``; the
    mean and variance run over N, H and W. NHWC data must be transposed first.
    """

    _ranks = (4,)
    _layout = "(N, C, H, W)"
