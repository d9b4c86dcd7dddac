"""Fused single-pass update kernels (Numba), one per rule, rounded as the NumPy path.

The NumPy path of a rule (``update_block`` in ``sgd.py``, ``adam.py``,
``adaptive.py``) makes 3–12 elementwise passes over the parameter's arrays;
the kernels here read θ, g and each state array once and write θ and each
state array once, which is the memory-bandwidth bound of the step
(``benchmarks/optim_step.py``). Each kernel does, element by element, the same
IEEE operations in the same order as the NumPy path on the same dtype, so the
two give bitwise the same results (``tests/optim/test_kernels.py``):

* scalars are rounded to the array's dtype before the loop, as NumPy rounds a
  Python float next to a float32 array;
* y ← y + a·x, which the NumPy path does with BLAS ``?axpy`` (torch's
  ``add_(x, alpha=a)``), is one fused multiply-add rounded once (``fma``,
  LLVM's ``llvm.fma``), every other product and sum is rounded on its own
  (``fastmath`` is off, so LLVM never contracts them);
* ``max`` propagates NaN as ``numpy.maximum`` does.

State arrays a configuration does not use are passed as None, so that Numba
compiles a loop without them (a branch on ``x is None`` is pruned when the
kernel is compiled), which LLVM vectorizes. Kernels take 1-D C-contiguous
arrays of one float dtype (a block's flat views, where
``InPlaceOptimizer.kernels`` allows) and release the GIL, so the step's lanes
(``optim.inplace``) run them in parallel on the step's own worker threads: no
second thread pool. Compiled on first use per dtype and configuration
(~0.3 s each) and cached on disk (``cache=True``: next to this file, or
Numba's user-wide cache where that is not writable).

Each rule's kernel takes ``signal`` and ``value`` last (default None: nothing to do): given
a worker's counter, it sets it to ``value`` first, once the GIL is let go
(``ermlab._spin.publish``), handing that worker its lane of the step
(``ermlab.threads.Handoff``).

Optional: ``pip install "ermlab[fast]"`` (Numba); without it, or for CuPy and
non-contiguous arrays, the NumPy path runs. ``ERMLAB_FUSED=0`` turns the
kernels off.
"""

from __future__ import annotations

import math

from numba import njit, types
from numba.extending import intrinsic

from ermlab import (
    _numba_target,  # noqa: F401 - the vector width, before a kernel compiles
    _spin,
)
from ermlab._numba_cache import drop_stale
from ermlab._spin import publish

drop_stale(__file__, _spin.__file__)  # kernels below compile in its publish

_JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@intrinsic
def fma(typingctx, a, x, y):
    """a·x + y rounded once (LLVM ``llvm.fma``; a vector FMA where the loop is vectorized)."""
    if not (isinstance(a, types.Float) and a == x == y):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, x, y), codegen


@njit(inline="always", **_JIT)
def _maximum(a, b):
    """``numpy.maximum(a, b)``: the larger, NaN if either is NaN."""
    if a != a or a >= b:
        return a
    return b


@njit(inline="always", **_JIT)
def _lerp(start, end, weight, weight_minus_one, small):
    """``inplace.lerp_``, as torch's vector kernel: start + w(end − start) for |w| < ½,
    else end + (w − 1)(end − start), each one FMA."""
    t = end - start
    if small:
        return fma(weight, t, start)
    return fma(weight_minus_one, t, end)


@njit(inline="always", **_JIT)
def _grad(theta, grad, weight_decay, coupled):
    """g = θλ + ∇θ (coupled L2, rounded twice as ``θ·λ`` then ``+= ∇θ``), else ∇θ."""
    if coupled:
        return theta * weight_decay + grad
    return grad


@njit(**_JIT)
def sgd(theta, grad, buf, neg_lr, momentum, dampened, one_minus_dampening, weight_decay,
        coupled, first, nesterov, neg_lr_momentum, signal=None, value=0):
    """torch's SGD: g = ∇θ + λθ; v ← g on the first step, else μv + (1 − τ)g;
    θ ← θ − γv, or θ − γg − γμv (Nesterov, two FMAs). Without momentum ``buf`` is
    None and θ ← θ − γg."""
    publish(signal, value)
    if buf is None:
        for i in range(theta.size):
            g = _grad(theta[i], grad[i], weight_decay, coupled)
            theta[i] = fma(neg_lr, g, theta[i])
        return
    for i in range(theta.size):
        th = theta[i]
        g = _grad(th, grad[i], weight_decay, coupled)
        if first:
            v = g
        elif dampened:
            v = buf[i] * momentum + g * one_minus_dampening
        else:
            v = buf[i] * momentum + g
        buf[i] = v
        if nesterov:
            th = fma(neg_lr, g, th)
            theta[i] = fma(neg_lr_momentum, v, th)
        else:
            theta[i] = fma(neg_lr, v, th)


@njit(**_JIT)
def adam(theta, grad, m, v, v_max, decay, weight_decay, coupled, w1, w1_minus_one, small,
         beta2, one_minus_beta2, eps_b, step, signal=None, value=0):
    """Adam (``adam.Adam.update_block``): θ ← θ·(1 − γλ) (``decay``, 1 unless
    decoupled), m ← lerp(m, g, 1 − β₁), v ← β₂v + ((1 − β₂)g)g, v_max ← max(v_max, v),
    θ ← θ + step · m/(√v + εb) (one FMA). ``v_max`` is None without AMSGrad."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i] * decay
        g = _grad(th, grad[i], weight_decay, coupled)
        mi = _lerp(m[i], g, w1, w1_minus_one, small)
        m[i] = mi
        vi = v[i] * beta2 + g * one_minus_beta2 * g
        v[i] = vi
        if v_max is not None:
            vi = _maximum(v_max[i], vi)
            v_max[i] = vi
        theta[i] = fma(step, mi / (math.sqrt(vi) + eps_b), th)


@njit(**_JIT)
def adamax(theta, grad, m, u, decay, weight_decay, coupled, w1, w1_minus_one, small,
           beta2, eps, step, signal=None, value=0):
    """Adamax: m ← lerp(m, g, 1 − β₁), u ← max(β₂u, |g| + ε), θ ← θ + step · m/u."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i] * decay
        g = _grad(th, grad[i], weight_decay, coupled)
        mi = _lerp(m[i], g, w1, w1_minus_one, small)
        m[i] = mi
        ui = _maximum(u[i] * beta2, abs(g) + eps)
        u[i] = ui
        theta[i] = fma(step, mi / ui, th)


@njit(**_JIT)
def nadam(theta, grad, m, v, decay, weight_decay, coupled, w1, w1_minus_one, small,
          beta2, one_minus_beta2, bias_correction2, eps, grad_coef, exp_avg_coef,
          signal=None, value=0):
    """NAdam: Adam's m, v; d = √(v / (1 − β₂ᵗ)) + ε; θ ← θ + c_g·g/d, then + c_m·m/d."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i] * decay
        g = _grad(th, grad[i], weight_decay, coupled)
        mi = _lerp(m[i], g, w1, w1_minus_one, small)
        m[i] = mi
        vi = v[i] * beta2 + g * one_minus_beta2 * g
        v[i] = vi
        denom = math.sqrt(vi / bias_correction2) + eps
        th = fma(grad_coef, g / denom, th)
        theta[i] = fma(exp_avg_coef, mi / denom, th)


@njit(**_JIT)
def adagrad(theta, grad, total, weight_decay, coupled, eps, neg_lr, signal=None, value=0):
    """Adagrad: G ← G + g·g, θ ← θ + (g/(√G + ε))·(−γ_t)."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i]
        g = _grad(th, grad[i], weight_decay, coupled)
        s = total[i] + g * g
        total[i] = s
        theta[i] = th + g / (math.sqrt(s) + eps) * neg_lr


@njit(**_JIT)
def adadelta(theta, grad, square_avg, acc_delta, weight_decay, coupled, rho, one_minus_rho,
             eps, neg_lr, signal=None, value=0):
    """Adadelta: E[g²] ← ρE[g²] + ((1 − ρ)g)g, Δ = √(E[Δ²] + ε)/√(E[g²] + ε)·g,
    E[Δ²] ← ρE[Δ²] + ((1 − ρ)Δ)Δ, θ ← θ + Δ·(−γ)."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i]
        g = _grad(th, grad[i], weight_decay, coupled)
        sa = square_avg[i] * rho + g * one_minus_rho * g
        square_avg[i] = sa
        ad = acc_delta[i]
        delta = math.sqrt(ad + eps) / math.sqrt(sa + eps) * g
        acc_delta[i] = ad * rho + delta * one_minus_rho * delta
        theta[i] = th + delta * neg_lr


@njit(inline="always", **_JIT)
def _centered(v, a):
    """v̂ = v − a·a (``adaptive._centered_``): two roundings, but +∞ − |a| where v = +∞, as
    a fused multiply-add gives it (finite a: +∞, not ∞ − ∞ = NaN)."""
    if v == math.inf:
        return v - abs(a)
    return v - a * a


@njit(**_JIT)
def rmsprop(theta, grad, square_avg, grad_avg, buf, weight_decay, coupled, alpha,
            one_minus_alpha, w, w_minus_one, small, eps, eps_inside_sqrt, momentum, neg_lr,
            signal=None, value=0):
    """RMSprop: v ← αv + ((1 − α)g)g; centered: ḡ ← lerp(ḡ, g, 1 − α), v̂ = v − ḡḡ
    (``_centered``), and v̂ taken as 0 where the root's argument is negative;
    d = g/(√v̂ + ε) or g/√(v̂ + ε); μ > 0: b ← μb + d, θ ← θ + b·(−γ); else θ + d·(−γ).
    ``grad_avg`` is None unless centered, ``buf`` None unless μ > 0."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i]
        g = _grad(th, grad[i], weight_decay, coupled)
        sa = square_avg[i] * alpha + g * one_minus_alpha * g
        square_avg[i] = sa
        if grad_avg is not None:
            ga = _lerp(grad_avg[i], g, w, w_minus_one, small)
            grad_avg[i] = ga
            sa = _centered(sa, ga)
        if eps_inside_sqrt:
            root = sa + eps
            if root < 0:  # v̂ < −ε (centered only): v̂ taken as 0
                root = eps
            d = g / math.sqrt(root)
        else:
            if sa < 0:  # v̂ < 0 (centered only): taken as 0
                sa = eps - eps
            d = g / (math.sqrt(sa) + eps)
        if buf is not None:
            d = buf[i] * momentum + d
            buf[i] = d
        theta[i] = th + d * neg_lr


@njit(**_JIT)
def sgd_classic(theta, grad, buf, lr, momentum, lr_dampened, weight_decay, coupled, first,
                nesterov, signal=None, value=0):
    """SGD in the classic form (``momentum_form="classic"``): g = ∇θ + λθ;
    v ← γg on the first step, else μv + (γ(1 − τ))g; θ ← θ − v, or θ − (μv + γg)."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i]
        g = _grad(th, grad[i], weight_decay, coupled)
        if first:
            v = g * lr
        else:
            v = buf[i] * momentum + g * lr_dampened
        buf[i] = v
        if nesterov:
            theta[i] = th - (v * momentum + g * lr)
        else:
            theta[i] = th - v


@njit(**_JIT)
def heavy_ball(theta, grad, previous, momentum, lr, signal=None, value=0):
    """Polyak's heavy ball: d = μ(θ − θ_prev) − γg, θ_prev ← θ, θ ← θ + d."""
    publish(signal, value)
    for i in range(theta.size):
        th = theta[i]
        d = (th - previous[i]) * momentum - grad[i] * lr
        previous[i] = th
        theta[i] = th + d


@njit(**_JIT)
def nesterov_scheme(theta, grad, x, neg_lr, coefficient, signal=None, value=0):
    """NAG-C / NAG-SC: x_new = (−s)g + y, y ← x_new + c(x_new − x), x ← x_new."""
    publish(signal, value)
    for i in range(theta.size):
        x_new = grad[i] * neg_lr + theta[i]
        d = (x_new - x[i]) * coefficient
        x[i] = x_new
        theta[i] = x_new + d


@njit(**_JIT)
def flush(x, tiny):
    """x[i] ← +0 where |x[i]| < ``tiny`` (``inplace.flush_tiny_``'s rule in one pass: NaN and
    ±∞ stay), ``tiny`` in x's dtype. Every element is written back, so the loop is a select
    and a store that LLVM vectorizes; the block is in cache, just updated by its kernel."""
    zero = x.dtype.type(0)
    for i in range(x.size):
        xi = x[i]
        x[i] = zero if abs(xi) < tiny else xi
