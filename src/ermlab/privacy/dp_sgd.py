"""DP-SGD (Abadi et al. 2016): clipped per-example gradients plus Gaussian noise, any optimizer.

One step on a Poisson-sampled batch B (each example in with probability q, see
``ermlab.privacy.sampling``), with clip norm C and noise multiplier σ:

    g_n   = ∇_θ l(f(x_n; θ), y_n)                                 per example
    ḡ     = (1 / (q N)) ( Σ_{n ∈ B} g_n · min(1, C / ‖g_n‖)  +  N(0, σ² C² I) )
    θ     ← optimizer step with gradient ḡ   (+ λ∇Ω of a regularizer, data-free)

The sum is divided by the *expected* batch size q N, not |B| (|B| is private; Opacus
does the same). The optimizer is any ``ermlab.optim`` optimizer: SGD gives DP-SGD, Adam
DP-Adam — the privacy is in ḡ, and whatever is computed from ḡ alone (momenta, Adam's
moments) is post-processing. A privacy accountant (``ermlab.privacy.accountant``,
Google's dp-accounting) reports the (ε, δ) spent after each epoch; with a target ε
the run stops before an epoch that would spend more.

``Trainer(..., privacy=DPSGD(max_grad_norm=1.0, noise_multiplier=1.1))`` takes the
Trainer's batches (Poisson instead of shuffled, ⌈N / batch_size⌉ steps per epoch,
q = 1 / steps, as Opacus's ``DPDataLoader``) and its update; the forward pass, the loss,
callbacks, validation, history and checkpoints stay the Trainer's. A resumed run
accounts for the steps already taken (``trainer.step``), at the same q and σ. An empty
Poisson batch is a step of noise alone: the Trainer's ``augment`` and ``adversary`` are
not called on its 0 rows. Adversarial training goes with DP-SGD: an example's
perturbation depends on that example and θ only, so its sensitivity stays C.

Warnings. Noise comes from the Trainer's seeded NumPy generator (PCG64), which is not
cryptographically secure (Opacus's default too; its ``secure_mode`` is not offered
here). The training loss and accuracy in the logs are computed on private data
without noise, as in every framework; only the parameters are private.
Reference: M. Abadi, A. Chu, I. Goodfellow, H. B. McMahan, I. Mironov, K. Talwar,
L. Zhang. Deep Learning with Differential Privacy. CCS 2016.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy

from ermlab.backend import array_module
from ermlab.privacy import accountant as accounting
from ermlab.privacy.per_example import check_per_example_support, clip_and_sum
from ermlab.privacy.sampling import poisson_batches


class DPSGD:
    """The Trainer's privacy option: Poisson batches, clipping, noise, accounting.

    Args:
        max_grad_norm: C > 0, the clip norm of each example's whole gradient.
        noise_multiplier: σ ≥ 0 (noise std σC on the clipped sum); None: the smallest
            σ that spends ``target_epsilon`` in the ``epochs`` of the first ``fit``.
        delta: δ of (ε, δ)-DP, in (0, 1/N) for N training examples (default 1e-5).
        target_epsilon: optional budget ε > 0: the run stops before an epoch that would
            exceed it, and ``fit`` refuses to start when not one epoch fits.
        accountant: "rdp" (default) or "pld" (see ``ermlab.privacy.accountant``).

    Example:
        >>> from ermlab.privacy import DPSGD
        >>> trainer = Trainer(model, loss, optim.SGD(model.parameters(), lr=0.5),
        ...                   privacy=DPSGD(max_grad_norm=1.0, noise_multiplier=1.1,
        ...                                 target_epsilon=2.0))
        >>> trainer.fit(x, y, epochs=20, batch_size=256)   # history["epsilon"] per epoch
    """

    def __init__(self, max_grad_norm: float, noise_multiplier: float | None = None,
                 delta: float = 1e-5, target_epsilon: float | None = None,
                 accountant: str = "rdp") -> None:
        if not (_real(max_grad_norm) and 0 < max_grad_norm < math.inf):
            raise ValueError(f"DP-SGD: the clip norm must be a number > 0; got {max_grad_norm}")
        if noise_multiplier is not None and not (_real(noise_multiplier)
                                                 and 0 <= noise_multiplier < math.inf):
            raise ValueError(f"DP-SGD: the noise multiplier must be ≥ 0; got {noise_multiplier}")
        if not (_real(delta) and 0 < delta < 1):
            raise ValueError(f"DP-SGD: delta must be in (0, 1), well below 1/N; got {delta}")
        if target_epsilon is not None and not (_real(target_epsilon)
                                               and 0 < target_epsilon < math.inf):
            raise ValueError(f"DP-SGD: the target epsilon must be > 0; got {target_epsilon}")
        if noise_multiplier is None and target_epsilon is None:
            raise ValueError("DP-SGD needs a noise multiplier or a target epsilon to "
                             "calibrate one from")
        if noise_multiplier == 0 and target_epsilon is not None:
            raise ValueError("DP-SGD: noise multiplier 0 gives no privacy (ε = ∞), so no "
                             f"target epsilon ({target_epsilon}) is reachable; use σ > 0")
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = None if noise_multiplier is None else float(noise_multiplier)
        self.delta, self.target_epsilon = float(delta), target_epsilon
        self.accountant = accounting.check_accountant(accountant)
        self.sample_rate: float | None = None
        self.steps_per_epoch = 0
        self._n = 0
        self._clipped = self._seen = 0

    # -- the Trainer's hooks ------------------------------------------------------

    def bind(self, trainer: Any) -> None:
        """Refuse what cannot train privately, when the Trainer is built."""
        if trainer.strategy is not None:
            raise ValueError("DP-SGD runs in the Trainer's own loop; it cannot be combined "
                             f"with the distributed strategy {type(trainer.strategy).__name__}")
        check_per_example_support(trainer.model)

    def begin_fit(self, trainer: Any, n: int, epochs: int, batch_size: int | None,
                  sample_weight: Any) -> None:
        """Check the data against δ and the budget, and fix q, before any training."""
        if sample_weight is not None:
            raise ValueError("DP-SGD does not take sample weights (they change each "
                             "example's sensitivity); train without sample_weight")
        self.plan(n, epochs, batch_size, trainer.step)

    def plan(self, n: int, epochs: int, batch_size: int | None, steps_done: int = 0) -> None:
        """Fix q and the steps per epoch for N = ``n`` examples, calibrate σ when it is
        not given, and refuse δ ≥ 1/N or a target ε that not one more epoch fits in."""
        if self.delta >= 1 / n:
            raise ValueError(
                f"DP-SGD: delta = {self.delta:g} must be below 1/N = {1 / n:.3g} for the N = "
                f"{n} training examples (δ ≥ 1/N allows publishing an example outright); "
                f"use e.g. delta = {10 ** math.floor(math.log10(0.1 / n)):g}")
        self._n = n
        self.steps_per_epoch = math.ceil(n / min(batch_size or n, n))
        self.sample_rate = 1 / self.steps_per_epoch
        if self.noise_multiplier is None:
            if steps_done:
                raise ValueError("DP-SGD: a resumed run needs the noise multiplier of its "
                                 "first part; pass noise_multiplier")
            self.noise_multiplier = accounting.calibrate_noise(
                self.target_epsilon, self.delta, self.sample_rate,
                self.steps_per_epoch * max(epochs, 1), self.accountant)
        if self.target_epsilon is not None and epochs > 0:
            after = self.epsilon(steps_done + self.steps_per_epoch)
            if after > self.target_epsilon:
                raise ValueError(
                    f"DP-SGD: the target ε = {self.target_epsilon:g} is unreachable: "
                    + (f"the run has spent ε = {self.epsilon(steps_done):.3g} and "
                       if steps_done else "")
                    + f"one more epoch would spend ε = {after:.3g} (σ = "
                    f"{self.noise_multiplier:g}, q = {self.sample_rate:.3g}, δ = "
                    f"{self.delta:g}); raise the target or the noise, or use larger batches")

    def batches(self, n: int, rng: numpy.random.Generator) -> Any:
        """The epoch's Poisson-sampled index arrays."""
        return poisson_batches(n, self.sample_rate, self.steps_per_epoch, rng)

    def train_step(self, trainer: Any, x: Any, y: Any, sample_weight: Any = None) -> float:
        """One DP-SGD update on one Poisson batch (which may be empty: noise only)."""
        model = trainer.model
        model.train()
        trainer.optimizer.zero_grad()
        value = 0.0
        if len(x) == 0:  # an empty batch: no scores (hit count 0), a step of noise alone
            trainer.last_scores = array_module(x).zeros((0, 1))  # on x's device, as y is
        else:
            scores = trainer.last_scores = model.forward(x)
            if not bool(array_module(scores).isfinite(scores).all()):
                return math.nan
            value = trainer.loss.forward(scores, y)
            if trainer.regularizer is not None:
                value += trainer.regularizer.penalty(trainer.params)
            if not math.isfinite(value):
                return value
            grad_scores = trainer.loss.backward() * scores.dtype.type(len(x))
            norms = clip_and_sum(model, grad_scores, self.max_grad_norm)
            self._clipped += int((norms > self.max_grad_norm).sum())
            self._seen += len(x)
        self.add_noise(trainer.params, trainer.rng)
        trainer.apply_update()
        return value

    def add_noise(self, params: list, rng: numpy.random.Generator) -> None:
        """grad ← (grad + N(0, σ²C²)) / (q N), for every parameter."""
        std, scale = self.noise_multiplier * self.max_grad_norm, 1 / (self.sample_rate * self._n)
        for param in params:
            grad = param.grad
            xp = array_module(grad)
            if std:
                grad += xp.asarray(rng.standard_normal(grad.shape, dtype=grad.dtype) * std)
            grad *= grad.dtype.type(scale)

    def epoch_logs(self, trainer: Any) -> dict[str, Any]:
        """ε spent so far (at this run's δ) and the share of examples clipped this epoch;
        stops the run when the next epoch would go past the target ε."""
        spent = self.epsilon(trainer.step)
        logs = {"epsilon": spent,
                "clipped_fraction": self._clipped / self._seen if self._seen else 0.0}
        self._clipped = self._seen = 0
        if self.target_epsilon is not None:
            after = self.epsilon(trainer.step + self.steps_per_epoch)
            if after > self.target_epsilon:
                trainer.stop_training = True
                trainer.stop_reason = (f"privacy budget: ε = {spent:.3g} spent, another epoch "
                                       f"would reach {after:.3g} > target {self.target_epsilon:g}")
        return logs

    def epsilon(self, steps: int) -> float:
        """ε after ``steps`` steps at this run's q and σ, for δ."""
        return accounting.epsilon(self.noise_multiplier, self.sample_rate, steps, self.delta,
                                  self.accountant)

    def __repr__(self) -> str:
        return (f"DPSGD(max_grad_norm={self.max_grad_norm}, noise_multiplier="
                f"{self.noise_multiplier}, delta={self.delta}, target_epsilon="
                f"{self.target_epsilon}, accountant={self.accountant!r})")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
