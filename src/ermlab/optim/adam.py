"""Adam and its relatives: Adam (with AMSGrad), AdamW, Adamax, NAdam — torch.optim's forms.

Coupled vs decoupled weight decay (Loshchilov & Hutter 2019): coupled L2 adds
λθ to the gradient, so it passes through the moment estimates and is divided
by √v̂ — weights with large gradients are decayed less. Decoupled decay shrinks
the weights directly, θ ← θ (1 − γλ), before the adaptive step, the same for
every weight. For plain SGD the two coincide (up to γ); for Adam they do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.parameter import Parameter
from ermlab.optim.inplace import (
    FLUSH_BELOW,
    Block,
    InPlaceOptimizer,
    add_scaled_square_,
    axpy_,
    hidden_by_eps,
    lerp_,
    lerp_scalars,
)
from ermlab.optim.traits import Traits


def _pair(betas: Any) -> Any:
    """(β₁, β₂) as a tuple; anything not a sequence is left for ``require_betas`` to name."""
    return tuple(betas) if isinstance(betas, Iterable) and not isinstance(betas, str) else betas


class _AdamFamily(InPlaceOptimizer):
    """Shared checks and the weight-decay step of the Adam family."""

    fused_rule = True  # optim._kernels updates it in one pass

    traits = None  # a base class, not an optimizer of its own (see optim.traits)
    decaying_state = ("exp_avg",)
    denominator_state = ("exp_avg_sq", "max_exp_avg_sq")

    def denominators_hidden(self, group: dict[str, Any], dtype: Any) -> bool:
        """√(v / (1 − β₂ᵗ)) + ε with 1/(1 − β₂ᵗ) ≤ 1/(1 − β₂): ε must hide √(τ/(1 − β₂))."""
        return hidden_by_eps(group["eps"], dtype, 1 / (1 - group["betas"][1]),
                             below=self.flush_below)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_betas(group)
        self.require_nonnegative(group, "eps", "weight_decay")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = array_module(param.data)
        return {"step": 0, "exp_avg": xp.zeros_like(param.data),
                "exp_avg_sq": xp.zeros_like(param.data)}

    def decay_scalars(self, group: dict[str, Any], dtype: Any) -> tuple[Any, Any, bool]:
        """Weight decay for a fused kernel: the factor 1 − γλ on θ (1 unless decoupled),
        λ and whether g = ∇θ + λθ (coupled), rounded to ``dtype``."""
        cast, wd = dtype.type, group["weight_decay"]
        if not wd:
            return cast(1.0), cast(0.0), False
        if group.get("decoupled_weight_decay", False):
            return cast(1 - group["lr"] * wd), cast(0.0), False
        return cast(1.0), cast(wd), True

    def decayed_grad(self, block: Block, group: dict[str, Any]) -> Any:
        """Apply weight decay: decoupled θ ← θ(1 − γλ), or coupled g = ∇θ + λθ (returned)."""
        wd = group["weight_decay"]
        if not wd:
            return block.grad
        if group.get("decoupled_weight_decay", False):
            block.data *= 1 - group["lr"] * wd
            return block.grad
        xp = array_module(block.data)
        g = xp.multiply(block.data, wd, out=block.scratch(0))
        g += block.grad
        return g


class Adam(_AdamFamily):
    """Adam (Kingma & Ba 2015, Algorithm 1), torch.optim.Adam's form.

        m ← β₁ m + (1 − β₁) g,     v ← β₂ v + (1 − β₂) g²
        m̂ = m / (1 − β₁ᵗ),         v̂ = v / (1 − β₂ᵗ)
        θ ← θ − γ m̂ / (√v̂ + ε)

    AMSGrad (Reddi, Kale & Kumar 2018), as torch does it: v_max ← max(v_max, v)
    on the *raw* second moment, then √v_max / √(1 − β₂ᵗ) replaces √v̂. (The paper
    has no bias correction; Optax's ``amsgrad`` takes the max of the bias-corrected
    v̂ instead, which differs early in training.)

    Where frameworks differ: ε is added to √v̂ after bias correction (torch,
    Optax); TensorFlow/Keras add ε̂ to √v before correcting (the paper's
    "efficient version"), i.e. a step-dependent ε.

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 1e-3.
        betas: (β₁, β₂) in [0, 1), default (0.9, 0.999).
        eps: ε ≥ 0, default 1e-8.
        weight_decay: λ ≥ 0, default 0 (coupled L2 unless ``decoupled_weight_decay``).
        amsgrad: default False.
        decoupled_weight_decay: θ ← θ(1 − γλ) instead (this is AdamW), default False.
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of m, and of v, v_max where ε hides
            them (``optim.inplace``).

    Example:
        >>> opt = Adam(model.parameters(), lr=1e-3)
    """

    traits = Traits(
        first_moment=True, second_moment=True, leaky_average=True, bias_correction=True,
        update="m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  θ ← θ − γ m̂/(√v̂ + ε)",
        reference="Kingma & Ba 2015")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        decoupled_weight_decay: bool = False,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        state = super().init_state(param, group)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = array_module(param.data).zeros_like(param.data)
        return state

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> tuple:
        """γ/(1 − β₁ᵗ) and √(1 − β₂ᵗ)."""
        t = state["step"]
        beta1, beta2 = group["betas"]
        return group["lr"] / (1 - beta1**t), (1 - beta2**t) ** 0.5

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: tuple,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.adam``), rounded as the passes of ``update_block``."""
        step_size, bias_correction2_sqrt = scalars
        beta1, beta2 = group["betas"]
        cast = dtype.type
        return kernels.adam, (*self.decay_scalars(group, dtype), *lerp_scalars(1 - beta1, dtype),
                              cast(beta2), cast(1 - beta2),
                              cast(group["eps"] * bias_correction2_sqrt),
                              cast(-step_size * bias_correction2_sqrt))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return (arrays["data"], arrays["grad"], arrays["exp_avg"], arrays["exp_avg_sq"],
                arrays["max_exp_avg_sq"] if group["amsgrad"] else None)

    def update_block(self, block: Block, group: dict[str, Any], scalars: tuple) -> None:
        xp = array_module(block.data)
        step_size, bias_correction2_sqrt = scalars
        beta1, beta2 = group["betas"]
        m, v = block.state["exp_avg"], block.state["exp_avg_sq"]
        g = self.decayed_grad(block, group)
        d = block.scratch(1)
        lerp_(m, g, 1 - beta1, d)
        v *= beta2
        add_scaled_square_(v, g, 1 - beta2, d)
        if group["amsgrad"]:
            v = xp.maximum(block.state["max_exp_avg_sq"], v, out=block.state["max_exp_avg_sq"])
        # γ/(1 − β₁ᵗ) · m/(√v/b + ε) = γb/(1 − β₁ᵗ) · m/(√v + εb), b = √(1 − β₂ᵗ): one
        # pass fewer than torch's order (equal up to rounding, a few ulps)
        xp.sqrt(v, out=d)
        d += group["eps"] * bias_correction2_sqrt
        xp.divide(m, d, out=d)
        axpy_(block.data, -step_size * bias_correction2_sqrt, d, d)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, torch.optim.AdamW.

        θ ← θ (1 − γλ);   then the Adam step of ``Adam`` on the raw gradient g.

    Defaults as torch: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay λ=1e-2,
    amsgrad=False. Where frameworks differ: the paper (Algorithm 2, line 12)
    scales λ by the schedule multiplier η_t only, θ ← θ − η_t(α m̂/(√v̂+ε) + λθ);
    torch and Optax scale it by the learning rate γ, as here.

    Example:
        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    """

    traits = Traits(
        first_moment=True, second_moment=True, leaky_average=True, bias_correction=True,
        update="θ ← θ(1 − γλ);  then Adam's step: θ ← θ − γ m̂/(√v̂ + ε)",
        reference="Loshchilov & Hutter 2019")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         decoupled_weight_decay=True, flush_every=flush_every,
                         flush_below=flush_below, threads=threads)


class Adamax(_AdamFamily):
    """Adamax (Kingma & Ba 2015, Algorithm 2, the ℓ∞ variant), torch.optim.Adamax's form.

        m ← β₁ m + (1 − β₁) g
        u ← max(β₂ u, |g| + ε)
        θ ← θ − γ/(1 − β₁ᵗ) · m / u

    Where frameworks differ: torch and Optax (and here) add ε inside the max; the
    paper has no ε; Keras divides by (u + ε) with u = max(β₂u, |g|).

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 2e-3.
        betas: (β₁, β₂) in [0, 1), default (0.9, 0.999).
        eps: ε ≥ 0, default 1e-8.
        weight_decay: λ ≥ 0 (coupled L2), default 0.
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of m (``optim.inplace``); u ≥ ε is
            never flushed.

    Example:
        >>> opt = Adamax(model.parameters())
    """

    # u = max(β₂u, |g| + ε) ≥ ε is subnormal only when ε is, and then m/u needs it.
    denominator_state = ()
    traits = Traits(
        first_moment=True, second_moment="ℓ∞ norm u = max(β₂u, |g| + ε)", leaky_average=True,
        bias_correction="first moment only",
        update="m ← β₁m + (1 − β₁)g;  u ← max(β₂u, |g| + ε);  θ ← θ − γ/(1 − β₁ᵗ)·m/u",
        reference="Kingma & Ba 2015, Algorithm 2")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = array_module(param.data)
        return {"step": 0, "exp_avg": xp.zeros_like(param.data),
                "exp_inf": xp.zeros_like(param.data)}

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> float:
        """γ/(1 − β₁ᵗ)."""
        return group["lr"] / (1 - group["betas"][0] ** state["step"])

    def fused_kernel(self, kernels: Any, group: dict[str, Any], clr: float,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.adamax``), rounded as the passes of ``update_block``."""
        beta1, beta2 = group["betas"]
        cast = dtype.type
        return kernels.adamax, (*self.decay_scalars(group, dtype),
                                *lerp_scalars(1 - beta1, dtype), cast(beta2),
                                cast(group["eps"]), cast(-clr))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["exp_avg"], arrays["exp_inf"]

    def update_block(self, block: Block, group: dict[str, Any], clr: float) -> None:
        xp = array_module(block.data)
        beta1, beta2 = group["betas"]
        m, u = block.state["exp_avg"], block.state["exp_inf"]
        g = self.decayed_grad(block, group)
        d = block.scratch(1)
        lerp_(m, g, 1 - beta1, d)
        u *= beta2
        xp.abs(g, out=d)
        d += group["eps"]
        xp.maximum(u, d, out=u)
        xp.divide(m, u, out=d)
        axpy_(block.data, -clr, d, d)


class NAdam(_AdamFamily):
    """NAdam (Dozat 2016, "Incorporating Nesterov momentum into Adam"), torch.optim.NAdam.

        μ_t = β₁ (1 − ½ · 0.96^{t ψ})                 (``momentum_decay`` ψ)
        m ← β₁ m + (1 − β₁) g,    v ← β₂ v + (1 − β₂) g²,    v̂ = v / (1 − β₂ᵗ)
        θ ← θ − γ (1 − μ_t)/(1 − Π_{i≤t} μ_i) · g/(√v̂ + ε)
              − γ μ_{t+1}/(1 − Π_{i≤t+1} μ_i) · m/(√v̂ + ε)

    Where frameworks differ: the μ_t warm-up schedule is Dozat's (torch, here);
    Keras uses it too, Optax's ``nadam`` uses a constant β₁ with Adam's bias
    correction. ``decoupled_weight_decay=True`` gives NAdamW.

    Args:
        params: Parameters or param-group dicts.
        lr: γ, default 2e-3.
        betas: (β₁, β₂) in [0, 1), default (0.9, 0.999).
        eps: ε ≥ 0, default 1e-8.
        weight_decay: λ ≥ 0, default 0 (coupled unless ``decoupled_weight_decay``).
        momentum_decay: ψ ≥ 0, default 4e-3.
        decoupled_weight_decay: θ ← θ(1 − γλ), default False.
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of m, and of v where ε hides it
            (``optim.inplace``).

    Example:
        >>> opt = NAdam(model.parameters(), lr=2e-3)
    """

    traits = Traits(
        first_moment=True, second_moment=True, leaky_average=True, bias_correction=True,
        update="Adam's m, v̂;  θ ← θ − γ[(1 − μ_t)ĝ + μ_{t+1}m̂]/(√v̂ + ε)  (Nesterov look-ahead)",
        reference="Dozat 2016")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_nonnegative(group, "momentum_decay")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        state = super().init_state(param, group)
        state["mu_product"] = 1.0
        return state

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> tuple:
        """1 − β₂ᵗ and the coefficients of g and m; advances Π μ_i (once per step)."""
        t = state["step"]
        lr, psi = group["lr"], group["momentum_decay"]
        beta1, beta2 = group["betas"]
        bias_correction2 = 1 - beta2**t
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
        state["mu_product"] *= mu
        mu_product = state["mu_product"]
        mu_product_next = mu_product * mu_next
        return (bias_correction2, -lr * (1.0 - mu) / (1.0 - mu_product),
                (-lr * mu_next) / (1.0 - mu_product_next))

    def fused_kernel(self, kernels: Any, group: dict[str, Any], scalars: tuple,
                     dtype: Any) -> tuple[Any, tuple]:
        """One pass (``optim._kernels.nadam``), rounded as the passes of ``update_block``."""
        bias_correction2, grad_coef, exp_avg_coef = scalars
        beta1, beta2 = group["betas"]
        cast = dtype.type
        return kernels.nadam, (*self.decay_scalars(group, dtype), *lerp_scalars(1 - beta1, dtype),
                               cast(beta2), cast(1 - beta2), cast(bias_correction2),
                               cast(group["eps"]), cast(grad_coef), cast(exp_avg_coef))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return arrays["data"], arrays["grad"], arrays["exp_avg"], arrays["exp_avg_sq"]

    def update_block(self, block: Block, group: dict[str, Any], scalars: tuple) -> None:
        xp = array_module(block.data)
        bias_correction2, grad_coef, exp_avg_coef = scalars
        beta1, beta2 = group["betas"]
        m, v = block.state["exp_avg"], block.state["exp_avg_sq"]
        g = self.decayed_grad(block, group)
        denom, d = block.scratch(1), block.scratch(2)
        lerp_(m, g, 1 - beta1, denom)
        v *= beta2
        add_scaled_square_(v, g, 1 - beta2, denom)
        xp.divide(v, bias_correction2, out=denom)
        xp.sqrt(denom, out=denom)
        denom += group["eps"]
        xp.divide(g, denom, out=d)
        axpy_(block.data, grad_coef, d, d)
        xp.divide(m, denom, out=d)
        axpy_(block.data, exp_avg_coef, d, d)
