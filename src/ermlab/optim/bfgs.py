"""BFGS: quasi-Newton with a dense inverse-Hessian approximation, for small models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ermlab.optim.newton import check_max_params
from ermlab.optim.quasi_newton import QuasiNewton
from ermlab.optim.traits import Traits


class BFGS(QuasiNewton):
    """Broyden–Fletcher–Goldfarb–Shanno with the inverse-Hessian update (N&W eq. 6.17).

    Each iteration moves θ ← θ + t d along d = −H ∇f, then, with
    s = θ_{k+1} − θ_k, y = ∇f_{k+1} − ∇f_k and ρ = 1/(yᵀs),

        H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ,

    which keeps H symmetric positive definite and satisfies the secant
    equation H y = s. H starts as I and is rescaled to (yᵀs / yᵀy) I just
    before the first update (N&W eq. 6.20). As in L-BFGS, a pair with
    yᵀs ≤ 1e-10 is skipped (the curvature condition fails; a strong-Wolfe
    step guarantees yᵀs > 0 on smooth functions).

    The loop, stopping rules, ``lr``, ``max_iter``, ``max_eval``, tolerances and
    ``line_search_fn`` are those of ``LBFGS`` (torch's), except that the strong
    Wolfe line search is on by default: BFGS's convergence theory assumes
    Wolfe steps. H is n × n, so the parameter count n is limited by
    ``max_params`` (default 2000); use LBFGS beyond.

    State (under the first parameter): ``func_evals``, ``n_iter``, ``d``, ``t``,
    ``H`` (the n × n inverse-Hessian approximation), ``prev_flat_grad``,
    ``prev_loss``.

    Differences: scipy's ``minimize(method="BFGS")`` uses the same update but
    another line search (MINPACK's dcsrch) and a gradient-norm stopping test,
    so iterates differ; torch has no dense BFGS.

    Reference:
        J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., 2006,
        section 6.1 (Algorithm 6.1).
    """

    traits = Traits(
        first_moment=False, second_moment=False, leaky_average=False, bias_correction=False,
        curvature="dense inverse Hessian",
        update="θ ← θ − t H∇f;  H ← (I − ρsyᵀ)H(I − ρysᵀ) + ρssᵀ",
        reference="Nocedal & Wright 2006, Algorithm 6.1")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        line_search_fn: str | None = "strong_wolfe",
        max_params: int = 2000,
    ) -> None:
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        line_search_fn=line_search_fn, max_params=max_params)
        super().__init__(params, defaults)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_max_params(type(self).__name__, group)

    def first_direction(self, state: dict[str, Any], grad: Any) -> Any:
        state["H"] = None  # the identity, until the first update rescales it
        return -grad

    def direction(self, state: dict[str, Any], grad: Any, y: Any, s: Any) -> Any:
        ys = float(y.dot(s))
        H = state["H"]
        if ys > 1e-10:
            if H is None:
                H = self.xp.eye(y.size, dtype=y.dtype) * (ys / float(y.dot(y)))
            rho = 1.0 / ys
            Hy = H @ y
            H = (H - rho * (self.xp.outer(s, Hy) + self.xp.outer(Hy, s))
                 + (rho * rho * float(y.dot(Hy)) + rho) * self.xp.outer(s, s))
            state["H"] = H
        return -grad if H is None else -(H @ grad)
