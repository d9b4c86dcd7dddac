"""Sequential: a chain of boxes, f(x) = f_L(... f_2(f_1(x)))."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ermlab.nn.activations import ABSORBED, absorbs_relu
from ermlab.nn.module import Module


class Sequential(Module):
    """Apply modules in order; bprop runs them in reverse.

    ``backward(grad, input_grad=False)`` passes the flag to the first module,
    so the gradient with respect to the data is never computed when nothing
    needs it.

    A module may appear several times (weight sharing): the forward cache of
    each position is kept (``cache_state``) and put back before that
    position's bprop, so the parameter gradients of all positions add up.

    A ``ReLU`` right after a module that can apply it in its own pass
    (``forward_relu``: ``Linear`` and ``BatchNorm2d`` on their compiled kernels,
    ``Conv2d`` on Winograd or direct sums) is run by that module: the same values bit for
    bit, without the ReLU's own passes (the module masks the gradient in its
    own bprop). Where the module cannot (``forward_relu`` returns None), or
    either module's ``forward`` is replaced on the instance (a hook, as
    ``summary`` sets), the ReLU runs as usual.

    Example:
        >>> from ermlab import nn
        >>> model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
        >>> layer = nn.Linear(8, 8)
        >>> shared = nn.Sequential(layer, nn.Tanh(), layer)     # W used twice
    """

    forward_cache = ("_sites",)

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential takes Modules; argument {index} is {type(module).__name__}"
                )
            setattr(self, str(index), module)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def append(self, module: Module) -> Sequential:
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x: Any) -> Any:
        if self.training:
            self._sites = None  # the last pass's caches go as this pass's replace them
        modules = list(self._modules.values())
        sites = []
        depth = 0
        while depth < len(modules):
            module = modules[depth]
            y = None
            if depth + 1 < len(modules) and absorbs_relu(module, modules[depth + 1]):
                y = module.forward_relu(x)
            if y is None:
                x = module.forward(x)
                sites.append(module.cache_state())
                depth += 1
            else:  # the ReLU ran inside ``module``: no cache, no bprop of its own
                x = y
                sites += [module.cache_state(), ABSORBED]
                depth += 2
        if self.training:
            self._sites = sites
        return x

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        sites = self._cached("_sites")
        self._sites = None  # each box's cache let go once its bprop is done (see Module)
        modules = list(self._modules.values())
        for depth in range(len(modules) - 1, -1, -1):
            if sites[depth] is ABSORBED:
                continue
            module = modules[depth]
            module.restore_cache(sites[depth])
            sites[depth] = None
            grad_out = (module.backward(grad_out) if depth else
                        module.backward(grad_out, input_grad=input_grad))
            module.release_cache()
        return grad_out if modules or input_grad else None

