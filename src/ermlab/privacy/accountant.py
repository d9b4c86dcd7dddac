"""The privacy accountant: (ε, δ) spent by DP-SGD, from Google's ``dp_accounting``.

One DP-SGD step releases a Poisson-subsampled Gaussian mechanism: sampling rate q,
noise N(0, σ²C²) on a sum of gradients clipped to norm C (sensitivity C, so noise
multiplier σ). T steps are its T-fold composition. The accountant turns
(q, σ, T, δ) into the smallest ε it can certify:

* ``"rdp"`` (default): Rényi DP of the sampled Gaussian (Mironov 2017; Mironov, Talwar
  & Zhang 2019), composed additively over T, RDP_T(α) = T · RDP_1(α), and converted
  to (ε, δ) with the conversion of Balle et al. 2020 (the one Opacus's
  ``RDPAccountant`` uses too), at the best of the orders α in ``orders`` (default:
  dp_accounting's). RDP_1 is computed once per (σ, q, orders) by dp-accounting's
  ``RdpAccountant`` and kept, so the ε of every epoch costs only the conversion.
  Against Opacus's ``RDPAccountant``: equal at integer orders (to rounding); at
  fractional orders dp-accounting's series for the sampled Gaussian's RDP
  overestimates it (it bounds the terms of alternating sign by their magnitudes), so
  its ε is the larger, never the smaller: by under 10⁻³ relative at σ ≥ 1, q ≤ 0.01,
  by 3.7 % at σ = 0.7, q = 0.05, T = 2000, δ = 10⁻⁶ (44.6 against 43.0), by more at
  large q·T and small σ. Conservative, so no privacy is over-claimed; what it costs is
  noise (``calibrate_noise`` then picks a larger σ than Opacus would);
* ``"pld"``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022),
  tighter, slower.

Neighbouring datasets differ by adding or removing one example (the relation under
which Poisson sampling is analysed). We do not write an accountant: this module only
builds the ``dp_accounting`` events (``pip install "ermlab[privacy]"``).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

ACCOUNTANTS = ("rdp", "pld")


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError:
        raise ImportError('the privacy accountant needs dp-accounting: pip install '
                          '"ermlab[privacy]"') from None
    return dp_accounting


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}; got {accountant!r}")
    return accountant


def _fresh(accountant: str, orders: Sequence[float] | None) -> Any:
    dpa = _dp_accounting()
    if check_accountant(accountant) == "pld":
        return dpa.pld.PLDAccountant()
    return dpa.rdp.RdpAccountant(orders=None if orders is None else list(orders))


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    dpa = _dp_accounting()
    step = dpa.PoissonSampledDpEvent(sample_rate, dpa.GaussianDpEvent(noise_multiplier))
    return dpa.SelfComposedDpEvent(step, int(steps))


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = "rdp", orders: Sequence[float] | None = None) -> float:
    """ε of ``steps`` DP-SGD steps at sampling rate q and noise multiplier σ, for ``delta``.

    0 for no steps; ∞ for σ = 0 (no noise, no privacy).

    Example:
        >>> epsilon(1.1, 256 / 60000, 60 * 235, 1e-5)     # ≈ 2.6 (Abadi et al.'s MNIST setting)
    """
    steps = _check_steps(steps)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if check_accountant(accountant) == "rdp":
        orders_used, rdp = _rdp_per_step(float(noise_multiplier), float(sample_rate),
                                         None if orders is None else tuple(orders))
        eps, _ = _dp_accounting().rdp.compute_epsilon(orders_used, rdp * int(steps), delta)
        return float(eps)
    acc = _fresh(accountant, orders)
    acc.compose(_event(noise_multiplier, sample_rate, steps))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def _rdp_per_step(noise_multiplier: float, sample_rate: float,
                  orders: tuple[float, ...] | None) -> tuple[Any, Any]:
    """(orders, RDP of one step at each order), from dp-accounting's RdpAccountant."""
    acc = _fresh("rdp", orders)
    acc.compose(_event(noise_multiplier, sample_rate, 1))
    return acc.orders, acc.rdp


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "rdp") -> float:
    """The smallest noise multiplier σ whose ``steps`` steps spend at most ``target_epsilon``
    (dp_accounting's ``calibrate_dp_mechanism``, a bracketed root search).

    The search for ``"pld"`` starts from RDP's σ (PLD's bound is the tighter, so its σ is
    at most RDP's) and half of it, halved again while that still meets the target: a
    PLD at a tiny σ, where a search from 10⁻³ would start, needs a grid of billions of
    points (38 GiB at q = 0.01, T = 300)."""
    dpa = _dp_accounting()
    steps = _check_steps(steps)
    if check_accountant(accountant) == "rdp":
        bracket = dpa.LowerEndpointAndGuess(1e-3, 1.0)
    else:
        guess = calibrate_noise(target_epsilon, delta, sample_rate, steps, "rdp")
        lower = guess / 2
        while (lower > guess / 64
               and epsilon(lower, sample_rate, steps, delta, accountant) <= target_epsilon):
            lower /= 2
        bracket = dpa.LowerEndpointAndGuess(lower, guess)
    return float(dpa.calibrate_dp_mechanism(
        lambda: _fresh(accountant, None),
        lambda sigma: _event(sigma, sample_rate, steps),
        target_epsilon, delta, bracket_interval=bracket, tol=1e-4))


def _check_steps(steps: Any) -> int:
    """``steps`` as an int, or a ValueError: a count of DP-SGD steps (an integer ≥ 0)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0 (DP-SGD steps taken); got {steps!r}")
    return int(steps)
