"""Stochastic gradient descent with momentum: torch's form, classic form, look-ahead Nesterov."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ermlab.backend import array_module
from ermlab.nn.parameter import Parameter
from ermlab.optim.inplace import FLUSH_BELOW, Block, InPlaceOptimizer, axpy_
from ermlab.optim.traits import Traits

MOMENTUM_FORMS = ("torch", "classic")


class SGD(InPlaceOptimizer):
    """Stochastic gradient descent (Robbins & Monro 1951) with momentum (Polyak 1964).

    With g = ∇θ + λθ (``weight_decay`` λ: coupled L2, the gradient of λ/2 ‖θ‖²):

        no momentum:              θ ← θ − γ g

        ``momentum_form="torch"`` (torch.optim.SGD, the default; γ outside the buffer):
            v ← μ v + (1 − τ) g          (v₁ = g: no dampening τ on the first step)
            θ ← θ − γ v                  (``nesterov=False``)
            θ ← θ − γ (g + μ v)          (``nesterov=True``, Sutskever's form rewritten
                                          in the look-ahead variable, as torch does)

        ``momentum_form="classic"`` (Polyak; Sutskever et al. 2013; Keras, Chainer's
        MomentumSGD; γ inside the buffer):
            v ← μ v + (1 − τ) γ g        (v₁ = γ g)
            θ ← θ − v                    (``nesterov=False``)
            θ ← θ − (γ g + μ v)          (``nesterov=True``)
            With ``nesterov="lookahead"``: Sutskever et al. (2013), eq. (3)–(4),
            the gradient taken at the look-ahead point θ + μv,
                v ← μ v − γ ∇f(θ + μ v),   θ ← θ + v      (v₀ = 0; note the sign of v)
            ``step(closure)`` moves the parameters to θ + μv, calls ``closure`` (which
            must zero the grads, recompute them there and return the loss), then updates.

    The two forms give the same iterates while γ is constant (v_classic = γ v_torch);
    they differ once γ is scheduled: in torch's form a new γ rescales the whole
    accumulated velocity at once, in the classic form only new gradients. Look-ahead
    Nesterov and torch's ``nesterov=True`` are the same sequence under the change of
    variables φ = θ + μv (torch's parameters are φ) for constant γ.

    Args:
        params: Parameters or param-group dicts.
        lr: learning rate γ ≥ 0 (required, as in torch).
        momentum: μ ∈ [0, 1), default 0.
        dampening: τ, default 0.
        weight_decay: λ ≥ 0, default 0 (coupled: it goes through the momentum buffer;
            for decoupled decay see ``transforms.decoupled_weight_decay_``).
        nesterov: False, True or ``"lookahead"`` (needs ``momentum_form="classic"``);
            Nesterov needs μ > 0 and τ = 0. Default False.
        momentum_form: ``"torch"`` (default) or ``"classic"``.
        threads: lanes a step is shared out among (``optim.inplace``); results do not
            depend on it.
        flush_every, flush_below: subnormal flush of the momentum buffer (see
            ``optim.inplace``); ``flush_every=0`` turns it off.

    Example:
        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); model.backward(loss.backward()); opt.step()
    """

    fused_rule = True  # optim._kernels updates it in one pass

    decaying_state = ("momentum_buffer",)
    traits = Traits(
        first_moment="momentum > 0", second_moment=False, leaky_average="momentum > 0",
        bias_correction=False, update="v ← μv + g;  θ ← θ − γv",
        reference="Robbins & Monro 1951; Polyak 1964; Sutskever et al. 2013")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool | str = False,
        momentum_form: str = "torch",
        *,
        flush_every: int = 16,
        flush_below: float | None = FLUSH_BELOW,
        threads: int | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov,
                        momentum_form=momentum_form)
        super().__init__(params, defaults, flush_every, flush_below, threads)

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        self.require_unit_interval(group, "momentum")
        self.require_nonnegative(group, "weight_decay")
        if not 0 <= group["dampening"] <= 1:
            raise ValueError(f"SGD dampening must be in [0, 1] (the velocity takes (1 − dampening) "
                             f"of each gradient); got {group['dampening']}")
        if group["momentum_form"] not in MOMENTUM_FORMS:
            raise ValueError(
                f"SGD momentum_form must be one of {MOMENTUM_FORMS}; got {group['momentum_form']!r}"
            )
        nesterov = group["nesterov"]
        if nesterov not in (False, True, "lookahead"):
            raise ValueError(f"SGD nesterov must be False, True or 'lookahead'; got {nesterov!r}")
        if nesterov and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD nesterov needs momentum > 0 and dampening = 0")
        if nesterov == "lookahead" and group["momentum_form"] != "classic":
            raise ValueError(
                "SGD nesterov='lookahead' (Sutskever et al. 2013) keeps the velocity in the "
                "classic form; pass momentum_form='classic'"
            )

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0}

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        lookahead = [g for g in self.param_groups if g["nesterov"] == "lookahead"]
        if not lookahead:
            return super().step(closure)
        if closure is None:
            raise ValueError(
                "SGD(nesterov='lookahead') needs the gradient at θ + μv: call "
                "step(closure) with a closure that zeroes the grads, recomputes them at the "
                "current parameters and returns the loss"
            )
        for group in lookahead:
            for param in group["params"]:
                state = self.state.get(param)
                if state is None:
                    state = self.state[param] = self.init_state(param, group)
                v = state.get("momentum_buffer")
                if v is None:
                    v = state["momentum_buffer"] = array_module(param.data).zeros_like(param.data)
                saved = self.scratch(param, 2)
                saved[...] = param.data
                shift = self.scratch(param, 0)
                array_module(v).multiply(v, group["momentum"], out=shift)
                param.data += shift
        loss = closure()
        super().step(None)
        return loss

    def passes(self, group: dict[str, Any]) -> int:
        momentum = 4 + 2 * bool(group["nesterov"]) if group["momentum"] else 2
        return momentum + 2 * bool(group["weight_decay"])

    def scalars(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> bool:
        """Create the momentum buffer on the first step; return whether this is that step."""
        first = bool(group["momentum"]) and "momentum_buffer" not in state
        if first:
            state["momentum_buffer"] = array_module(param.data).empty_like(param.data)
        return first

    def _fused_group(self, group: dict[str, Any]) -> bool:
        """Lookahead Nesterov takes the NumPy path (BLAS ``?axpy``) even where the kernels
        could run."""
        return group["nesterov"] != "lookahead" and super()._fused_group(group)

    def fused_kernel(self, kernels: Any, group: dict[str, Any], first: bool,
                     dtype: Any) -> tuple[Any, tuple]:
        """torch's or the classic form in one pass (``optim._kernels``, rounded as the passes
        of ``update_block``)."""
        cast = dtype.type
        lr, mu, wd, damp = group["lr"], group["momentum"], group["weight_decay"], group["dampening"]
        if mu and group["momentum_form"] == "classic":
            return kernels.sgd_classic, (cast(lr), cast(mu), cast(lr * (1 - damp)), cast(wd),
                                         bool(wd), first, bool(group["nesterov"]))
        return kernels.sgd, (cast(-lr), cast(mu), bool(damp), cast(1 - damp), cast(wd),
                             bool(wd), first, bool(group["nesterov"]), cast(-lr * mu))

    def fused_arrays(self, arrays: dict[str, Any], group: dict[str, Any]) -> tuple:
        return (arrays["data"], arrays["grad"],
                arrays["momentum_buffer"] if group["momentum"] else None)

    def update_block(self, block: Block, group: dict[str, Any], first: bool) -> None:
        xp = array_module(block.data)
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        g = block.grad
        if wd:
            g = xp.multiply(block.data, wd, out=block.scratch(0))
            g += block.grad
        if group["nesterov"] == "lookahead":
            self._lookahead_update(block, g, lr, mu)
        elif not mu:
            axpy_(block.data, -lr, g, block.scratch(1))
        elif group["momentum_form"] == "torch":
            self._torch_update(block, g, group, first)
        else:
            self._classic_update(block, g, group, first)

    def _torch_update(self, block, g, group, first) -> None:
        xp = array_module(block.data)
        lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
        v = block.state["momentum_buffer"]
        d = block.scratch(1)
        if first:
            v[...] = g
        else:
            v *= mu
            if damp:
                v += xp.multiply(g, 1 - damp, out=d)
            else:
                v += g
        if group["nesterov"]:  # θ ← θ − γg − γμv: two passes over θ instead of forming g + μv
            axpy_(block.data, -lr, g, d)
            axpy_(block.data, -lr * mu, v, d)
        else:
            axpy_(block.data, -lr, v, d)

    def _classic_update(self, block, g, group, first) -> None:
        xp = array_module(block.data)
        lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
        v = block.state["momentum_buffer"]
        d = block.scratch(1)
        if first:
            xp.multiply(g, lr, out=v)
        else:
            v *= mu
            v += xp.multiply(g, lr * (1 - damp), out=d)
        if group["nesterov"]:
            xp.multiply(v, mu, out=d)
            d += xp.multiply(g, lr, out=block.scratch(2))
            block.data -= d
        else:
            block.data -= v

    def _lookahead_update(self, block, g, lr, mu) -> None:
        xp = array_module(block.data)
        v = block.state["momentum_buffer"]
        v *= mu
        v -= xp.multiply(g, lr, out=block.scratch(1))
        saved = block.view(self.scratch(block.param, 2))
        xp.add(saved, v, out=block.data)
