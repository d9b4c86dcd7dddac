"""Strong-Wolfe line search along a direction d, with cubic interpolation.

A line search picks the step t of θ ← θ + t d. The strong Wolfe conditions
(Nocedal & Wright 2006, eq. 3.7) ask for sufficient decrease and a flat enough
slope:

    f(θ + t d) ≤ f(θ) + c₁ t ∇f(θ)ᵀd                 (Armijo, c₁ = 1e-4)
    |∇f(θ + t d)ᵀd| ≤ c₂ |∇f(θ)ᵀd|                   (curvature, c₂ = 0.9)

``strong_wolfe`` first brackets an interval that holds such a t (N&W
Algorithm 3.5), extrapolating by cubic interpolation in [t + 0.01 (t − t_prev),
10 t], then zooms in on it (Algorithm 3.6) with safeguarded cubic steps. It is
a line-by-line port of torch.optim.lbfgs._strong_wolfe (itself from Mark
Schmidt's minFunc via torch7's lswolfe.lua), so that LBFGS reproduces torch's
iterates; scalars are Python floats, vectors are flat arrays of any array
module.

References:
    J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., Springer 2006,
    sections 3.1 and 3.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def cubic_interpolate(
    x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """Minimizer of the cubic through (x1, f1, f'=g1) and (x2, f2, f'=g2), clipped to ``bounds``.

    With d₁ = g1 + g2 − 3 (f1 − f2)/(x1 − x2) and d₂ = √(d₁² − g1 g2), the
    minimizer is (N&W eq. 3.59, for x1 ≤ x2)

        x = x2 − (x2 − x1) (g2 + d₂ − d₁) / (g2 − g1 + 2 d₂),

    clipped to ``bounds`` (default: the interval between x1 and x2). When
    d₁² < g1 g2 the cubic has no minimizer, and when it cannot be computed in
    floating point (x1 = x2, a zero denominator, d₁² beyond the largest float:
    on functions unbounded below; Python floats raise there, where tensors give inf
    or NaN), the midpoint of the bounds is returned: bisection keeps the search
    going. Every result that was computable is unchanged (torch's).
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    try:
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1**2 - g1 * g2
        if d2_square >= 0:
            d2 = math.sqrt(d2_square)
            if x1 <= x2:
                min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            return min(max(min_pos, xmin_bound), xmax_bound)
    except (ZeroDivisionError, OverflowError):  # x1 = x2, a zero denominator, d₁² > max float
        pass
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    obj_func: Callable[[Any, float, Any], tuple[float, Any]],
    x: Any, t: float, d: Any, f: float, g: Any, gtd: float,
    c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25,
) -> tuple[float, Any, float, int]:
    """Find t satisfying the strong Wolfe conditions along ``d``.

    Args:
        obj_func: ``obj_func(x, t, d) -> (f(x + t d), ∇f(x + t d))`` (flat gradient).
        x: the starting point, passed through to ``obj_func``.
        t: the first trial step.
        d: the search direction (a descent direction: ``gtd < 0``).
        f, g, gtd: f(x), ∇f(x) and ∇f(x)ᵀd.
        c1, c2: the Wolfe constants, 0 < c1 < c2 < 1 (defaults 1e-4 and 0.9).
        tolerance_change: stop zooming once |bracket| · max|d| is below this.
        max_ls: the most function evaluations to spend.

    Returns:
        ``(f_new, g_new, t, evaluations)``: the value and gradient at x + t d,
        the step, and the number of ``obj_func`` calls made.
    """
    d_norm = float(abs(d).max())
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = float(g_new.dot(d))

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        # extrapolate by cubic interpolation within [t + 0.01 (t − t_prev), 10 t]
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                              bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1

    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket until a point satisfies the conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                              bracket[1], bracket_f[1], bracket_gtd[1])
        # safeguard: keep t at least 0.1 |bracket| away from the ends when progress stalls
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo fails or no lower than the lowest point: new high end
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # the old high end becomes the new low end
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals
