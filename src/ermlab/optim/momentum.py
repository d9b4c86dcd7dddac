"""Momentum methods from the optimization literature: heavy ball, Nesterov's NAG-C and NAG-SC.

These are the deterministic methods as the papers state them, for convex
problems with known constants (step s = 1/L, strong convexity μ); torch has
none of them under these names (``SGD(momentum=...)`` is the stochastic heavy
ball in a different parametrisation, see ``optim.sgd``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.parameter import Parameter
from ermlab.optim.inplace import Block, InPlaceOptimizer
from ermlab.optim.traits import Traits


class HeavyBall(InPlaceOptimizer):
    """Polyak's heavy-ball method (Polyak 1964, "Some methods of speeding up the
    convergence of iteration methods", eq. (9)):

        θ_{k+1} = θ_k − α ∇f(θ_k) + β (θ_k − θ_{k−1}),      θ_{−1} = θ_0.

    It is ``SGD(momentum_form="classic")`` written with the previous iterate in
    place of the velocity (v_k = θ_{k−1} − θ_k), so the state is θ_{k−1}
    (``state["previous"]``), which does not decay and needs no subnormal flush.

    Args:
        params: Parameters or param-group dicts.
        lr: step α ≥ 0 (required).
        momentum: β ∈ [0, 1), default 0.9.

    Example:
        >>> opt = HeavyBall(model.parameters(), lr=0.01, momentum=0.9)
    """

    fused_rule = True  # optim._kernels updates it in one pass

    traits = Traits(
        first_moment=True, second_moment=False, leaky_average=True, bias_correction=False,
        update="θ ← θ − α∇f(θ) + β(θ − θ_prev)", reference="Polyak 1964")

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum), flush_every=0)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_unit_interval(group, "momentum")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "previous": param.data.copy()}

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: None,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.heavy_ball``), rounded as the passes of ``update_block``."""
        return kernels.heavy_ball, (dtype.type(group["momentum"]), dtype.type(group["lr"]))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["previous"]

    def update_block(self, block: Block, group: dict[str, Any], scalars: None) -> None:
        xp = array_module(block.data)
        previous = block.state["previous"]
        d = xp.subtract(block.data, previous, out=block.scratch(0))
        d *= group["momentum"]
        d -= xp.multiply(block.grad, group["lr"], out=block.scratch(1))
        previous[...] = block.data
        block.data += d


class _NesterovScheme(InPlaceOptimizer):
    """x_k = y_{k−1} − s ∇f(y_{k−1}),  y_k = x_k + c_k (x_k − x_{k−1}); y_0 = x_0.

    ``param.data`` holds y (where the gradient is taken); the iterate x_k whose
    value the convergence bounds speak of is ``state["x"]``.
    """

    fused_rule = True  # optim._kernels updates it in one pass

    traits = None  # a base class, not an optimizer of its own (see optim.traits)

    def coefficient(self, group: dict[str, Any], k: int) -> float:
        raise NotImplementedError

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "x": param.data.copy()}

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> float:
        return self.coefficient(group, state["step"])

    def fused_kernel(self, kernels: Any, group: dict[str, Any], coefficient: float,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.nesterov_scheme``), rounded as the passes of
        ``update_block``."""
        return kernels.nesterov_scheme, (dtype.type(-group["lr"]), dtype.type(coefficient))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["x"]

    def update_block(self, block: Block, group: dict[str, Any], coefficient: float) -> None:
        xp = array_module(block.data)
        x_new = xp.multiply(block.grad, -group["lr"], out=block.scratch(0))
        x_new += block.data
        d = xp.subtract(x_new, block.state["x"], out=block.scratch(1))
        d *= coefficient
        block.state["x"][...] = x_new
        xp.add(x_new, d, out=block.data)


class NAGC(_NesterovScheme):
    """Nesterov's accelerated gradient for convex f with L-Lipschitz gradient (NAG-C).

    Nesterov (1983), in the indexing of Su, Boyd & Candès (2016, JMLR 17, eq. (3)),
    which is FISTA without the proximal step (Beck & Teboulle 2009) up to the
    momentum sequence:

        x_k = y_{k−1} − s ∇f(y_{k−1})
        y_k = x_k + (k − 1)/(k + 2) · (x_k − x_{k−1}),     k = 1, 2, …,  y_0 = x_0,

    so the first step is plain gradient descent (coefficient 0). With s ≤ 1/L,

        f(x_k) − f* ≤ 2 ‖x_0 − x*‖² / (s (k + 1)²)

    (Su, Boyd & Candès 2016, the bound after eq. (3); Beck & Teboulle 2009, Thm 4.4,
    for the t_k = (1+√(1+4t²))/2 sequence). ``param.data`` holds y_k (where the next
    gradient is taken); the iterate x_k of the bound is ``opt.state[param]["x"]``.

    Args:
        params: Parameters or param-group dicts.
        lr: step s ≥ 0 (required; s = 1/L for the bound).

    Example:
        >>> opt = NAGC([p], lr=1 / L)
    """

    traits = Traits(
        first_moment=True, second_moment=False, leaky_average="coefficient (k − 1)/(k + 2)",
        bias_correction=False, update="x ← y − s∇f(y);  y ← x + (k − 1)/(k + 2)·(x − x_prev)",
        reference="Nesterov 1983; Su, Boyd & Candès 2016")

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        super().__init__(params, dict(lr=lr), flush_every=0)

    def coefficient(self, group: dict[str, Any], k: int) -> float:
        return (k - 1) / (k + 2)


class NAGSC(_NesterovScheme):
    """Nesterov's accelerated gradient for μ-strongly convex f with L-Lipschitz gradient.

    Nesterov (2004, Introductory Lectures, constant step scheme III, (2.2.22)), in the
    notation of Su, Boyd & Candès (2016, eq. (30)):

        x_{k+1} = y_k − s ∇f(y_k)
        y_{k+1} = x_{k+1} + (1 − √(μ s))/(1 + √(μ s)) · (x_{k+1} − x_k),   y_0 = x_0.

    With s = 1/L, f(x_k) − f* ≤ (1 − √(μ/L))^k · (f(x_0) − f* + μ/2 ‖x_0 − x*‖²)
    (Nesterov 2004, Thm 2.2.3), against (1 − μ/L)^k for gradient descent.
    ``param.data`` holds y_k; the iterate x_k is ``opt.state[param]["x"]``.

    Args:
        params: Parameters or param-group dicts.
        lr: step s > 0 (required; s = 1/L for the bound).
        strong_convexity: μ > 0 with μ s ≤ 1 (required).

    Example:
        >>> opt = NAGSC([p], lr=1 / L, strong_convexity=mu)
    """

    traits = Traits(
        first_moment=True, second_moment=False, leaky_average=True, bias_correction=False,
        update="x ← y − s∇f(y);  y ← x + (1 − √(μs))/(1 + √(μs))·(x − x_prev)",
        reference="Nesterov 2004, (2.2.22)")

    def __init__(self, params: Iterable[Any], lr: float, strong_convexity: float) -> None:
        super().__init__(params, dict(lr=lr, strong_convexity=strong_convexity), flush_every=0)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        mu, s = group["strong_convexity"], group["lr"]
        if not (mu > 0 and mu * s <= 1):
            raise ValueError(
                f"NAGSC needs strong_convexity μ > 0 with μ·lr ≤ 1 (μ ≤ L and lr = 1/L); "
                f"got μ={mu}, lr={s}"
            )

    def coefficient(self, group: dict[str, Any], k: int) -> float:
        root = math.sqrt(group["strong_convexity"] * group["lr"])
        return (1 - root) / (1 + root)
