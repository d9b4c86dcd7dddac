"""Learning-rate schedules: α_t for θ ← θ − α_t Δ, torch.optim.lr_scheduler's names and values.

A scheduler wraps an optimizer and writes ``group["lr"]`` in each of its param
groups. ``step()`` advances the schedule by one unit — one update or one epoch;
the scheduler does not care which, you choose by where you call it (after
``optimizer.step()``). Constructing a scheduler stores ``group["initial_lr"]``
(the base rate α₀, once) and applies the value for t = 0.

    sched = CosineAnnealingLR(opt, T_max=100)
    for epoch in range(100):
        train_one_epoch(opt)          # uses group["lr"] = α_epoch
        sched.step()

Values follow torch's *chainable* (recursive) forms, α_t = α_{t−1} · factor_t,
applied to the current ``group["lr"]``, not to α₀: that is what lets
``ChainedScheduler`` compose schedules by multiplying their factors, and it
reproduces torch's learning rates exactly (same floating-point operations).
Each class also has the closed form (``closed_form_lr``) that its docstring
quotes; it agrees with the recursive value to rounding (relative ~1e-15 per
step, e.g. ≤ 1e-13 after 100 cosine steps). ``SequentialLR`` uses the closed
form at t = 0 of each phase, as torch does.

Schedules: ConstantLR, LinearLR (warmup), StepLR, MultiStepLR, ExponentialLR,
InverseTimeLR (α/(1 + δt), Bottou 2012; not in torch), CosineAnnealingLR,
CosineAnnealingWarmRestarts (SGDR), ReduceLROnPlateau, and the combinators
SequentialLR and ChainedScheduler.

A param group added to the optimizer after the scheduler was built
(``optimizer.add_param_group``) is treated as torch treats it: the chainable
forms multiply its rate too from then on; a value that needs the group's
initial rate α₀ (``closed_form_lr``, CosineAnnealingLR at the top of a period,
CosineAnnealingWarmRestarts, a SequentialLR milestone) raises ValueError,
since the scheduler never saw it; ReduceLROnPlateau extends a single
``min_lr`` to the new group and raises RuntimeError for a per-group list.
``load_state_dict`` refuses the state of a scheduler that ran over a
different number of groups.

Differences from torch: no deprecated ``step(epoch)``, no ``last_epoch``
constructor argument (resume with ``load_state_dict``), and arguments torch
accepts silently but that make no schedule (γ ≤ 0, T_0 < 1, ...) raise
ValueError. ``state_dict`` holds only plain Python values.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from ermlab.optim.base import check_integer


class LRScheduler:
    """Base: ``step()`` sets t ← t + 1 and ``group["lr"]`` ← α_t for every param group.

    Subclasses write ``get_lr()`` (the chainable form, from the current
    ``group["lr"]`` and ``last_epoch`` = t) and optionally ``closed_form_lr()``
    (from ``base_lrs`` = α₀ per group).
    """

    def __init__(self, optimizer: Any) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        """Advance the schedule by one unit (an update or an epoch) and set the rates."""
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        _set_lrs(self, values)

    def apply_lr(self) -> None:
        """Every param group's rate ← ``get_lr()``: the schedule's rate where it stands, after
        its position was set by hand or by ``load_state_dict`` (which, as torch's, leaves the
        optimizer's rates alone)."""
        _set_lrs(self, self.get_lr())

    def get_lr(self) -> list[float]:
        """The rates for t = ``last_epoch`` (chainable form)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_lr")

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step`` (one per param group)."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (plain Python values)."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``; restore the optimizer's own state too."""
        _check_saved_groups(self, state_dict)
        self.__dict__.update(copy.deepcopy(state_dict))

    def initial_lrs(self) -> list[float]:
        """α₀ of every param group (``base_lrs``), for the closed forms.

        A group added with ``add_param_group`` after the scheduler was built has no
        α₀ here: ValueError, where torch raises too (a zip of unequal lengths).
        """
        groups = len(self.optimizer.param_groups)
        if len(self.base_lrs) != groups:
            raise ValueError(
                f"{type(self).__name__} knows the initial rate of {len(self.base_lrs)} param "
                f"group(s) but the optimizer now has {groups} (add_param_group after the "
                "scheduler was built); build the scheduler after adding every group")
        return self.base_lrs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class ConstantLR(LRScheduler):
    """α_t = factor · α₀ for t < total_iters, then α₀ (torch.optim.lr_scheduler.ConstantLR).

    ``ConstantLR(opt, factor=1.0)`` is the constant schedule α_t = α₀.

    Args:
        optimizer: the optimizer whose ``group["lr"]`` is set.
        factor: multiplier during the first phase, in (0, 1] (default 1/3).
        total_iters: length of the first phase, ≥ 0 (default 5).
    """

    def __init__(self, optimizer: Any, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        if not 0 < factor <= 1:
            raise ValueError(f"ConstantLR factor must be in (0, 1]; got {factor}")
        check_integer("ConstantLR", "total_iters", total_iters, 0)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [g["lr"] * self.factor for g in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _lrs(self.optimizer)
        return [g["lr"] * (1.0 / self.factor) for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        scale = self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)
        return [base * scale for base in self.initial_lrs()]


class LinearLR(LRScheduler):
    """Linear warmup (or decay) of the multiplier, torch.optim.lr_scheduler.LinearLR.

        α_t = α₀ · (s + (e − s) · min(t, T) / T)

    with s = ``start_factor``, e = ``end_factor``, T = ``total_iters``.

    Warmup ("start with a small rate for the first updates", Goyal et al.
    2017) is ``LinearLR(opt, start_factor=0.01, total_iters=K)``, usually
    followed by another schedule through ``SequentialLR``.

    Args:
        start_factor: in (0, 1] (default 1/3).
        end_factor: in [0, 1] (default 1).
        total_iters: T ≥ 1 (default 5).
    """

    def __init__(self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR start_factor must be in (0, 1]; got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR end_factor must be in [0, 1]; got {end_factor}")
        check_integer("LinearLR", "total_iters", total_iters, 1)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [g["lr"] * self.start_factor for g in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _lrs(self.optimizer)
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        ratio = 1.0 + (e - s) / (T * s + (self.last_epoch - 1) * (e - s))
        return [g["lr"] * ratio for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        return [base * (s + (e - s) * min(T, self.last_epoch) / T) for base in self.initial_lrs()]


class StepLR(LRScheduler):
    """α_t = α₀ · γ^⌊t / step_size⌋ (torch.optim.lr_scheduler.StepLR).

    Args:
        step_size: the period, ≥ 1.
        gamma: the factor γ > 0 (default 0.1: ÷10 every ``step_size``).
    """

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        check_integer("StepLR", "step_size", step_size, 1)
        _check_gamma("StepLR", gamma)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _lrs(self.optimizer)
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        k = self.last_epoch // self.step_size
        return [base * self.gamma**k for base in self.initial_lrs()]


class MultiStepLR(LRScheduler):
    """α_t = α₀ · γ^(number of milestones ≤ t) (torch.optim.lr_scheduler.MultiStepLR).

    Args:
        milestones: non-decreasing step indices ≥ 1 (a repeated one applies γ twice).
        gamma: the factor γ > 0 (default 0.1).
    """

    def __init__(self, optimizer: Any, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.milestones = _check_milestones("MultiStepLR", milestones)
        _check_gamma("MultiStepLR", gamma)
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        count = self.milestones.count(self.last_epoch)
        if not count:
            return _lrs(self.optimizer)
        return [g["lr"] * self.gamma**count for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        k = bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma**k for base in self.initial_lrs()]


class ExponentialLR(LRScheduler):
    """α_t = α₀ · γ^t (torch.optim.lr_scheduler.ExponentialLR).

    Args:
        gamma: the factor γ > 0 per step.
    """

    def __init__(self, optimizer: Any, gamma: float) -> None:
        _check_gamma("ExponentialLR", gamma)
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return _lrs(self.optimizer)
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.initial_lrs()]


class InverseTimeLR(LRScheduler):
    """α_t = α₀ / (1 + δ · max(0, t − t₀)): constant for t₀ steps, then 1/t decay.

    The decreasing rate of the SGD seeds: Bottou (2012) recommends
    γ_t = γ₀ / (1 + γ₀ λ t) and keeping the rate fixed for the first updates;
    here δ = ``decay`` and t₀ = ``constant_steps``. The decay satisfies the
    Robbins–Monro conditions Σα_t = ∞, Σα_t² < ∞. Not in torch (it is
    ``LambdaLR(opt, lambda t: 1 / (1 + δ max(0, t − t₀)))`` there, and Keras's
    ``InverseTimeDecay`` with decay_steps = 1 and no constant phase). The
    chainable form is α_t = α_{t−1} · (1 + δ(k − 1)) / (1 + δk), k = t − t₀ > 0.

    Args:
        decay: δ ≥ 0 (per ``step()`` unit).
        constant_steps: t₀ ≥ 0, the number of steps at α₀ (default 0).

    Reference:
        L. Bottou. Stochastic Gradient Descent Tricks. In Neural Networks:
        Tricks of the Trade, 2nd ed., LNCS 7700, Springer 2012.
    """

    def __init__(self, optimizer: Any, decay: float, constant_steps: int = 0) -> None:
        if not decay >= 0:
            raise ValueError(f"InverseTimeLR decay must be ≥ 0; got {decay}")
        check_integer("InverseTimeLR", "constant_steps", constant_steps, 0)
        self.decay = decay
        self.constant_steps = constant_steps
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        k = self.last_epoch - self.constant_steps
        if self._is_initial or k <= 0:
            return _lrs(self.optimizer)
        ratio = (1 + self.decay * (k - 1)) / (1 + self.decay * k)
        return [g["lr"] * ratio for g in self.optimizer.param_groups]

    def closed_form_lr(self) -> list[float]:
        k = max(0, self.last_epoch - self.constant_steps)
        return [base / (1 + self.decay * k) for base in self.initial_lrs()]


class CosineAnnealingLR(LRScheduler):
    """Half-cosine decay from α₀ to η_min over T_max steps (torch's CosineAnnealingLR).

        α_t = η_min + ½ (α₀ − η_min) (1 + cos(π t / T_max))

    (Loshchilov & Hutter 2017, eq. 5, one cycle, no restarts). As in torch the
    rate is computed recursively,

        α_t = η_min + (α_{t−1} − η_min) · (1 + cos(π t / T_max)) / (1 + cos(π (t − 1) / T_max)),

    which equals the closed form to rounding (≤ 1e-13 relative after 100
    steps, more where α_t − η_min is tiny next to α₀). After T_max steps the
    rate follows the cosine back up (period 2 T_max), as torch's does; use
    CosineAnnealingWarmRestarts for restarts.

    Args:
        T_max: half period, ≥ 1.
        eta_min: the final rate η_min ≥ 0 (default 0).
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0) -> None:
        check_integer("CosineAnnealingLR", "T_max", T_max, 1)
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR eta_min must be ≥ 0; got {eta_min}")
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _lrs(self.optimizer)
        if self._step_count == 1 and t > 0:
            return self.closed_form_lr()
        if (t - 1 - T) % (2 * T) == 0:
            return [g["lr"] + (base - eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base, g in zip(self.initial_lrs(), groups)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (g["lr"] - eta_min) + eta_min for g in groups]

    def closed_form_lr(self) -> list[float]:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        return [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T)) / 2
                for base in self.initial_lrs()]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine annealing restarted every T_i steps, T_i = T_0 · T_mult^i.

        α_t = η_min + ½ (α₀ − η_min) (1 + cos(π T_cur / T_i))

    where T_cur counts the steps since the last restart (Loshchilov & Hutter
    2017, eq. 5); at a restart T_cur ← 0 and T_i ← T_mult · T_i. Values are the
    closed form (torch's too), so this schedule overrides rather than
    multiplies the current rate in a ``ChainedScheduler``.

    Args:
        T_0: length of the first cycle, an integer ≥ 1.
        T_mult: growth of the cycle length, an integer ≥ 1 (default 1).
        eta_min: the lowest rate η_min ≥ 0 (default 0).

    Reference:
        I. Loshchilov, F. Hutter. SGDR: Stochastic Gradient Descent with Warm
        Restarts. ICLR 2017.
    """

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        check_integer("CosineAnnealingWarmRestarts", "T_0", T_0, 1)
        check_integer("CosineAnnealingWarmRestarts", "T_mult", T_mult, 1)
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingWarmRestarts eta_min must be ≥ 0; got {eta_min}")
        self.T_0 = self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = -1
        super().__init__(optimizer)

    def step(self) -> None:
        if self.last_epoch < 0:
            self.T_i, self.T_cur = self.T_0, 0
        else:
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur -= self.T_i
                self.T_i *= self.T_mult
        self.last_epoch += 1
        self.apply_lr()

    def get_lr(self) -> list[float]:
        cos = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base - self.eta_min) * cos / 2 for base in self.initial_lrs()]


class ReduceLROnPlateau(LRScheduler):
    """α ← max(factor · α, min_lr) once a metric stops improving (torch's ReduceLROnPlateau).

    ``step(metric)`` once per evaluation. A value is an improvement when

        mode="min", threshold_mode="rel":  metric < best · (1 − threshold)
        mode="min", threshold_mode="abs":  metric < best − threshold
        mode="max": the mirror images (best · (1 + threshold), best + threshold).

    After more than ``patience`` evaluations without improvement the rate of
    every group is multiplied by ``factor`` (floored at ``min_lr``; skipped when
    the change would be ≤ ``eps``), then ``cooldown`` evaluations are ignored.

    Args:
        mode: "min" (a loss) or "max" (an accuracy). Default "min".
        factor: in [0, 1) (default 0.1).
        patience: evaluations without improvement tolerated, ≥ 0 (default 10).
        threshold: ≥ 0 (default 1e-4). threshold_mode: "rel" or "abs" (default "rel").
        cooldown: ≥ 0 (default 0).
        min_lr: a floor ≥ 0, one for all groups or a list with one per group (default 0).
        eps: the smallest change applied (default 1e-8).
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        _check_optimizer(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau mode must be 'min' or 'max'; got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceLROnPlateau threshold_mode must be 'rel' or 'abs'; got {threshold_mode!r}")
        if not 0 <= factor < 1:
            raise ValueError(f"ReduceLROnPlateau factor must be in [0, 1); got {factor}")
        check_integer("ReduceLROnPlateau", "patience", patience, 0)
        check_integer("ReduceLROnPlateau", "cooldown", cooldown, 0)
        n_groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n_groups:
                raise ValueError(f"ReduceLROnPlateau needs one min_lr per param group "
                                 f"({n_groups}); got {len(min_lr)}")
            min_lrs, self.default_min_lr = list(min_lr), None
        else:
            min_lrs, self.default_min_lr = [min_lr] * n_groups, min_lr
        for key, value in (("threshold", threshold), ("eps", eps), ("min_lr", min(min_lrs))):
            if not value >= 0:
                raise ValueError(f"ReduceLROnPlateau {key} must be ≥ 0; got {value}")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lrs, self.eps = cooldown, min_lrs, eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0
        self._last_lr = _lrs(optimizer)

    def step(self, metrics: float) -> None:  # type: ignore[override]
        """Record one evaluation of the monitored metric; reduce the rates if it stalls."""
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._match_groups()
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                old_lr = float(group["lr"])
                new_lr = max(old_lr * self.factor, min_lr)
                if old_lr - new_lr > self.eps:
                    group["lr"] = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def _match_groups(self) -> None:
        """One floor per param group, also for groups added since (torch's rule): a single
        ``min_lr`` extends to them, a per-group list cannot."""
        groups = len(self.optimizer.param_groups)
        if len(self.min_lrs) == groups:
            return
        if self.default_min_lr is None:
            raise RuntimeError(
                f"ReduceLROnPlateau has a min_lr for {len(self.min_lrs)} param group(s) but the "
                f"optimizer now has {groups} (add_param_group after the scheduler was built); "
                f"set scheduler.min_lrs to a list of {groups} floors")
        self.min_lrs = [self.default_min_lr] * groups

    def is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` from ``milestones[i−1]`` to ``milestones[i]`` (torch's SequentialLR).

    At a milestone the next schedule restarts from its own t = 0 (its closed
    form, from α₀): warmup then cosine is

        SequentialLR(opt, [LinearLR(opt, 0.01, total_iters=5),
                           CosineAnnealingLR(opt, T_max=95)], milestones=[5])

    Args:
        schedulers: the phases, built on the same optimizer (not ReduceLROnPlateau).
        milestones: increasing step indices ≥ 1, one fewer than schedulers.
    """

    def __init__(self, optimizer: Any, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int]) -> None:
        _check_children("SequentialLR", optimizer, schedulers)
        self.milestones = _check_milestones("SequentialLR", milestones)
        if len(set(self.milestones)) != len(self.milestones):
            raise ValueError(f"SequentialLR milestones must be strictly increasing; "
                             f"got {list(milestones)}")
        if len(self.milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR needs one milestone fewer than schedulers; got "
                f"{len(schedulers)} schedulers and {len(self.milestones)} milestones")
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self.last_epoch = 0
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            _undo_step(scheduler)
        first = self._schedulers[bisect_right(self.milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self.milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self.milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return _nested_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _nested_load_state_dict(self, state_dict)


class ChainedScheduler(LRScheduler):
    """Step several schedules at once: their (chainable) factors multiply (torch's).

    ``ChainedScheduler([ConstantLR(opt, 0.1, 2), ExponentialLR(opt, 0.9)])``
    gives α_t = α₀ · 0.9^t · (0.1 while t < 2). Schedules with closed-form
    values (CosineAnnealingWarmRestarts) override the product instead.

    Args:
        schedulers: built on the same optimizer (not ReduceLROnPlateau).
        optimizer: defaults to that of ``schedulers[0]``.
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Any = None) -> None:
        if len(schedulers) < 1:
            raise ValueError("ChainedScheduler needs at least one scheduler")
        optimizer = optimizer if optimizer is not None else schedulers[0].optimizer
        _check_children("ChainedScheduler", optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _lrs(optimizer)

    def step(self) -> None:
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _lrs(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return _nested_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _nested_load_state_dict(self, state_dict)


# -- helpers -------------------------------------------------------------------


def _lrs(optimizer: Any) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def _set_lrs(scheduler: LRScheduler, values: list[float]) -> None:
    """``group["lr"]`` ← value, one value per param group (torch's strict zip)."""
    groups = scheduler.optimizer.param_groups
    if len(values) != len(groups):
        raise ValueError(f"{type(scheduler).__name__} computed {len(values)} rate(s) for "
                         f"{len(groups)} param groups; build the scheduler after adding every "
                         "group")
    for group, lr in zip(groups, values):
        group["lr"] = lr
    scheduler._last_lr = _lrs(scheduler.optimizer)


def _check_saved_groups(scheduler: LRScheduler, state_dict: dict[str, Any]) -> None:
    """The saved scheduler ran over as many param groups as this one's optimizer has."""
    saved = state_dict.get("_last_lr")
    groups = len(scheduler.optimizer.param_groups)
    if saved is not None and len(saved) != groups:
        raise ValueError(
            f"{type(scheduler).__name__} state_dict was saved over {len(saved)} param group(s); "
            f"this optimizer has {groups}: load it into a scheduler on the same param groups")


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"a scheduler wraps an optimizer with param_groups; got "
                        f"{type(optimizer).__name__}")


def _check_gamma(name: str, gamma: float) -> None:
    if not 0 < gamma < math.inf:
        raise ValueError(f"{name} gamma must be > 0 (0.1 divides the rate by 10); got {gamma}")


def _check_milestones(name: str, milestones: Sequence[int]) -> list[int]:
    milestones = list(milestones)
    for m in milestones:
        check_integer(name, "milestones", m, 1)
    if milestones != sorted(milestones):
        raise ValueError(f"{name} milestones must be increasing; got {milestones}")
    return milestones


def _check_children(name: str, optimizer: Any, schedulers: Sequence[LRScheduler]) -> None:
    if len(schedulers) < 1:
        raise ValueError(f"{name} needs at least one scheduler")
    for i, scheduler in enumerate(schedulers):
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(f"{name} cannot hold ReduceLROnPlateau (index {i}): it steps on "
                             "a metric; step it yourself")
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"{name} holds LRSchedulers; got {type(scheduler).__name__} "
                            f"at index {i}")
        if scheduler.optimizer is not optimizer:
            raise ValueError(f"{name}: scheduler {i} ({type(scheduler).__name__}) wraps "
                             "another optimizer; build all on the same one")


def _undo_step(scheduler: LRScheduler) -> None:
    children = getattr(scheduler, "_schedulers", None)
    if children is not None:
        for child in children:
            _undo_step(child)
    else:
        scheduler.last_epoch -= 1


def _nested_state_dict(scheduler: LRScheduler) -> dict[str, Any]:
    state = {k: copy.deepcopy(v) for k, v in scheduler.__dict__.items()
             if k not in ("optimizer", "_schedulers")}
    state["_schedulers"] = [s.state_dict() for s in scheduler._schedulers]
    return state


def _nested_load_state_dict(scheduler: LRScheduler, state_dict: dict[str, Any]) -> None:
    _check_saved_groups(scheduler, state_dict)
    state = {k: copy.deepcopy(v) for k, v in state_dict.items() if k != "_schedulers"}
    scheduler.__dict__.update(state)
    for child, child_state in zip(scheduler._schedulers, state_dict["_schedulers"]):
        child.load_state_dict(child_state)
