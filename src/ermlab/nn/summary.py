"""``summary(model, input_shape)``: per-layer output shapes, parameter counts and activation memory.

One forward pass on zeros of shape (batch_size, *input_shape), in evaluation mode,
records the output of every leaf module in the order the layers run — like the seeds'
VGG-16 table, where each line reads

    CONV3-64: [224x224x64]  memory: 224*224*64 = 3.2M   weights: (3*3*3)*64 = 1,728

A leaf is a module call during which none of the module's submodules ran: a module
without submodules, or a wrapper that computes its output from its children's
parameters itself (``DropConnect`` uses its ``Linear``'s weight and bias and never calls
it). Its row holds its own parameters and those of its submodules not yet counted, so
the rows' parameters add up to ``total_params`` (each shared parameter counted once).
A module with parameters of its own gets a row too, after those of the submodules it
ran.

Columns: the dotted name and type of the layer, its output shape per example
(without the batch axis), its parameters (weights and biases), its *weights* alone
(the parameters marked ``regularize=True``: connection weights, without biases or
batch-norm γ, β — the seeds count these), and the values and bytes of its output per
example.

Two activation totals are given, both per example and for the forward pass only (the
backward pass needs about as much again for the gradients):

* ``total_activations`` — the input plus every layer's output;
* ``stored_activations`` — without the outputs of element-wise activations and
  dropout (frameworks run these in place) and of reshapes (views): the seeds' count,
  which lists the input, each CONV, POOL and FC output. For VGG-16 on 224×224×3 this
  is 15,237,608 values (58.1 MiB in float32), exactly the sum of the seeds' per-layer
  lines; the seeds' stated total "24M × 4 bytes ≈ 93MB" does not match the sum of its
  own lines (counting every ReLU output too gives 28.8M).

Where frameworks differ: Keras' ``model.summary()`` and torchinfo count weights and
biases together, as ``params`` does here; the seeds' table and ``weights`` omit biases
(VGG-16: 138,357,544 parameters, 138,344,128 weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ermlab.backend import array_module, resolve_dtype
from ermlab.nn import activations
from ermlab.nn.linear import Flatten, Identity
from ermlab.nn.module import Module
from ermlab.nn.stochastic import Dropout

#: Layers whose output a framework need not store separately (in-place or views).
IN_PLACE = (
    activations.ReLU, activations.LeakyReLU, activations.ELU, activations.Sigmoid,
    activations.Tanh, activations.Softplus, Flatten, Identity, Dropout,
)


@dataclass
class LayerSummary:
    """One row: a leaf module's output for one forward call."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    weights: int
    activations: int
    nbytes: int
    in_place: bool


@dataclass
class ModelSummary:
    """The table ``summary`` returns; ``str(summary)`` prints it."""

    input_shape: tuple[int, ...]
    dtype: Any
    batch_size: int
    rows: list[LayerSummary] = field(default_factory=list)
    total_params: int = 0
    total_weights: int = 0

    @property
    def input_values(self) -> int:
        return math.prod(self.input_shape)

    @property
    def total_activations(self) -> int:
        """Values per example in the input and every layer output."""
        return self.input_values + sum(row.activations for row in self.rows)

    @property
    def stored_activations(self) -> int:
        """Values per example without in-place activations and views (the seeds' count)."""
        return self.input_values + sum(row.activations for row in self.rows if not row.in_place)

    def row(self, name: str) -> LayerSummary:
        """The first row of the layer called ``name`` (e.g. ``"classifier.0"``)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r}; layers: {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        itemsize = self.dtype.itemsize
        header = f"{'Layer (type)':<40} {'Output shape':<18} {'Params':>12} {'Weights':>12} " \
                 f"{'Activations':>12} {'Memory':>10}"
        rule = "=" * len(header)
        lines = [header, rule]
        for r in self.rows:
            lines.append(
                f"{r.name + ' (' + r.type + ')':<40} {str(r.output_shape):<18} {r.params:>12,} "
                f"{r.weights:>12,} {r.activations:>12,} {_bytes(r.nbytes):>10}"
            )
        total, stored = self.total_activations, self.stored_activations
        lines += [
            rule,
            f"Input {self.input_shape}, {self.dtype.name}; memory per example, forward pass only",
            f"Total params: {self.total_params:,} (weights {self.total_weights:,}; biases and "
            f"other {self.total_params - self.total_weights:,})",
            f"Parameter memory: {_bytes(self.total_params * itemsize)}",
            f"Activations, every output and the input: {total:,} values "
            f"({_bytes(total * itemsize)})",
            f"Activations stored (in-place activations and views excluded): {stored:,} values "
            f"({_bytes(stored * itemsize)})",
        ]
        return "\n".join(lines)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def summary(model: Module, input_shape: Sequence[int], batch_size: int = 1,
            dtype: Any = None) -> ModelSummary:
    """Run ``model`` on zeros of shape (batch_size, *input_shape) in evaluation mode and
    tabulate every leaf module's output (see the module docstring).

    ``dtype`` defaults to the dtype of the model's parameters. The model's
    training/evaluation modes are restored afterwards; no forward cache is kept.

    Example:
        >>> print(ermlab.nn.zoo.vgg16().summary((3, 224, 224)))
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(
            f"summary needs the shape of one example without the batch axis, e.g. (3, 32, 32); "
            f"got {tuple(input_shape)}"
        )
    params = model.parameters()
    dtype = params[0].dtype if params and dtype is None else resolve_dtype(dtype)
    xp = array_module(*(p.data for p in params[:1]))
    result = ModelSummary(shape, dtype, int(batch_size))
    result.total_params = sum(p.size for p in params)
    result.total_weights = sum(p.size for p in params if p.regularize)
    counted: set[int] = set()
    names = {id(module): name or type(module).__name__ for name, module in model.named_modules()}
    running: list[list[bool]] = []  # per hooked call on the stack: did a submodule run in it?

    def record(module: Module, output: Any) -> None:
        own = [p for p in module.parameters() if id(p) not in counted]
        counted.update(id(p) for p in own)
        out_shape = tuple(getattr(output, "shape", ()))[1:]
        values = math.prod(out_shape)
        result.rows.append(LayerSummary(
            names[id(module)], type(module).__name__, out_shape, sum(p.size for p in own),
            sum(p.size for p in own if p.regularize), values,
            values * getattr(output, "itemsize", dtype.itemsize), isinstance(module, IN_PLACE),
        ))

    def hooked(module: Module, forward: Any):
        def forward_and_record(*inputs: Any) -> Any:
            if running:
                running[-1][0] = True
            running.append([False])
            try:
                output = forward(*inputs)
            finally:
                submodule_ran = running.pop()[0]
            if not submodule_ran or module._parameters:
                record(module, output)
            return output

        return forward_and_record

    modes = {id(m): m.training for m in model.modules()}
    missing = object()
    hooks = {id(m): (m, m.__dict__.get("forward", missing)) for m in model.modules()}
    try:
        model.eval()
        for module, _ in hooks.values():
            object.__setattr__(module, "forward", hooked(module, module.forward))
        model.forward(xp.zeros((result.batch_size, *shape), dtype=dtype))
    finally:
        for module, before in hooks.values():  # exactly what was there: a user's hook stays
            if before is missing:
                module.__dict__.pop("forward", None)
            else:
                object.__setattr__(module, "forward", before)
        for module in model.modules():
            object.__setattr__(module, "training", modes[id(module)])
    return result
