"""The built-in gradient-check suite: every module, loss and regularizer ermlab ships.

``ermlab gradcheck`` runs it and prints a table; the tests run it too.
Each case builds its object in float64 on small random shapes. Stochastic
layers are checked in training mode with their masks frozen (``nn.frozen_masks``);
batch normalization in training mode (batch statistics). Parameters are
jittered first: at their initial values (β = 0, γ = 1) some gradients are
exactly zero by symmetry and would check nothing. The differences use
ε = 1e-5: with several layers in a case, 1e-6 leaves too much rounding error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy

from ermlab import gradcheck, losses, nn, regularizers
from ermlab.backend import default_dtype
from ermlab.nn.blocks import ZeroPadShortcut

Case = tuple[str, str, Callable[[numpy.random.Generator], gradcheck.GradcheckResult]]
EPS = 1e-5


def _check(module: nn.Module, *inputs: numpy.ndarray, rng: numpy.random.Generator):
    for param in module.parameters():  # away from special values: zero biases, unit γ
        param.data += 0.1 * rng.standard_normal(param.shape)
    with nn.frozen_masks(module):
        return gradcheck.check_module(module, *inputs, eps=EPS, rng=rng)


def _module_cases() -> Iterator[Case]:
    def single(build, shape):
        return lambda rng: _check(build(rng), rng.standard_normal(shape), rng=rng)

    yield "module", "Linear", single(lambda rng: nn.Linear(5, 4, rng=rng), (3, 5))
    yield "module", "Linear (no bias)", single(lambda rng: nn.Linear(5, 4, bias=False, rng=rng),
                                               (3, 5))
    yield "module", "Flatten", single(lambda rng: nn.Flatten(), (2, 3, 2, 2))
    yield "module", "Identity", single(lambda rng: nn.Identity(), (3, 4))
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "softmax"):
        yield "module", type(nn.activations.get(name)).__name__, single(
            lambda rng, name=name: nn.activations.get(name), (4, 5))
    yield "module", "Maxout (k=3)", single(lambda rng: nn.Maxout(5, 3, pieces=3, rng=rng), (4, 5))
    yield "module", "Sequential (MLP)", single(
        lambda rng: nn.mlp([5, 6, 4, 3], activation="tanh", rng=rng), (4, 5))
    yield "module", "Sequential (shared Linear)", single(_shared_sequential, (4, 5))
    yield "module", "Graph (residual)", single(_residual, (4, 6))
    yield "module", "Graph (shared encoder)", lambda rng: _check(
        _siamese(rng), rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng=rng)
    yield "module", "Concatenate", lambda rng: _check(
        nn.Concatenate(axis=1), rng.standard_normal((3, 2)), rng.standard_normal((3, 4)), rng=rng)
    yield "module", "Add", lambda rng: _check(
        nn.Add(), rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), rng=rng)
    image = (2, 3, 7, 6)
    yield "module", "Conv2d", single(
        lambda rng: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=rng), image)
    yield "module", "Conv2d (dilation, groups)", single(
        lambda rng: nn.Conv2d(4, 2, (3, 2), dilation=2, groups=2, padding=1, rng=rng),
        (2, 4, 6, 5))
    small = (1, 2, 6, 5)  # the variants below: one sample keeps the suite fast
    yield "module", "Conv2d (Winograd)", single(
        lambda rng: nn.Conv2d(2, 3, 3, padding=1, algorithm="winograd", rng=rng), small)
    yield "module", "Conv2d + ReLU (fused, Winograd)", single(
        lambda rng: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, algorithm="winograd", rng=rng), nn.ReLU()), small)
    yield "module", "Conv2d + ReLU (fused, direct)", single(
        lambda rng: nn.Sequential(
            nn.Conv2d(2, 3, 3, stride=2, padding=1, algorithm="direct", rng=rng), nn.ReLU()),
        small)
    yield "module", "MaxPool2d", single(lambda rng: nn.MaxPool2d(3, stride=2, padding=1), image)
    yield "module", "AvgPool2d", single(lambda rng: nn.AvgPool2d(2, padding=1), image)
    yield "module", "GlobalAvgPool2d", single(lambda rng: nn.GlobalAvgPool2d(), image)
    yield "module", "FractionalMaxPool2d", single(
        lambda rng: nn.FractionalMaxPool2d(1.4, rng=rng), image)
    yield "module", "FractionalMaxPool2d (kernel_size=2)", single(
        lambda rng: nn.FractionalMaxPool2d(1.4, kernel_size=2, rng=rng), small)
    yield "module", "FractionalMaxPool2d (random sequence)", single(
        lambda rng: nn.FractionalMaxPool2d(1.4, pseudo_random=False, rng=rng), small)
    yield "module", "FractionalMaxPool2d (disjoint)", single(
        lambda rng: nn.FractionalMaxPool2d(1.4, overlapping=False, rng=rng), small)
    yield "module", "LocalResponseNorm", single(lambda rng: nn.LocalResponseNorm(3), image)
    yield "module", "BatchNorm1d", single(lambda rng: nn.BatchNorm1d(5), (6, 5))
    yield "module", "BatchNorm2d", single(lambda rng: nn.BatchNorm2d(3), image)
    yield "module", "Dropout", single(lambda rng: nn.Dropout(0.3, rng=rng), (4, 5))
    yield "module", "DropConnect", single(
        lambda rng: nn.DropConnect(nn.Linear(5, 3, rng=rng), 0.3, rng=rng), (4, 5))
    yield "module", "GaussianNoise", single(lambda rng: nn.GaussianNoise(0.5, rng=rng), (4, 5))
    yield "module", "StochasticDepth", single(
        lambda rng: nn.StochasticDepth(nn.Linear(5, 5, rng=rng), 0.8, rng=rng), (4, 5))
    yield "module", "ZeroPadShortcut", single(
        lambda rng: ZeroPadShortcut(3, 6, stride=2), (2, 3, 5, 5))
    yield "module", "BasicBlock (projection)", single(
        lambda rng: nn.BasicBlock(3, 4, stride=2, rng=rng), (2, 3, 6, 6))
    yield "module", "Bottleneck", single(lambda rng: nn.Bottleneck(8, 2, rng=rng), (2, 8, 5, 5))
    yield "module", "ResNeXtBlock", single(
        lambda rng: nn.ResNeXtBlock(8, 2, cardinality=2, base_width=32, rng=rng),
        (2, 8, 6, 6))
    yield "module", "InceptionModule", single(
        lambda rng: nn.InceptionModule(3, 2, 2, 3, 1, 2, 2, rng=rng), (2, 3, 5, 5))


def _shared_sequential(rng: numpy.random.Generator) -> nn.Sequential:
    layer = nn.Linear(5, 5, rng=rng)  # W used twice: ∂L/∂W sums both positions
    return nn.Sequential(layer, nn.Tanh(), layer)


def _siamese(rng: numpy.random.Generator) -> nn.Graph:
    encoder = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.Tanh())  # one encoder, two boxes
    g = nn.Graph(inputs=["a", "b"]).add("ea", encoder, "a").add("eb", encoder, "b")
    return g.add("out", nn.Concatenate(), ["ea", "eb"]).set_output("out")


def _residual(rng: numpy.random.Generator) -> nn.Graph:
    g = nn.Graph(inputs="x")
    g.add("fc1", nn.Linear(6, 6, rng=rng), "x").add("act", nn.Tanh(), "fc1")
    g.add("fc2", nn.Linear(6, 6, rng=rng), "act").add("sum", nn.Add(), ["fc2", "x"])
    return g.add("branch", nn.Linear(6, 2, rng=rng), "x").add(
        "out", nn.Concatenate(), ["sum", "branch"]).set_output("out")


def _loss_cases() -> Iterator[Case]:
    def classification(loss_class):
        def run(rng):
            scores = rng.standard_normal((6, 4))
            return gradcheck.check_loss(loss_class(), scores, rng.integers(0, 4, 6),
                                        sample_weight=rng.uniform(0.5, 2, 6), eps=EPS)
        return run

    def probabilities(rng):
        logits = rng.standard_normal((6, 4))
        p = numpy.exp(logits) / numpy.exp(logits).sum(axis=1, keepdims=True)
        return gradcheck.check_loss(losses.NegativeLogLikelihood(), p, rng.integers(0, 4, 6))

    yield "loss", "SoftmaxCrossEntropy", classification(losses.SoftmaxCrossEntropy)
    yield "loss", "MulticlassHinge", classification(losses.MulticlassHinge)
    yield "loss", "OneVsAllHinge", classification(losses.OneVsAllHinge)
    yield "loss", "NegativeLogLikelihood", probabilities
    yield "loss", "MeanSquaredError", lambda rng: gradcheck.check_loss(
        losses.MeanSquaredError(), rng.standard_normal((5, 3)), rng.standard_normal((5, 3)))
    yield "loss", "BinaryCrossEntropyWithLogits", lambda rng: gradcheck.check_loss(
        losses.BinaryCrossEntropyWithLogits(), rng.standard_normal((5, 3)),
        rng.uniform(0, 1, (5, 3)))


def _regularizer_cases() -> Iterator[Case]:
    def run(regularizer):
        def check(rng):
            params = [nn.Parameter(rng.standard_normal((4, 3)), "weight"),
                      nn.Parameter(rng.standard_normal(4), "bias", regularize=False)]
            return gradcheck.check_regularizer(regularizer, params)
        return check

    yield "regularizer", "L2", run(regularizers.L2(0.1))
    yield "regularizer", "L1", run(regularizers.L1(0.1))
    yield "regularizer", "ElasticNet", run(regularizers.ElasticNet(0.1, 0.5))


def cases() -> list[Case]:
    """(kind, name, check(rng) → GradcheckResult) for every built-in component."""
    return [*_module_cases(), *_loss_cases(), *_regularizer_cases()]


def run(seed: int = 0) -> list[tuple[str, str, gradcheck.GradcheckResult]]:
    """Run every case in float64 with a generator seeded by ``seed``."""
    results = []
    with default_dtype(numpy.float64):
        for kind, name, check in cases():
            results.append((kind, name, check(numpy.random.default_rng(seed))))
    return results
