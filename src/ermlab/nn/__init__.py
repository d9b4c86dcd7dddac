"""Modules: boxes with fprop and bprop, and the containers that compose them."""

from ermlab.nn import init
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
from ermlab.nn.graph import Graph
from ermlab.nn.linear import Flatten, Identity, Linear
from ermlab.nn.merge import Add, Concatenate
from ermlab.nn.models import mlp
from ermlab.nn.module import Module
from ermlab.nn.parameter import Parameter
from ermlab.nn.sequential import Sequential

__all__ = [
    "ACTIVATIONS",
    "Add",
    "Concatenate",
    "ELU",
    "Flatten",
    "Graph",
    "Identity",
    "LeakyReLU",
    "Linear",
    "Maxout",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "init",
    "mlp",
]
