"""Stochastic gradient descent, with torch's momentum and Nesterov forms."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ermlab.nn.parameter import Parameter
from ermlab.optim.base import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent (Robbins & Monro 1951), torch.optim.SGD's form.

    With g = ∇θ + λθ (``weight_decay`` λ, coupled L2):

        no momentum:  θ ← θ − γ g
        momentum μ:   v ← μ v + (1 − τ) g   (v₁ = g: no dampening τ on the first step)
                      θ ← θ − γ v                    (heavy ball)
                      θ ← θ − γ (g + μ v)            (``nesterov=True``)

    Args:
        params: Parameters or param-group dicts.
        lr: learning rate γ (required, as in torch).
        momentum: μ ∈ [0, 1), default 0.
        dampening: τ, default 0.
        weight_decay: λ ≥ 0, default 0.
        nesterov: Nesterov momentum (needs μ > 0 and τ = 0), default False.

    Warning: many texts write momentum as v ← μv + γg, θ ← θ − v (γ inside the
    buffer). The two agree while γ is constant and differ once it is scheduled.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); model.backward(loss.backward()); opt.step()
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        if not 0 <= group["momentum"] < 1:
            raise ValueError(f"SGD momentum must be in [0, 1); got {group['momentum']}")
        if group["weight_decay"] < 0:
            raise ValueError(f"SGD weight_decay must be ≥ 0; got {group['weight_decay']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD nesterov=True needs momentum > 0 and dampening = 0")

    def update(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> None:
        g = param.grad
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = g + wd * param.data
        if mu:
            v = state.get("momentum_buffer")
            if v is None:
                v = state["momentum_buffer"] = g.copy()
            else:
                v *= mu
                v += (1 - group["dampening"]) * g
            g = g + mu * v if group["nesterov"] else v
        param.data -= lr * g
