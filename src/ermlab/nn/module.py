"""Module: a box of the flow graph, with a forward pass (fprop) and a backward pass (bprop).

The contract, after Torch7's ``nn.Module``:

* ``forward(x)`` (also ``module(x)``) computes the output. In training mode it
  keeps only what ``backward`` needs.
* ``backward(grad_out)`` receives ∂L/∂output and does two things, which a
  subclass writes separately:

  - ``accumulate_grad(grad_out)``: *add* ∂L/∂θ into each parameter's ``grad``
    (Torch7's ``accGradParameters``);
  - ``grad_input(grad_out)``: return ∂L/∂input (Torch7's ``updateGradInput``).

  ``backward(grad_out, input_grad=False)`` skips the second step: nothing
  needs the gradient with respect to the data, so a container passes it to
  its first box (a quarter of an MLP's matrix work).

The forward cache. What ``forward`` keeps for ``backward`` is the module's
*forward cache*: the instance attributes named in the class attribute
``forward_cache`` (``Linear.forward_cache = ("_x",)``). In training mode
``forward`` binds each of them to a fresh value (it never modifies an earlier
cache in place), and ``backward`` reads them with ``self._cached(name)``,
which refuses a name that is not declared. State that must outlive a call —
parameters, buffers such as batch-norm running statistics, random generators,
frozen masks, counters, reusable scratch buffers — is never part of the cache.

Weight sharing. ``cache_state()`` returns the cache (one tuple) and
``restore_cache(state)`` binds it back. Every module that calls other modules
(``Sequential``, ``Graph``, ``Maxout``, ``StochasticDepth``) takes the callee's
``cache_state()`` right after each training-mode forward call and restores it
right before the matching backward call, and keeps these per-call snapshots in
its own forward cache. So one module may be called at several places — twice
in one Sequential, in two boxes of a Graph, inside two different containers,
nested to any depth: each call site keeps its own cache, bprop adds the
parameter gradients of all sites, ∂L/∂θ = Σ_sites ∂L/∂θ|_site, and a shared
parameter is listed once by ``parameters()``.

Caches are let go as soon as nothing needs them, as PyTorch frees a node's saved tensors.
A container's bprop lets each call site's cache go once that site's bprop is done (its
snapshot, and the callee's binding: ``release_cache``), so the caches of the boxes bprop
has passed are freed while it runs on; a container's forward pass therefore serves one
backward (a second is a clear error: run forward again). A forward pass without a
backward leaves nothing behind either: a container drops its snapshots of the last pass
as its training-mode forward starts, each module's own cache going as that module's
forward binds the new one, so two passes' caches are never held whole at once. Measured
(``benchmarks/memory.py``, 2 threads): the small VGG at batch 1024 peaked at 1712 MiB
with every cache kept to the end of the next forward, the CIFAR ResNet-18 at batch 128
at 1971 MiB; see the benchmark's docstring for the figures after.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ermlab.backend import array_module, to_numpy
from ermlab.nn.parameter import Parameter


class Module:
    """Base class of every layer, activation and container.

    Parameters and submodules assigned as attributes are registered
    automatically, in assignment order. Buffers (state that is saved but not
    trained, like batch-norm running averages) are registered with
    ``register_buffer``. ``forward_cache`` names the attributes that make up
    the forward cache (see the module docstring).
    """

    forward_cache: tuple[str, ...] = ()

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        own = self.__dict__
        parameters, modules = own.get("_parameters"), own.get("_modules")
        if parameters is None or modules is None:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() "
                "before assigning attributes"
            )
        # a layer's forward cache (arrays, set at every pass) goes straight to the
        # instance: 0.34 µs where registering took 0.56
        if name in parameters or name in modules or isinstance(value, (Parameter, Module)):
            parameters.pop(name, None)
            modules.pop(name, None)
            if isinstance(value, Parameter):
                if not value.name:
                    value.name = name
                parameters[name] = value
            elif isinstance(value, Module):
                modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: Any) -> None:
        """Register a non-trainable array saved in ``state_dict`` (e.g. running means)."""
        self._buffers[name] = True
        object.__setattr__(self, name, array)

    # -- the two passes -------------------------------------------------------

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def __call__(self, *inputs: Any) -> Any:
        return self.forward(*inputs)

    def forward_relu(self, *inputs: Any) -> Any:
        """max(forward(*inputs), 0) in this module's own pass, or None where it has none (the
        default). ``Sequential`` and ``Graph`` ask it of a box whose only reader is a
        ``ReLU``; a module that answers also applies the ReLU's bprop, G·1_{y > 0}, in its
        own ``backward``, and the ReLU is not called."""
        return None

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        """bprop: accumulate parameter gradients, then return ∂L/∂input.

        With ``input_grad=False`` only the parameter gradients are computed and
        ``None`` is returned.
        """
        self.accumulate_grad(grad_out)
        return self.grad_input(grad_out) if input_grad else None

    def accumulate_grad(self, grad_out: Any) -> None:
        """Add ∂L/∂θ into each parameter's ``grad``. Modules without parameters do nothing."""

    def grad_input(self, grad_out: Any) -> Any:
        """Return ∂L/∂input given ∂L/∂output."""
        raise NotImplementedError(f"{type(self).__name__} does not implement grad_input")

    def cache_state(self) -> tuple:
        """The forward cache: the values of the attributes named in ``forward_cache``. A
        container's serves one backward, as its forward pass does: its bprop lets the
        callees' caches go (see the module docstring)."""
        return tuple(map(self.__dict__.get, self.forward_cache))

    def restore_cache(self, state: tuple) -> None:
        """Bind the forward cache back to ``state``, a value of ``cache_state()``."""
        self.__dict__.update(zip(self.forward_cache, state))

    def release_cache(self) -> None:
        """Let the forward cache go (each name bound to None, as before any forward): what
        a container does once a call site's bprop is done (see the module docstring)."""
        self.__dict__.update(dict.fromkeys(self.forward_cache))

    def _cached(self, name: str) -> Any:
        """The value ``forward`` cached under ``name``; a clear error when there is none.

        In evaluation mode there is no cache to use (forward keeps nothing), so
        an earlier training-mode cache is never used for a later eval-mode pass.
        """
        if name not in self.forward_cache:
            raise TypeError(
                f"{type(self).__name__} reads {name!r} in backward but does not list it in "
                f"{type(self).__name__}.forward_cache; add it there so that every call site "
                "keeps its own cache"
            )
        value = self.__dict__.get(name) if self.training else None
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a forward pass in training "
                "mode, or a second time after one (a container's forward pass serves one "
                "backward): call model.train() and forward(x) before each backward(grad)"
            )
        return value

    # -- parameters and submodules ------------------------------------------

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_modules(
        self, prefix: str = "", _seen: set[int] | None = None
    ) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) pairs, depth first; a module used at several places
        appears once, under its first name."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, seen)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a parameter shared by two boxes appears once."""
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        for module_name, module in self.named_modules():
            for name in module._buffers:
                yield (f"{module_name}.{name}" if module_name else name), getattr(module, name)

    def num_parameters(self) -> int:
        return sum(param.size for param in self.parameters())

    def summary(self, input_shape: Any, **options: Any) -> Any:
        """Per-layer output shapes, parameters and activation memory; see ``ermlab.nn.summary``."""
        from ermlab.nn.summary import summary

        return summary(self, input_shape, **options)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    # -- modes ------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Training mode: forward caches for backward, stochastic layers draw noise."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: no caches, deterministic test-time behaviour."""
        return self.train(False)

    # -- state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Copies of every parameter and buffer as NumPy arrays, by dotted name."""
        state = {name: to_numpy(param.data).copy() for name, param in self.named_parameters()}
        state.update({name: to_numpy(buf).copy() for name, buf in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy arrays from ``state`` into the parameters and buffers, in place.

        Every entry is checked before anything is copied: ``ValueError`` names missing or
        unexpected keys and shape mismatches, ``TypeError`` a value that is not an array
        (a list, a number), and a failed load leaves the module as it was. Each value is
        cast to the dtype of the array it is copied into, as ``torch.nn.Module`` does: a
        float64 state loads into a float32 model as float32.
        """
        params = dict(self.named_parameters())
        buffers = {name: (module, local) for name, module, local in self._buffer_owners()}
        expected = set(params) | set(buffers)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"state_dict does not match {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        targets = {
            name: params[name].data if name in params else getattr(*buffers[name])
            for name in state
        }
        for name, value in state.items():
            if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                raise TypeError(
                    f"state_dict entry {name!r} is a {type(value).__name__}, not an array; "
                    "pass arrays, e.g. numpy.asarray(value), as state_dict() returns them"
                )
            if tuple(value.shape) != tuple(targets[name].shape):
                raise ValueError(
                    f"state_dict entry {name!r} has shape {tuple(value.shape)}; "
                    f"the model expects {tuple(targets[name].shape)}"
                )
        for name, value in state.items():
            target = targets[name]
            target[...] = array_module(target).asarray(value, dtype=target.dtype)

    def _buffer_owners(self) -> Iterator[tuple[str, Module, str]]:
        for module_name, module in self.named_modules():
            for name in module._buffers:
                yield (f"{module_name}.{name}" if module_name else name), module, name

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
