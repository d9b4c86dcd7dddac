"""Graph: a flow graph (DAG) of named boxes — fprop in topological order, bprop in reverse.

Each box is a Module whose inputs are named values: the graph's inputs or
other boxes' outputs. Where a value feeds several boxes, bprop sums the
gradients that come back to it (the multivariate chain rule), which is what
residual and inception blocks need; the sum runs in lanes of elements as
``Add``'s does (``merge.sum_of``; ResNet-20 at 2 threads, paired steps: 540 →
519 ms).

One module may be the module of several boxes (weight sharing, e.g. a siamese
network): each box keeps its own forward cache (``Module.cache_state``), and
the parameter gradients of all its boxes add up. A graph input that the output
does not depend on gets a zero gradient (as torch's autograd with
``materialize_grads``).

A ``ReLU`` box whose input is a box that nothing else reads (and that is not the
output) is offered to that box (``Module.forward_relu``): an ``Add`` then sums and
rectifies in one pass, and masks the gradient in its own bprop — a residual block's
``relu(x + F(x))``, bit for bit the two boxes' values, one pass over the sum fewer
(``tests/nn/test_relu_fusion.py``). A box that declines, or a hooked ``forward``,
leaves the ReLU box to run as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.activations import ABSORBED, absorbs_relu
from ermlab.nn.merge import sum_of
from ermlab.nn.module import Module


class Graph(Module):
    """A directed acyclic graph of Modules with one output.

    Example — a residual block, y = relu(x + W₂ relu(W₁ x)):
        >>> from ermlab import nn
        >>> g = nn.Graph(inputs="x")
        >>> g.add("fc1", nn.Linear(8, 8), "x").add("act1", nn.ReLU(), "fc1")
        >>> g.add("fc2", nn.Linear(8, 8), "act1").add("sum", nn.Add(), ["fc2", "x"])
        >>> g.add("out", nn.ReLU(), "sum").set_output("out")

    A box with several inputs (``Add``, ``Concatenate``) receives them as
    positional arguments in ``forward`` and returns one gradient per input from
    ``backward``.

    Weight sharing — one encoder applied to two inputs:
        >>> encoder = nn.Linear(8, 4)
        >>> siamese = nn.Graph(inputs=["a", "b"])
        >>> siamese.add("ea", encoder, "a").add("eb", encoder, "b")
        >>> siamese.add("sum", nn.Add(), ["ea", "eb"]).set_output("sum")
    """

    forward_cache = ("_sites", "_inputs_like")

    def __init__(self, inputs: str | Sequence[str] = "x", output: str | None = None) -> None:
        super().__init__()
        names = [inputs] if isinstance(inputs, str) else list(inputs)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Graph inputs must be distinct names; got {names}")
        object.__setattr__(self, "input_names", names)
        object.__setattr__(self, "edges", {})
        object.__setattr__(self, "output_name", output)
        object.__setattr__(self, "_order", None)
        object.__setattr__(self, "_followers", None)

    def add(self, name: str, module: Module, inputs: str | Sequence[str]) -> Graph:
        """Add box ``name`` computing ``module(*inputs)``; returns the graph for chaining."""
        if not isinstance(module, Module):
            raise TypeError(f"Graph box {name!r} must be a Module; got {type(module).__name__}")
        if name in self.edges or name in self.input_names:
            raise ValueError(f"Graph already has a value named {name!r}")
        if hasattr(type(self), name) or name in self.__dict__ or not name.isidentifier():
            raise ValueError(
                f"Graph box name {name!r} is not usable: pick an identifier that is not a "
                "Graph attribute"
            )
        self.edges[name] = [inputs] if isinstance(inputs, str) else list(inputs)
        setattr(self, name, module)
        object.__setattr__(self, "_order", None)
        object.__setattr__(self, "_followers", None)
        return self

    def set_output(self, name: str) -> Graph:
        object.__setattr__(self, "output_name", name)
        object.__setattr__(self, "_order", None)
        object.__setattr__(self, "_followers", None)
        return self

    def order(self) -> list[str]:
        """The boxes the output depends on, in topological order (Kahn's algorithm)."""
        if self._order is None:
            object.__setattr__(self, "_order", self._topological_order())
        return self._order

    def _topological_order(self) -> list[str]:
        if self.output_name is None:
            raise ValueError("Graph has no output: call set_output(name)")
        known = set(self.edges) | set(self.input_names)
        for name, inputs in self.edges.items():
            unknown = [i for i in inputs if i not in known]
            if unknown:
                raise ValueError(f"Graph box {name!r} reads undefined values {unknown}")
        if self.output_name not in known:
            raise ValueError(f"Graph output {self.output_name!r} is not a box or an input")
        needed, stack = set(), [self.output_name]
        while stack:
            value = stack.pop()
            if value in self.edges and value not in needed:
                needed.add(value)
                stack.extend(self.edges[value])
        pending = {n: sum(i in needed for i in set(self.edges[n])) for n in needed}
        ready = [n for n in self.edges if n in needed and pending[n] == 0]
        order = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for other in self.edges:
                if other in needed and name in self.edges[other]:
                    pending[other] -= 1
                    if pending[other] == 0:
                        ready.append(other)
        if len(order) != len(needed):
            cycle = sorted(needed - set(order))
            raise ValueError(f"Graph has a cycle through boxes {cycle}")
        return order

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"Graph expects {len(self.input_names)} inputs {self.input_names}; "
                f"got {len(inputs)}"
            )
        if self.training:
            self._sites = None  # the last pass's caches go as this pass's replace them
        values = dict(zip(self.input_names, inputs))
        sites: dict[str, Any] = {}
        followers = self._relu_followers()
        for name in self.order():
            if sites.get(name) is ABSORBED:  # its value was set by the box before it
                continue
            module = self._modules[name]
            args = [values[i] for i in self.edges[name]]
            follower = followers.get(name)
            y = None
            if follower is not None and absorbs_relu(module, self._modules[follower]):
                y = module.forward_relu(*args)
            if y is None:
                values[name] = module.forward(*args)
            else:  # the ReLU box ran inside this one: no cache, no bprop of its own
                values[follower] = y
                sites[follower] = ABSORBED
            sites[name] = module.cache_state()
        if self.training:
            self._sites, self._inputs_like = sites, [(x.shape, x.dtype) for x in inputs]
        return values[self.output_name]

    def _relu_followers(self) -> dict[str, str]:
        """box → the ReLU box that is its only reader (and reads nothing else), for boxes
        that are not the output: the pairs a box may run as one (``Module.forward_relu``)."""
        order = self.order()
        if self._followers is None:
            readers: dict[str, list[str]] = {}
            for name in order:
                for value in set(self.edges[name]):
                    readers.setdefault(value, []).append(name)
            pairs = {}
            for name in order:
                only = readers.get(name, [])
                if (len(only) == 1 and name != self.output_name
                        and self.edges[only[0]] == [name]):
                    pairs[name] = only[0]
            object.__setattr__(self, "_followers", pairs)
        return self._followers

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        sites = self._cached("_sites")
        self._sites = None  # each box's cache let go once its bprop is done (see Module)
        grads: dict[str, Any] = {self.output_name: grad_out}
        for name in reversed(self.order()):
            grad = grads.pop(name, None)
            if grad is None:
                continue
            inputs = self.edges[name]
            if sites[name] is ABSORBED:  # the box before applies this ReLU's bprop
                grads[inputs[0]] = grad
                continue
            wanted = [i in self.edges or input_grad for i in inputs]
            module = self._modules[name]
            module.restore_cache(sites[name])
            sites[name] = None
            back = module.backward(grad, input_grad=any(wanted))
            module.release_cache()
            del grad
            if back is None:  # no input needs a gradient (input_grad=False upstream)
                continue
            if len(inputs) == 1:
                back = (back,)
            for value, want, g in zip(inputs, wanted, back):
                if want and g is not None:
                    grads[value] = g if value not in grads else sum_of((grads[value], g))
        if not input_grad:
            return None
        xp = array_module(grad_out)
        result = tuple(
            grads[name] if name in grads else xp.zeros(shape, dtype=dtype)
            for name, (shape, dtype) in zip(self.input_names, self._cached("_inputs_like"))
        )
        return result[0] if len(result) == 1 else result

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, output={self.output_name!r}"
