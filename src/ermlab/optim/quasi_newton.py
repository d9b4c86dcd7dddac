"""The quasi-Newton loop shared by LBFGS and BFGS (torch.optim.LBFGS's ``step``).

One ``step(closure)`` runs up to ``max_iter`` iterations of

    d_k = −H_k ∇f_k,    θ_{k+1} = θ_k + t_k d_k,

where a subclass supplies H_k through ``first_direction`` (k = 0, H₀ = I) and
``direction`` (which first records the pair s = t_{k−1} d_{k−1},
y = ∇f_k − ∇f_{k−1}). The step t_k is ``lr`` (the first one
min(1, 1/‖∇f‖₁) · lr), or the strong-Wolfe line search's choice. The loop,
its stopping rules and its state keys (``func_evals``, ``n_iter``, ``d``, ``t``,
``prev_flat_grad``, ``prev_loss``) are torch's, see ``LBFGS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ermlab.optim.base import check_integer
from ermlab.optim.full_batch import FullBatchOptimizer
from ermlab.optim.line_search import strong_wolfe


class QuasiNewton(FullBatchOptimizer):
    """Base of LBFGS and BFGS: the iteration loop; subclasses give d = −H ∇f."""

    traits = None  # a base class, not an optimizer of its own (see optim.traits)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        name = type(self).__name__
        for key in ("max_iter", "max_eval"):
            check_integer(name, key, group[key], 1)
        for key in ("tolerance_grad", "tolerance_change"):
            if not group[key] >= 0:
                raise ValueError(f"{name} {key} must be ≥ 0; got {group[key]}")
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"{name} line_search_fn must be None or 'strong_wolfe'; got "
                             f"{group['line_search_fn']!r}")

    def first_direction(self, state: dict[str, Any], grad: Any) -> Any:
        """d₀ = −∇f; reset the curvature memory."""
        raise NotImplementedError

    def direction(self, state: dict[str, Any], grad: Any, y: Any, s: Any) -> Any:
        """Record (s, y) when yᵀs > 1e-10, then return d = −H ∇f."""
        raise NotImplementedError

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run up to ``max_iter`` iterations; return the closure's loss before them."""
        closure = self.check_closure(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]

        state = self.global_state()
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self.flat_grad()
        if float(abs(flat_grad).max()) <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = self.first_direction(state, flat_grad)
            else:
                d = self.direction(state, flat_grad, flat_grad - prev_flat_grad, d * t)
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss

            t = lr
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / float(abs(flat_grad).sum())) * lr
            gtd = float(flat_grad.dot(d))
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if group["line_search_fn"] is not None:
                def obj_func(x, t, d):
                    return self.directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = strong_wolfe(
                    obj_func, self.flat_data(), t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)
                self.add_step(t, d)
                opt_cond = float(abs(flat_grad).max()) <= tolerance_grad
            else:
                self.add_step(t, d)
                opt_cond = False
                if n_iter != max_iter:
                    # no re-evaluation after the last iteration (of no use when stochastic)
                    loss, flat_grad = self.evaluate(closure)
                    opt_cond = float(abs(flat_grad).max()) <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if float(abs(d * t).max()) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss
