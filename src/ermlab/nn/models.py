"""Model builders: ``mlp`` here, and the convolutional zoo of ``ermlab.nn.zoo`` re-exported.

``MODELS`` maps a name (``"lenet5"``, ``"vgg16"``, ``"resnet20"``…) to its builder
``builder(num_classes, input_shape, ...)``; ``build(name, num_classes, input_shape)``
is the checked entry point that ``ermlab train --model NAME`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ermlab.backend import as_generator
from ermlab.nn import activations
from ermlab.nn.linear import Linear
from ermlab.nn.normalization import BatchNorm1d
from ermlab.nn.sequential import Sequential
from ermlab.nn.stochastic import Dropout
from ermlab.nn.zoo import (
    MODELS,
    alexnet,
    build,
    googlenet,
    lenet5,
    resnet,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet50,
    resnet56,
    resnet_cifar,
    resnext50_32x4d,
    small_vgg,
    vgg,
    vgg11,
    vgg16,
    vgg19,
)

__all__ = [
    "MODELS", "alexnet", "build", "googlenet", "lenet5", "mlp", "resnet", "resnet18",
    "resnet20", "resnet32", "resnet34", "resnet50", "resnet56", "resnet_cifar",
    "resnext50_32x4d", "small_vgg", "vgg", "vgg11", "vgg16", "vgg19",
]


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    weight_init: Any = None,
    batch_norm: bool = False,
    dropout: float = 0.0,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """A multilayer perceptron: Linear → activation → … → Linear (scores, no output activation).

    ``sizes`` lists the layer widths from input to output, e.g. ``[784, 512, 256, 10]``.
    ``weight_init`` defaults to He initialization for ReLU-like activations and
    Glorot otherwise. Each hidden layer is Linear → [BatchNorm1d] → activation →
    [Dropout(p)]: batch norm before the nonlinearity as in Ioffe & Szegedy (2015),
    ``dropout`` the drop probability p. Pair the scores with
    ``losses.SoftmaxCrossEntropy``. A ReLU right after a Linear runs in place
    (``ReLU(inplace=True)``: the Linear keeps its input, not its output).
    """
    sizes = [int(size) for size in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp needs at least two positive layer sizes; got {sizes}")
    activations.get(activation)  # fail early on an unknown name
    if weight_init is None:
        relu_like = activation in ("relu", "leaky_relu", "elu")
        weight_init = "he_uniform" if relu_like else "glorot_uniform"
    if not 0 <= dropout < 1:
        raise ValueError(f"mlp dropout is the drop probability, in [0, 1); got {dropout}")
    rng = as_generator(rng)
    layers = []
    for depth, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(fan_in, fan_out, weight_init=weight_init, rng=rng, dtype=dtype))
        if depth < len(sizes) - 2:
            if batch_norm:
                layers.append(BatchNorm1d(fan_out, dtype=dtype))
            act = activations.get(activation)
            if isinstance(act, activations.ReLU) and not batch_norm:  # Linear keeps no output
                act.inplace = True
            layers.append(act)
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
    return Sequential(*layers)
