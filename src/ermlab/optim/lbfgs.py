"""L-BFGS: limited-memory quasi-Newton, torch.optim.LBFGS's algorithm on flat arrays."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ermlab.optim.base import check_integer
from ermlab.optim.quasi_newton import QuasiNewton
from ermlab.optim.traits import Traits


class LBFGS(QuasiNewton):
    """Limited-memory BFGS (Liu & Nocedal 1989), a port of torch.optim.LBFGS.

    Each iteration moves θ ← θ + t d along d = −H_k ∇f, where H_k, the inverse
    Hessian approximation, is never formed: the two-loop recursion (Nocedal &
    Wright 2006, Algorithm 7.4) applies it from the last m pairs

        s_i = θ_{i+1} − θ_i,   y_i = ∇f_{i+1} − ∇f_i,   ρ_i = 1 / (y_iᵀ s_i),

    starting from H⁰ = γ I with γ = yᵀs / yᵀy of the newest pair (N&W eq. 7.20).
    A pair is stored only when yᵀs > 1e-10 (curvature condition), and the
    oldest is dropped beyond ``history_size``. The first direction is −∇f with
    step t = min(1, 1/‖∇f‖₁) · lr; later steps start from t = lr. Without a line
    search the step is t; with ``line_search_fn="strong_wolfe"`` t is refined
    until the strong Wolfe conditions hold (see ``line_search.strong_wolfe``).

    ``step(closure)`` runs up to ``max_iter`` iterations and returns the loss at
    the start. It stops early when max|∇f| ≤ ``tolerance_grad``, when
    ∇fᵀd > −``tolerance_change``, when max|t d| ≤ ``tolerance_change``, when
    |Δf| < ``tolerance_change``, or after ``max_eval`` closure calls. The
    closure zeroes the gradients, computes the loss over the full batch, runs
    backward and returns the loss.

    Args:
        params: Parameters (a single group: L-BFGS treats them as one vector).
        lr: learning rate, the base step length (default 1).
        max_iter: iterations per ``step`` (default 20).
        max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: first-order optimality tolerance (default 1e-7).
        tolerance_change: tolerance on changes of f, θ and slope (default 1e-9).
        history_size: number m of (s, y) pairs kept (default 100).
        line_search_fn: ``None`` (fixed step) or ``"strong_wolfe"``.

    State (under the first parameter, keys as torch's): ``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs`` (the y's), ``old_stps`` (the s's),
    ``ro``, ``H_diag`` (γ), ``prev_flat_grad``, ``prev_loss``; vectors are flat
    arrays, scalars Python floats. torch's scratch list ``al`` is a local here.

    Differences from torch: the same branches and closure calls, iterates
    equal to rounding (torch's ``add_(alpha=)`` fuses the multiply-add and its
    dot products sum in another order: ~1 ulp per operation, which the
    Rosenbrock valley amplifies to ~1e-8 over a hundred iterations);
    ``step`` without a closure raises ValueError. scipy's ``L-BFGS-B`` uses another line search and
    stopping rules, so its iterates differ.

    Example:
        >>> opt = LBFGS(model.parameters(), line_search_fn="strong_wolfe")
        >>> def closure():
        ...     model.zero_grad(); value = loss.forward(model.forward(x), y)
        ...     model.backward(loss.backward()); return value
        >>> opt.step(closure)

    References:
        D. C. Liu, J. Nocedal. On the limited memory BFGS method for large
        scale optimization. Mathematical Programming 45, 1989.
        J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., 2006, ch. 7.
    """

    traits = Traits(
        first_moment=False, second_moment=False, leaky_average=False, bias_correction=False,
        curvature="last m pairs (s, y)",
        update="d = −H_k∇f (two-loop);  θ ← θ + t d  (t: lr or strong Wolfe)",
        reference="Liu & Nocedal 1989")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        super().__init__(params, defaults)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        check_integer("LBFGS", "history_size", group["history_size"], 1)

    def first_direction(self, state: dict[str, Any], grad: Any) -> Any:
        state.update(old_dirs=[], old_stps=[], ro=[], H_diag=1.0)
        return -grad

    def direction(self, state: dict[str, Any], grad: Any, y: Any, s: Any) -> Any:
        old_dirs, old_stps, ro = state["old_dirs"], state["old_stps"], state["ro"]
        ys = float(y.dot(s))
        if ys > 1e-10:
            if len(old_dirs) == self.param_groups[0]["history_size"]:
                old_dirs.pop(0)
                old_stps.pop(0)
                ro.pop(0)
            old_dirs.append(y)
            old_stps.append(s)
            ro.append(1.0 / ys)
            state["H_diag"] = ys / float(y.dot(y))
        return two_loop_direction(grad, old_dirs, old_stps, ro, state["H_diag"])


def two_loop_direction(grad: Any, old_dirs: list, old_stps: list, ro: list,
                       H_diag: float) -> Any:
    """d = −H ∇f by the L-BFGS two-loop recursion (N&W Algorithm 7.4).

    ``old_dirs`` are the y_i, ``old_stps`` the s_i, ``ro`` the ρ_i = 1/(y_iᵀs_i),
    oldest first; H⁰ = ``H_diag`` · I.
    """
    num_old = len(old_dirs)
    al = [0.0] * num_old
    q = -grad
    for i in range(num_old - 1, -1, -1):
        al[i] = float(old_stps[i].dot(q)) * ro[i]
        q -= al[i] * old_dirs[i]
    r = q * H_diag
    for i in range(num_old):
        be_i = float(old_dirs[i].dot(r)) * ro[i]
        r += (al[i] - be_i) * old_stps[i]
    return r
