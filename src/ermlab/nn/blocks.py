"""Blocks of modern convolutional networks, each a ``Graph`` of ordinary boxes.

* ``BasicBlock`` and ``Bottleneck`` — residual learning, y = relu(F(x) + shortcut(x))
  (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016).
* ``ResNeXtBlock`` — the bottleneck with a grouped 3×3 convolution whose number of
  groups is the *cardinality* (Xie, Girshick, Dollár, Tu & He, "Aggregated Residual
  Transformations for Deep Neural Networks", CVPR 2017).
* ``InceptionModule`` — 1×1, 3×3, 5×5 and pooling branches concatenated on channels
  (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015).
* ``ZeroPadShortcut`` — He et al.'s parameter-free shortcut "option A".

Every block is a ``Graph`` whose boxes are ordinary modules — a residual block has
the boxes ``residual`` (a Sequential of Conv2d, BatchNorm2d, ReLU), ``shortcut`` (when
the shape changes), ``sum`` (Add) and ``relu``; an inception module has ``branch1`` …
``branch4`` and ``concat`` (Concatenate) — so its bprop is the graph's: gradients flow
back through each box in reverse topological order and are summed where a value fans
out (the input ``x`` of a residual block feeds both the residual branch and the shortcut).

Example:
    >>> import numpy as np
    >>> from ermlab.nn.blocks import BasicBlock
    >>> block = BasicBlock(16, 32, stride=2)          # projection shortcut (option B)
    >>> block.forward(np.zeros((8, 16, 32, 32), np.float32)).shape
    (8, 32, 16, 16)

Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic
Depth", ECCV 2016) is an option of the residual blocks: with ``survival_prob`` p < 1 the
residual branch is wrapped in ``StochasticDepth``, which keeps F(x) with probability p
for each mini-batch during training, y = relu(b·F(x) + shortcut(x)), b ~ Bernoulli(p)
(a dropped branch is not computed), and uses its expectation p·F(x) at test time.

Noise injection (Wang, Yuan, Shi & Osher, "ResNets Ensemble via the Feynman-Kac
Formalism to Improve Natural and Robust Accuracies", NeurIPS 2019) is another: with
``noise_std`` σ > 0 the block adds Gaussian noise to its residual sum at training AND
test time, y = relu(F(x) + σ ε + shortcut(x)), ε ~ N(0, I) fresh at every forward (a
``noise`` box, ``GaussianNoise(σ, at_test=True)``) — the diffusion term of the
convection-diffusion equation that such a ResNet discretizes; predictions are averaged
over draws and models (``Ensemble(models, draws=D)``).
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.backend import array_module, as_generator
from ermlab.nn import _fused
from ermlab.nn.activations import LANE_MIN_BYTES, ReLU
from ermlab.nn.conv import Conv2d
from ermlab.nn.graph import Graph
from ermlab.nn.merge import Add, Concatenate
from ermlab.nn.module import Module
from ermlab.nn.normalization import BatchNorm2d
from ermlab.nn.pooling import MaxPool2d
from ermlab.nn.sequential import Sequential
from ermlab.nn.stochastic import GaussianNoise, StochasticDepth
from ermlab.threads import run_ranges

SHORTCUTS = ("A", "B")


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    batch_norm: bool = True,
    relu: bool = True,
    rng: Any = None,
    dtype: Any = None,
) -> list[Module]:
    """[Conv2d, (BatchNorm2d), (ReLU)] with "same" padding k // 2.

    The convolution has no bias when batch norm follows it (the norm's shift β
    makes a bias redundant), as in He et al.'s and torchvision's ResNets.
    """
    layers: list[Module] = [Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
        groups=groups, bias=not batch_norm, rng=rng, dtype=dtype,
    )]
    if batch_norm:
        layers.append(BatchNorm2d(out_channels, dtype=dtype))
    if relu:
        layers.append(ReLU())
    return layers


class ZeroPadShortcut(Module):
    """He et al.'s shortcut option A: subsample by ``stride``, then zero-pad the channels.

        shortcut(x)[n, c, i, j] = x[n, c − before, s·i, s·j]  for before ≤ c < before + C_in,
                                  0                          otherwise,

    with before = (C_out − C_in) // 2 (the layout of the common CIFAR ResNet code, which
    pads C_out/4 channels on each side when the width doubles). No parameters: "all
    shortcuts are parameter-free" (He et al. 2016, §4.2). bprop takes the matching slice
    of the gradient and scatters it back onto the subsampled positions.

    On NumPy arrays both passes run in lanes of samples on ``ermlab.threads``
    (``threads`` attribute; default None: ``ERMLAB_NUM_THREADS`` or the CPU count), each
    of at least ``activations.LANE_MIN_BYTES`` of the output, each lane writing its own
    samples (zeros where nothing else is written, then the copy; NumPy's copies release
    the GIL): the same values as one lane.
    """

    forward_cache = ("_shape",)
    threads: int | None = None

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels or stride < 1:
            raise ValueError(
                f"ZeroPadShortcut needs out_channels ≥ in_channels and stride ≥ 1; got "
                f"{in_channels} → {out_channels}, stride {stride}"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.before = (out_channels - in_channels) // 2

    def forward(self, x: Any) -> Any:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self!r} expects input of shape (N, {self.in_channels}, H, W); got "
                f"{tuple(x.shape)}"
            )
        xp = array_module(x)
        s, first, last = self.stride, self.before, self.before + self.in_channels
        h, w = x[:1, :1, ::s, ::s].shape[2:]
        y = xp.empty((x.shape[0], self.out_channels, h, w), dtype=x.dtype)

        def fill(lo: int, hi: int) -> None:
            y[lo:hi, :first] = 0
            y[lo:hi, last:] = 0
            y[lo:hi, first:last] = x[lo:hi, :, ::s, ::s]

        run_ranges(self._lanes(y), fill)
        if self.training:
            self._shape = x.shape
        return y

    def grad_input(self, grad_out: Any) -> Any:
        shape = self._cached("_shape")
        xp = array_module(grad_out)
        s, first, last = self.stride, self.before, self.before + self.in_channels
        grad = xp.empty(shape, dtype=grad_out.dtype)

        def fill(lo: int, hi: int) -> None:
            if s > 1:
                grad[lo:hi] = 0
            grad[lo:hi, :, ::s, ::s] = grad_out[lo:hi, first:last]

        run_ranges(self._lanes(grad), fill)
        return grad

    def _lanes(self, out: Any) -> list[tuple[int, int]]:
        """Ranges of samples, one per lane (one range for other than NumPy arrays)."""
        if type(out) is not numpy.ndarray:
            return [(0, len(out))]
        return _fused.lanes(len(out), out.nbytes, self.threads, LANE_MIN_BYTES)

    def extra_repr(self) -> str:
        return f"{self.in_channels} → {self.out_channels}, stride={self.stride}"


class _Residual(Graph):
    """Shared wiring of the residual blocks: boxes ``residual`` (F, wrapped in
    ``StochasticDepth`` when survival_prob < 1), ``shortcut`` (absent for the identity),
    ``sum`` (Add) and ``relu``."""

    def _wire(
        self,
        residual: list[Module],
        in_channels: int,
        out_channels: int,
        stride: int,
        shortcut: str,
        survival_prob: float,
        rng: Any,
        dtype: Any,
        noise_std: float = 0.0,
    ) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}; got {shortcut!r}")
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) \
                or not noise_std >= 0:
            raise ValueError(f"noise_std is the standard deviation σ ≥ 0 of the noise injected "
                             f"into each residual block; got {noise_std!r}")
        branch: Module = Sequential(*residual)
        if survival_prob != 1.0:
            branch = StochasticDepth(branch, survival_prob, rng=rng)
        self.survival_prob = float(survival_prob)
        self.noise_std = float(noise_std)
        self.add("residual", branch, "x")
        if noise_std > 0:
            self.add("noise", GaussianNoise(noise_std, at_test=True, rng=rng), "residual")
        identity = "x"
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                projection: Module = ZeroPadShortcut(in_channels, out_channels, stride)
            else:
                projection = Sequential(*conv_bn(in_channels, out_channels, 1, stride,
                                                 relu=False, rng=rng, dtype=dtype))
            self.add("shortcut", projection, "x")
            identity = "shortcut"
        self.add("sum", Add(), ["noise" if noise_std > 0 else "residual", identity])
        self.add("relu", ReLU(), "sum")
        self.set_output("relu")


class BasicBlock(_Residual):
    """Residual block of two 3×3 convolutions (He et al. 2016, Fig. 2 / Fig. 5 left):

        F(x) = BN(W₂ ∗ relu(BN(W₁ ∗ x))),   y = relu(F(x) + shortcut(x)).

    W₁ has stride ``stride``. The shortcut is the identity when the shape is kept;
    otherwise a projection 1×1 convolution with stride s followed by batch norm
    (``shortcut="B"``, He et al.'s option B, torchvision's choice) or the parameter-free
    ``ZeroPadShortcut`` (``shortcut="A"``, used for the CIFAR-10 ResNets of §4.2).
    ``survival_prob`` < 1 adds stochastic depth on the residual branch; ``noise_std``
    σ > 0 injects noise at training and test time (see the module docstring).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        shortcut: str = "B",
        survival_prob: float = 1.0,
        rng: Any = None,
        dtype: Any = None,
        noise_std: float = 0.0,
    ) -> None:
        super().__init__(inputs="x")
        rng = as_generator(rng)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        residual = conv_bn(in_channels, out_channels, 3, stride, rng=rng, dtype=dtype)
        residual += conv_bn(out_channels, out_channels, 3, relu=False, rng=rng, dtype=dtype)
        self._wire(residual, in_channels, out_channels, stride, shortcut, survival_prob, rng,
                   dtype, noise_std)

    def extra_repr(self) -> str:
        return f"{self.in_channels} → {self.out_channels}, stride={self.stride}"


class Bottleneck(_Residual):
    """Bottleneck residual block 1×1 → 3×3 → 1×1 (He et al. 2016, Fig. 5 right):

        F(x) = BN(W₃ ∗ relu(BN(W₂ ∗ relu(BN(W₁ ∗ x))))),   y = relu(F(x) + shortcut(x)),

    W₁: C_in → D (1×1), W₂: D → D (3×3, stride s, ``groups`` groups), W₃: D → 4·planes
    (1×1), with D = ⌊planes · base_width / 64⌋ · groups (``expansion`` = 4). With the
    defaults (groups 1, base_width 64) D = planes, He et al.'s block. The stride sits on
    the 3×3 convolution, as in torchvision ("ResNet v1.5"); the paper put it on the
    first 1×1 — the parameter count is the same. Shortcut and ``survival_prob`` as in
    ``BasicBlock``.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        shortcut: str = "B",
        survival_prob: float = 1.0,
        rng: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(inputs="x")
        rng = as_generator(rng)
        width = int(planes * base_width / 64) * groups
        out_channels = planes * self.expansion
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.width, self.groups = width, groups
        residual = conv_bn(in_channels, width, 1, rng=rng, dtype=dtype)
        residual += conv_bn(width, width, 3, stride, groups=groups, rng=rng, dtype=dtype)
        residual += conv_bn(width, out_channels, 1, relu=False, rng=rng, dtype=dtype)
        self._wire(residual, in_channels, out_channels, stride, shortcut, survival_prob, rng,
                   dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} → {self.width} → {self.out_channels}, "
                f"stride={self.stride}, groups={self.groups}")


class ResNeXtBlock(Bottleneck):
    """ResNeXt block (Xie et al. 2017, Fig. 3c): a bottleneck whose 3×3 convolution is
    split into C = ``cardinality`` groups of d = ``base_width`` channels at planes = 64.

        F(x) = Σ_{i=1}^{C} T_i(x),   y = relu(F(x) + shortcut(x)),

    where each path T_i is 1×1 → 3×3 → 1×1; the aggregated form is implemented as the
    equivalent grouped convolution (form (c) of the paper's Fig. 3). Width of the
    grouped layer: D = ⌊planes · d / 64⌋ · C (ResNeXt-50 32×4d: C = 32, d = 4).
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        cardinality: int = 32,
        base_width: int = 4,
        shortcut: str = "B",
        survival_prob: float = 1.0,
        rng: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_channels, planes, stride, groups=cardinality, base_width=base_width,
                         shortcut=shortcut, survival_prob=survival_prob, rng=rng, dtype=dtype)


class InceptionModule(Graph):
    """GoogLeNet's inception module with dimension reductions (Szegedy et al. 2015, Fig. 2b):

        y = concat_channels( relu(1×1(x)),
                             relu(3×3(relu(1×1(x)))),
                             relu(5×5(relu(1×1(x)))),
                             relu(1×1(maxpool_3×3/1(x))) )

    Output channels: ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` (Table 1's columns
    "#1×1", "#3×3 reduce", "#3×3", "#5×5 reduce", "#5×5", "pool proj"). The paper
    uses convolutions with biases and no batch norm; ``batch_norm=True`` puts BN
    after each convolution (torchvision's variant, which also — unlike the paper —
    uses 3×3 instead of 5×5 in the third branch; this module keeps the paper's 5×5).
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        batch_norm: bool = False,
        rng: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(inputs="x")
        rng = as_generator(rng)
        self.in_channels = in_channels
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        unit = dict(batch_norm=batch_norm, rng=rng, dtype=dtype)
        self.add("branch1", Sequential(*conv_bn(in_channels, ch1x1, 1, **unit)), "x")
        self.add("branch2", Sequential(*conv_bn(in_channels, ch3x3red, 1, **unit),
                                       *conv_bn(ch3x3red, ch3x3, 3, **unit)), "x")
        self.add("branch3", Sequential(*conv_bn(in_channels, ch5x5red, 1, **unit),
                                       *conv_bn(ch5x5red, ch5x5, 5, **unit)), "x")
        self.add("branch4", Sequential(MaxPool2d(3, stride=1, padding=1),
                                       *conv_bn(in_channels, pool_proj, 1, **unit)), "x")
        self.add("concat", Concatenate(axis=1), ["branch1", "branch2", "branch3", "branch4"])
        self.set_output("concat")

    def extra_repr(self) -> str:
        return f"{self.in_channels} → {self.out_channels}"
