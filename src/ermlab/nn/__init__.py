"""Modules: boxes with fprop and bprop, and the containers that compose them.

Importing it sets glibc's malloc thresholds for training steps (``ermlab._malloc``;
``ERMLAB_MALLOC=0`` leaves them)."""

from ermlab import _malloc
from ermlab.nn import init, summary, zoo
from ermlab.nn.activations import (
    ACTIVATIONS,
    ELU,
    LeakyReLU,
    Maxout,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from ermlab.nn.blocks import BasicBlock, Bottleneck, InceptionModule, ResNeXtBlock
from ermlab.nn.conv import Conv2d
from ermlab.nn.fractional_pooling import FractionalMaxPool2d
from ermlab.nn.graph import Graph
from ermlab.nn.linear import Flatten, Identity, Linear
from ermlab.nn.lrn import LocalResponseNorm
from ermlab.nn.merge import Add, Concatenate
from ermlab.nn.models import mlp
from ermlab.nn.module import Module
from ermlab.nn.normalization import BatchNorm1d, BatchNorm2d
from ermlab.nn.parameter import Parameter
from ermlab.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from ermlab.nn.sequential import Sequential
from ermlab.nn.stochastic import (
    DropConnect,
    Dropout,
    GaussianNoise,
    StochasticDepth,
    frozen_masks,
    linear_decay,
    residual_block,
    use_generator,
)

_malloc.configure()

__all__ = [
    "ACTIVATIONS",
    "Add",
    "AvgPool2d",
    "BasicBlock",
    "Bottleneck",
    "BatchNorm1d",
    "BatchNorm2d",
    "Concatenate",
    "Conv2d",
    "DropConnect",
    "Dropout",
    "ELU",
    "Flatten",
    "FractionalMaxPool2d",
    "GaussianNoise",
    "GlobalAvgPool2d",
    "Graph",
    "Identity",
    "InceptionModule",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "Maxout",
    "Module",
    "Parameter",
    "ReLU",
    "ResNeXtBlock",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "StochasticDepth",
    "Tanh",
    "frozen_masks",
    "init",
    "summary",
    "linear_decay",
    "mlp",
    "residual_block",
    "use_generator",
    "zoo",
]
