"""ermlab: neural networks trained by empirical risk minimization.

    argmin_θ (1/T) Σ_t l(f(x_t; θ), y_t) + λ Ω(θ)

Modules with explicit fprop/bprop (``ermlab.nn``), losses (``ermlab.losses``),
regularizers (``ermlab.regularizers``), optimizers (``ermlab.optim``) and a
finite-difference gradient checker (``ermlab.gradcheck``), on NumPy or CuPy.
"""

__version__ = "0.1.0"
