"""Per-coordinate adaptive step sizes: Adagrad, Adadelta, RMSprop (torch.optim's forms).

In all three, ``weight_decay`` λ is coupled L2: g = ∇θ + λθ enters the
accumulators (for decoupled decay see ``transforms.decoupled_weight_decay_``).
Products are taken in place into preallocated buffers, rounded as torch rounds
them, so float64 trajectories agree with torch.optim to ~1e-15.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.nn.parameter import Parameter
from ermlab.optim.inplace import (
    FLUSH_BELOW,
    Block,
    InPlaceOptimizer,
    add_scaled_square_,
    hidden_by_eps,
    lerp_,
    lerp_scalars,
)
from ermlab.optim.traits import Traits


def _decay_scalars(weight_decay: float, dtype: Any) -> tuple[Any, bool]:
    """λ rounded to ``dtype`` and whether g = ∇θ + λθ, for a fused kernel."""
    return dtype.type(weight_decay), bool(weight_decay)


def _coupled_grad(block: Block, weight_decay: float) -> Any:
    """g = ∇θ + λθ in a scratch buffer (``block.grad`` itself when λ = 0)."""
    if not weight_decay:
        return block.grad
    xp = array_module(block.data)
    g = xp.multiply(block.data, weight_decay, out=block.scratch(0))
    g += block.grad
    return g


def _centered_root_(v: Any, grad_avg: Any, eps: float, inside: bool, out: Any) -> Any:
    """√v̂ (``inside``: √(v̂ + ε)) into ``out``, v̂ = v − ḡ·ḡ, as ``_kernels.rmsprop``.

    v − ḡ·ḡ is rounded twice, as torch's ``addcmul(ḡ, ḡ, value=-1)`` where its CPU kernel
    rounds the product and the sum apart (builds that fuse them, torch 2.13's AVX-512 one,
    differ in the last bit). Two cases where torch's root would be NaN or the two roundings
    part from a fused multiply-add are taken apart, in a second pass that only a step
    meeting them makes (NumPy's invalid-operation flag says when; CuPy always takes it):
    where v = +∞ (the average overflowed) v̂ = v − |ḡ| = +∞ for finite ḡ, what an FMA gives,
    not ∞ − ∞ = NaN; and where the root's argument is negative, v̂ is taken as 0. That
    happens where v was flushed (a subnormal v zeroed, ḡ² still subnormal, not zero:
    torch's v̂ there is a subnormal that ε hides, so the step is torch's), or where
    rounding makes v − ḡ² < 0 (a near-constant gradient; torch's θ turns NaN there).
    """
    xp = array_module(v)
    if xp is numpy:
        with numpy.errstate(invalid="raise"):
            try:
                xp.multiply(grad_avg, grad_avg, out=out)
                xp.subtract(v, out, out=out)
                if inside:
                    out += eps
                return xp.sqrt(out, out=out)
            except FloatingPointError:
                pass
    with numpy.errstate(invalid="ignore"):
        xp.multiply(grad_avg, grad_avg, out=out)
        xp.subtract(v, out, out=out)
        overflowed = xp.isposinf(v)
        out[...] = xp.where(overflowed, v - xp.abs(grad_avg), out)
        if inside:
            out += eps
        xp.copyto(out, eps if inside else 0, where=out < 0)
        return xp.sqrt(out, out=out)


class Adagrad(InPlaceOptimizer):
    """Adagrad (Duchi, Hazan & Singer 2011), torch.optim.Adagrad's form.

        G ← G + g ⊙ g                         (G₀ = ``initial_accumulator_value``)
        γ_t = γ / (1 + (t − 1) η)             (``lr_decay`` η)
        θ ← θ − γ_t g / (√G + ε)

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 1e-2.
        lr_decay: η ≥ 0, default 0.
        weight_decay: λ ≥ 0 (coupled L2), default 0.
        initial_accumulator_value: G₀ ≥ 0, default 0.
        eps: ε ≥ 0, default 1e-10, added outside the square root as in torch
            (TensorFlow starts G at 0.1 and uses ε = 1e-7; Optax puts ε inside).
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.

    The accumulator only grows, so nothing here needs the subnormal flush.

    Example:
        >>> opt = Adagrad(model.parameters(), lr=0.01)
    """

    fused_rule = True  # optim._kernels updates it in one pass

    traits = Traits(
        first_moment=False, second_moment=True, leaky_average=False, bias_correction=False,
        update="G ← G + g²;  θ ← θ − γ g/(√G + ε)", reference="Duchi, Hazan & Singer 2011")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, defaults, flush_every=0, threads=threads)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_nonnegative(group, "lr_decay", "weight_decay",
                                 "initial_accumulator_value", "eps")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = array_module(param.data)
        return {"step": 0, "sum": xp.full_like(param.data, group["initial_accumulator_value"])}

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> float:
        """γ_t = γ / (1 + (t − 1) η)."""
        return group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])

    def fused_kernel(self, kernels: Any, group: dict[str, Any], clr: float,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.adagrad``), rounded as the passes of ``update_block``."""
        cast = dtype.type
        return kernels.adagrad, (*_decay_scalars(group["weight_decay"], dtype),
                                 cast(group["eps"]), cast(-clr))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["sum"]

    def update_block(self, block: Block, group: dict[str, Any], clr: float) -> None:
        xp = array_module(block.data)
        g = _coupled_grad(block, group["weight_decay"])
        add_scaled_square_(block.state["sum"], g, 1, block.scratch(1))
        d = xp.sqrt(block.state["sum"], out=block.scratch(1))
        d += group["eps"]
        xp.divide(g, d, out=d)
        d *= -clr
        block.data += d


class Adadelta(InPlaceOptimizer):
    """Adadelta (Zeiler 2012, Algorithm 1), torch.optim.Adadelta's form.

        E[g²]  ← ρ E[g²] + (1 − ρ) g²
        Δθ     = − RMS[Δθ]_{t−1} / RMS[g]_t · g,      RMS[x] = √(E[x²] + ε)
        E[Δθ²] ← ρ E[Δθ²] + (1 − ρ) Δθ²
        θ      ← θ + γ Δθ

    Zeiler has no learning rate (γ = 1, torch's default); ε sits inside both
    square roots, as in the paper and in torch.

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 1.0.
        rho: ρ ∈ [0, 1), default 0.9 (Zeiler used 0.95).
        eps: ε ≥ 0, default 1e-6.
        weight_decay: λ ≥ 0 (coupled L2), default 0.
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of both averages where ε hides
            them (``optim.inplace``).

    Example:
        >>> opt = Adadelta(model.parameters())
    """

    fused_rule = True  # optim._kernels updates it in one pass

    denominator_state = ("square_avg", "acc_delta")
    traits = Traits(
        first_moment=False, second_moment=True, leaky_average=True, bias_correction=False,
        update="E[g²] ← ρE[g²] + (1 − ρ)g²;  Δ = −√(E[Δ²] + ε)/√(E[g²] + ε)·g;  "
               "E[Δ²] ← ρE[Δ²] + (1 − ρ)Δ²;  θ ← θ + γΔ",
        reference="Zeiler 2012")

    def denominators_hidden(self, group: dict[str, Any], dtype: Any) -> bool:
        """Both averages enter as √(x + ε): ε must hide τ."""
        return hidden_by_eps(group["eps"], dtype, root=False, below=self.flush_below)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_unit_interval(group, "rho")
        self.require_nonnegative(group, "eps", "weight_decay")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = array_module(param.data)
        return {"step": 0, "square_avg": xp.zeros_like(param.data),
                "acc_delta": xp.zeros_like(param.data)}

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: None,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.adadelta``), rounded as the passes of ``update_block``."""
        cast, rho = dtype.type, group["rho"]
        return kernels.adadelta, (*_decay_scalars(group["weight_decay"], dtype), cast(rho),
                                  cast(1 - rho), cast(group["eps"]), cast(-group["lr"]))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["square_avg"], arrays["acc_delta"]

    def update_block(self, block: Block, group: dict[str, Any], scalars: None) -> None:
        xp = array_module(block.data)
        rho, eps = group["rho"], group["eps"]
        square_avg, acc_delta = block.state["square_avg"], block.state["acc_delta"]
        g = _coupled_grad(block, group["weight_decay"])
        std, delta = block.scratch(1), block.scratch(2)
        square_avg *= rho
        add_scaled_square_(square_avg, g, 1 - rho, std)
        xp.add(square_avg, eps, out=std)
        xp.sqrt(std, out=std)
        xp.add(acc_delta, eps, out=delta)
        xp.sqrt(delta, out=delta)
        delta /= std
        delta *= g
        acc_delta *= rho
        add_scaled_square_(acc_delta, delta, 1 - rho, std)
        delta *= -group["lr"]
        block.data += delta


class RMSprop(InPlaceOptimizer):
    """RMSprop (Tieleman & Hinton 2012, Lecture 6.5; centered: Graves 2013, eq. (38)–(41)),
    torch.optim.RMSprop's form.

        v ← α v + (1 − α) g²
        centered:  ḡ ← α ḡ + (1 − α) g,   v̂ = v − ḡ²;   otherwise v̂ = v
        d = g / (√v̂ + ε)                  (``eps_inside_sqrt=True``: g / √(v̂ + ε))
        momentum μ > 0:  b ← μ b + d,   θ ← θ − γ b;    otherwise θ ← θ − γ d

    Where frameworks differ: torch adds ε outside the square root (the default
    here); Optax's ``scale_by_rms`` and TensorFlow/Keras put it inside, which with
    the same ε = 1e-8 damps coordinates with tiny v far more (√1e-8 = 1e-4).
    torch's ``alpha`` is Keras's ``rho``; TensorFlow's ``momentum`` buffer is
    the same as torch's (γ outside).

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 1e-2.
        alpha: α ∈ [0, 1), default 0.99.
        eps: ε ≥ 0, default 1e-8.
        weight_decay: λ ≥ 0 (coupled L2), default 0.
        momentum: μ ∈ [0, 1), default 0.
        centered: divide by the estimated standard deviation, default False.
        eps_inside_sqrt: put ε inside the root (Optax/Keras), default False (torch).
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of ḡ, b, and of v where ε hides it
            (``optim.inplace``).

    Centered, at the ends of the float range (``_centered_root_``): where v = +∞ (the
    average overflowed) v̂ = +∞, as torch's fused multiply-add gives (the step is 0), not
    ∞ − ∞ = NaN; where the root's argument is negative, v̂ is taken as 0. The flush zeroes
    a subnormal v while ḡ² may still be a nonzero subnormal, so v − ḡ² < 0 there; torch's
    v̂ is then a subnormal that ε hides, and √0 + ε gives its step. Otherwise only rounding
    makes v − ḡ² < 0 (a near-constant gradient), where torch's θ turns NaN. Where torch's
    root is finite the two agree, as before (ḡ is not flushed along with v: flushing ḡ,
    a normal number up to ~1e-19 in float32, would move later steps).

    Example:
        >>> opt = RMSprop(model.parameters(), lr=1e-3, centered=True)
    """

    fused_rule = True  # optim._kernels updates it in one pass

    decaying_state = ("grad_avg", "momentum_buffer")
    denominator_state = ("square_avg",)
    traits = Traits(
        first_moment="centered or momentum > 0", second_moment=True, leaky_average=True,
        bias_correction=False, update="v ← αv + (1 − α)g²;  θ ← θ − γ g/(√v + ε)",
        reference="Tieleman & Hinton 2012; Graves 2013")

    def denominators_hidden(self, group: dict[str, Any], dtype: Any) -> bool:
        """√v̂ + ε, or √(v̂ + ε) with ``eps_inside_sqrt``: ε must hide √τ, or τ."""
        return hidden_by_eps(group["eps"], dtype, root=not group["eps_inside_sqrt"],
                             below=self.flush_below)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        eps_inside_sqrt: bool = False,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, eps_inside_sqrt=eps_inside_sqrt)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_unit_interval(group, "alpha", "momentum")
        self.require_nonnegative(group, "eps", "weight_decay")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = array_module(param.data)
        state = {"step": 0, "square_avg": xp.zeros_like(param.data)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = xp.zeros_like(param.data)
        if group["centered"]:
            state["grad_avg"] = xp.zeros_like(param.data)
        return state

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: None,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.rmsprop``), rounded as the passes of ``update_block``."""
        cast, alpha = dtype.type, group["alpha"]
        return kernels.rmsprop, (*_decay_scalars(group["weight_decay"], dtype), cast(alpha),
                                 cast(1 - alpha), *lerp_scalars(1 - alpha, dtype),
                                 cast(group["eps"]), bool(group["eps_inside_sqrt"]),
                                 cast(group["momentum"]), cast(-group["lr"]))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        """ḡ where the group is centered and the momentum buffer where it has momentum (the
        state has them exactly then: ``init_state``), else None."""
        return (arrays["data"], arrays["grad"], arrays["square_avg"], arrays.get("grad_avg"),
                arrays.get("momentum_buffer"))

    def update_block(self, block: Block, group: dict[str, Any], scalars: None) -> None:
        xp = array_module(block.data)
        alpha, eps = group["alpha"], group["eps"]
        square_avg = block.state["square_avg"]
        g = _coupled_grad(block, group["weight_decay"])
        avg = block.scratch(1)
        square_avg *= alpha
        add_scaled_square_(square_avg, g, 1 - alpha, avg)
        if group["centered"]:
            lerp_(block.state["grad_avg"], g, 1 - alpha, avg)
            _centered_root_(square_avg, block.state["grad_avg"], eps,
                            group["eps_inside_sqrt"], avg)
        elif group["eps_inside_sqrt"]:
            xp.sqrt(xp.add(square_avg, eps, out=avg), out=avg)
        else:
            xp.sqrt(square_avg, out=avg)
        if not group["eps_inside_sqrt"]:
            avg += eps
        xp.divide(g, avg, out=avg)
        if group["momentum"] > 0:
            buf = block.state["momentum_buffer"]
            buf *= group["momentum"]
            buf += avg
            xp.multiply(buf, -group["lr"], out=avg)
        else:
            avg *= -group["lr"]
        block.data += avg
