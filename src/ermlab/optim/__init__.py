"""Optimizers: θ ← θ + αΔ with per-parameter state, torch.optim's names and defaults."""

from ermlab.optim import schedules
from ermlab.optim.adam import Adam, Adamax, AdamW, NAdam
from ermlab.optim.adaptive import Adadelta, Adagrad, RMSprop
from ermlab.optim.base import Optimizer
from ermlab.optim.bfgs import BFGS
from ermlab.optim.lbfgs import LBFGS
from ermlab.optim.momentum import NAGC, NAGSC, HeavyBall
from ermlab.optim.newton import Newton
from ermlab.optim.sgd import SGD
from ermlab.optim.transforms import (
    ClipGradNorm,
    ClipGradValue,
    CoupledWeightDecay,
    DecoupledWeightDecay,
    GradientNoise,
    Transformed,
    clip_grad_norm_,
    clip_grad_value_,
    decoupled_weight_decay_,
)

__all__ = ["LBFGS", "Optimizer", "SGD", "schedules"]
__all__ += ["BFGS", "Newton"]
__all__ += ["Adam", "AdamW", "Adamax", "NAdam", "Adagrad", "Adadelta", "RMSprop"]
__all__ += ["HeavyBall", "NAGC", "NAGSC"]
__all__ += ["ClipGradNorm", "ClipGradValue", "CoupledWeightDecay", "DecoupledWeightDecay",
            "GradientNoise", "Transformed", "clip_grad_norm_", "clip_grad_value_",
            "decoupled_weight_decay_"]
