"""Delay-tolerant AdaGrad: McMahan & Streeter's AdaptiveRevision, a server-side optimizer.

A gradient g that reaches the server τ updates after the read it was computed
on arrives together with a *backlog*: the gradients other workers applied in
between. With ḡ the server's running sum of every gradient applied (per
coordinate) and ḡ^old its value at the read, AdaptiveRevision (McMahan &
Streeter 2014) updates, per coordinate:

    ḡ^bck  = ḡ − ḡ^old                       (the backlog: gradients applied since the read)
    η_old  = γ / (√z' + ε)
    z      ← z + g² + 2 g ḡ^bck
    z'     ← max(z', z)
    η      = γ / (√z' + ε)
    θ      ← θ − η g + (η_old − η) ḡ^bck     (revise the rate of the backlog's steps)
    ḡ      ← ḡ + g

z replaces AdaGrad's Σg²: g² + 2 g ḡ^bck is the growth of (Σ g)² that a
delayed g causes, so gradients that agree with their backlog shrink the rate
faster, and the last term revises the steps already taken with the old rate.
With no delay (ḡ^bck = 0) it is exactly AdaGrad (``optim.Adagrad``,
lr_decay = weight_decay = 0, ε outside the root as in torch): z = z' = Σg² and
θ ← θ − γ g / (√Σg² + ε) — a test checks the equality.

ḡ^old travels with the read: ``read_state()`` gives the ḡ arrays a pull hands
to the worker, and the push returns them (``step(read_state=...)``), as the
paper proposes, so the server keeps no memory per worker. A step without a
read state has no backlog (single-process use is plain AdaGrad).

Reference: H. B. McMahan and M. Streeter (2014), "Delay-Tolerant Algorithms
for Asynchronous Distributed Online Learning", NIPS 27 (AdaptiveRevision).
The same update (in inverse-rate form, 1/η = (√z' + ε)/γ, with η_old taken
from z' before its update, as here) is the ``DTAdaGradHandle2`` of the dmlc
parameter server's linear learner (``delay_tol_handle.h``); a test checks that
the two agree step for step under random delays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy

from ermlab.nn.parameter import Parameter
from ermlab.optim.base import Optimizer
from ermlab.optim.traits import Traits


class DelayTolerantAdagrad(Optimizer):
    """AdaGrad with adaptive revision (see the module docstring for the update).

    Args:
        params: Parameters or param-group dicts.
        lr: γ > 0, default 1e-2.
        eps: ε ≥ 0 added to √z', default 1e-10 (torch Adagrad's).
        initial_accumulator_value: z₀ = z'₀ ≥ 0, default 0.
        (ε + z₀ must be positive: the first rate is γ / (√z₀ + ε).)

    Example:
        >>> opt = DelayTolerantAdagrad(model.parameters(), lr=0.05)
        >>> Trainer(model, loss, opt, strategy=Downpour(workers=8))
    """

    traits = Traits(
        first_moment=False, second_moment=True, leaky_average=False, bias_correction=False,
        update="z ← z + g² + 2g·ḡ_bck;  θ ← θ − ηg + (η_old − η)ḡ_bck,  η = γ/(√max z + ε)",
        reference="McMahan & Streeter 2014")

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value))
        self._index = {id(p): i for i, p in enumerate(self._indexed_params())}
        self._read: list | None = None
        self._scratch: dict[int, list[numpy.ndarray]] = {}

    def validate(self, group: dict[str, Any]) -> None:
        super().validate(group)
        for key in ("eps", "initial_accumulator_value"):
            if not group[key] >= 0:
                raise ValueError(f"DelayTolerantAdagrad needs {key} ≥ 0; got {group[key]}")
        if not group["eps"] + group["initial_accumulator_value"] > 0:
            raise ValueError("DelayTolerantAdagrad needs eps > 0 or initial_accumulator_value "
                             "> 0 (the first rate is lr / (√z₀ + eps))")

    def init_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        z0 = group["initial_accumulator_value"]
        return {"step": 0, "gbar": numpy.zeros_like(param.data),
                "z": numpy.full_like(param.data, z0), "z_max": numpy.full_like(param.data, z0)}

    def read_state(self) -> list[numpy.ndarray]:
        """Copies of ḡ, one per parameter (by position): what a read must remember."""
        return [self.state[p]["gbar"].copy() if p in self.state else numpy.zeros_like(p.data)
                for p in self._indexed_params()]

    def step(self, closure: Callable[[], float] | None = None,
             read_state: list | None = None) -> float | None:
        """One update; ``read_state`` is ``read_state()`` at the read g was computed on."""
        self._read = read_state
        try:
            return super().step(closure)
        finally:
            self._read = None

    def update(self, param: Parameter, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] += 1
        scratch = self._scratch.get(id(param))
        if scratch is None:
            scratch = self._scratch[id(param)] = [numpy.empty_like(param.data) for _ in range(3)]
        backlog, revision, d = scratch
        g, lr, eps = param.grad, group["lr"], group["eps"]
        if self._read is None:
            backlog.fill(0)
        else:
            numpy.subtract(state["gbar"], self._read[self._index[id(param)]], out=backlog)
        numpy.sqrt(state["z_max"], out=revision)          # η_old = γ / (√z' + ε)
        revision += eps
        numpy.divide(lr, revision, out=revision)
        numpy.multiply(backlog, 2, out=d)                 # z ← z + g (g + 2 ḡ^bck)
        d += g
        d *= g
        state["z"] += d
        numpy.maximum(state["z_max"], state["z"], out=state["z_max"])
        numpy.sqrt(state["z_max"], out=d)                 # θ ← θ − γ g / (√z' + ε)
        d += eps
        numpy.divide(g, d, out=d)
        d *= -lr
        param.data += d
        numpy.sqrt(state["z_max"], out=d)                 # + (η_old − η) ḡ^bck
        d += eps
        numpy.divide(lr, d, out=d)
        revision -= d
        revision *= backlog
        param.data += revision
        state["gbar"] += g
