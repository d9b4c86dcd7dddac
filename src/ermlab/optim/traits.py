"""What an optimizer keeps and how it steps: the facts each optimizer class declares.

Every optimizer class sets ``traits = Traits(...)`` in its own body, so the
seeds' comparison table (which method keeps which moment, leaky or not, with
bias correction or not, and its update formula) is generated from the code
(``ermlab.lab.table``) rather than typed by hand. A field is ``True``/``False``
or, where it depends on a hyperparameter, the condition as words
(``"momentum > 0"``).

Terms (Zhang et al., *Dive into Deep Learning*, ch. 12; Kingma & Ba 2015):

* first moment — a running estimate of the gradient E[g] (a momentum buffer,
  Adam's m, RMSprop's centred ḡ);
* second moment — a running estimate of the squared gradient E[g²] per
  coordinate (Adagrad's sum G, RMSprop's and Adam's v, Adamax's ℓ∞ norm u);
* leaky average — the estimates decay geometrically, v ← βv + (1 − β)x
  (or v ← βv + x), instead of summing every past term with equal weight;
* bias correction — the estimates started at 0 are divided by 1 − βᵗ;
* curvature — the step uses second-order information (a Hessian or a
  quasi-Newton approximation of it).
"""

from __future__ import annotations

from dataclasses import dataclass

Flag = bool | str


@dataclass(frozen=True)
class Traits:
    """The facts of one optimizer class (see the module docstring for the terms)."""

    first_moment: Flag
    second_moment: Flag
    leaky_average: Flag
    bias_correction: Flag
    update: str
    reference: str
    curvature: Flag = False

    def __post_init__(self) -> None:
        for name in ("first_moment", "second_moment", "leaky_average", "bias_correction",
                     "curvature"):
            value = getattr(self, name)
            if not isinstance(value, (bool, str)) or value == "":
                raise TypeError(f"Traits.{name} is True, False or a condition in words; "
                                f"got {value!r}")
        if not self.update.strip() or not self.reference.strip():
            raise ValueError("Traits need the update formula and a reference")
