"""Newton's method θ ← θ − α (H + δI)⁻¹ ∇f with a finite-difference Hessian, for small models."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.optim.full_batch import FullBatchOptimizer
from ermlab.optim.traits import Traits


class Newton(FullBatchOptimizer):
    """Damped Newton's method (Nocedal & Wright 2006, sections 3.3–3.4).

    One ``step(closure)`` is one Newton iteration over all parameters as one
    vector θ ∈ ℝⁿ:

        H_ij = (∂_i f(θ + h_j e_j) − ∂_i f(θ − h_j e_j)) / (2 h_j),   H ← (H + Hᵀ)/2
        θ ← θ − lr · (H + δ I)⁻¹ ∇f(θ)

    The Hessian is built column by column by central differences of the
    gradient (2n closure calls), with h_j = fd_step · max(1, |θ_j|). δ is
    chosen as in N&W Algorithm 3.3 (Cholesky with added multiple of the
    identity, Levenberg–Marquardt style): δ = 0 when H is positive definite;
    otherwise start at δ = −min_i H_ii + β (or β), and double δ until the
    Cholesky factorization of H + δI succeeds, with β = ``damping``. Near a
    saddle or maximum this turns the step into a descent direction of length
    at most ‖∇f‖/δ; on a strictly convex quadratic (δ = 0, lr = 1) it lands on
    the minimizer in one step.

    Cost: 2n + 1 closure calls and an n × n solve per step, so the parameter
    count n is limited by ``max_params``; use LBFGS for larger models. Use
    float64 parameters: the central differences lose about a third of the
    digits (the default h is ε^(1/3), ε the machine epsilon of the dtype).

    After ``step`` the parameters' ``grad`` hold ∇f at the θ before the update.

    Args:
        params: Parameters (one group).
        lr: step scale α (default 1, the pure Newton step).
        fd_step: relative finite-difference step (default ε^(1/3): 6e-6 in
            float64, 5e-3 in float32).
        damping: β > 0, the smallest δ tried when H is not positive definite (default 1e-3).
        max_params: the largest n accepted (default 2000).

    State (under the first parameter): ``func_evals``, ``n_iter``, ``damping``
    (the δ of the last step).

    Reference:
        J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., 2006,
        section 3.4 (Algorithm 3.3) and section 8.1 (finite-difference Hessians).
    """

    traits = Traits(
        first_moment=False, second_moment=False, leaky_average=False, bias_correction=False,
        curvature="finite-difference Hessian", update="θ ← θ − α(H + δI)⁻¹∇f",
        reference="Nocedal & Wright 2006, Algorithm 3.3")

    def __init__(self, params: Iterable[Any], lr: float = 1.0, fd_step: float | None = None,
                 damping: float = 1e-3, max_params: int = 2000) -> None:
        defaults = dict(lr=lr, fd_step=fd_step, damping=damping, max_params=max_params)
        super().__init__(params, defaults)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        if not group["damping"] > 0:
            raise ValueError(f"Newton damping must be > 0; got {group['damping']}")
        if group["fd_step"] is not None and not group["fd_step"] > 0:
            raise ValueError(f"Newton fd_step must be > 0 or None; got {group['fd_step']}")
        check_max_params("Newton", group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Newton iteration; return the closure's loss at the θ before it."""
        closure = self.check_closure(closure)
        group = self.param_groups[0]
        state = self.global_state()
        orig_loss = closure()
        grad = self.flat_grad()
        x = self.flat_data()
        H = self.hessian(closure, x, group["fd_step"])
        self._set_flat_grad(grad)
        delta = damped_cholesky_shift(H, group["damping"])
        eye = self.xp.eye(x.size, dtype=x.dtype)
        d = -self.xp.linalg.solve(H + delta * eye, grad)
        self.add_step(group["lr"], d)
        state["n_iter"] = state.get("n_iter", 0) + 1
        state["func_evals"] = state.get("func_evals", 0) + 1 + 2 * x.size
        state["damping"] = delta
        return orig_loss

    def hessian(self, closure: Callable[[], Any], x: Any, fd_step: float | None = None) -> Any:
        """The symmetrized central-difference Hessian at θ = x (2n closure calls); θ ends at x."""
        xp = self.xp
        if fd_step is None:
            fd_step = float(numpy.finfo(numpy.dtype(str(x.dtype))).eps) ** (1 / 3)
        columns = []
        for j in range(x.size):
            h = fd_step * max(1.0, abs(float(x[j])))
            plus, minus = x.copy(), x.copy()
            plus[j] += h
            minus[j] -= h
            self.set_flat_data(plus)
            g_plus = self.evaluate(closure)[1]
            self.set_flat_data(minus)
            g_minus = self.evaluate(closure)[1]
            columns.append((g_plus - g_minus) / float(plus[j] - minus[j]))
        self.set_flat_data(x)
        H = xp.stack(columns, axis=1)
        return (H + H.T) / 2

    def _set_flat_grad(self, flat: Any) -> None:
        offset = 0
        for p in self._params:
            p.grad[...] = flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size


def damped_cholesky_shift(H: Any, beta: float, max_tries: int = 100) -> float:
    """The δ ≥ 0 of N&W Algorithm 3.3: the first of 0 or τ₀, 2τ₀, ... with H + δI ≻ 0.

    τ₀ = 0 when min_i H_ii > 0, else −min_i H_ii + β; after a failed Cholesky
    factorization δ ← max(2δ, β). Raises ValueError when H is not finite.
    """
    xp = array_module(H)
    if not bool(xp.all(xp.isfinite(H))):
        raise ValueError("Newton: the finite-difference Hessian is not finite; check that the "
                         "closure returns finite gradients near θ (or lower fd_step)")
    min_diag = float(xp.diag(H).min())
    delta = 0.0 if min_diag > 0 else -min_diag + beta
    eye = xp.eye(H.shape[0], dtype=H.dtype)
    for _ in range(max_tries):
        try:
            L = xp.linalg.cholesky(H + delta * eye)
            if bool(xp.all(xp.isfinite(L))):  # CuPy may return NaN instead of raising
                return delta
        except numpy.linalg.LinAlgError:
            pass
        delta = max(2.0 * delta, beta)
    raise ValueError(f"Newton: no damping δ ≤ {delta:g} made the Hessian positive definite")


def check_max_params(name: str, group: dict[str, Any]) -> None:
    """ValueError when the dense n × n methods would get too many parameters."""
    n = sum(p.size for p in group["params"])
    if n > group["max_params"]:
        raise ValueError(
            f"{name} forms an n × n matrix over all parameters and this model has n = {n} > "
            f"max_params = {group['max_params']}; use LBFGS (or raise max_params if "
            f"{n}² floats fit in memory)"
        )
