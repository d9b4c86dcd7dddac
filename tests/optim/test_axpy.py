"""``axpy_``, y ← y + a·x in one BLAS pass: in place, rounded once (torch's add_(x, alpha=a))."""

from fractions import Fraction

import numpy as np
import pytest

from ermlab import nn, optim
from ermlab.optim import inplace
from ermlab.optim.inplace import axpy_

NO_TORCH = "PyTorch oracle absent (its CPU build: see README.md)"


def arrays(dtype, shape=(37, 129)):
    rng = np.random.default_rng(0)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def test_float32_is_one_fused_multiply_add_in_place():
    """Against the exactly rounded y + a·x (float64 holds a·x exactly, then one rounding)."""
    y, x = arrays(np.float32)
    a = -0.0123
    exact = (y.astype(np.float64) + float(np.float32(a)) * x.astype(np.float64)).astype(np.float32)
    two_roundings = y + np.float32(a) * x
    assert np.any(exact != two_roundings)  # the oracle tells one rounding from two
    out = axpy_(y, a, x, np.empty_like(y))
    assert out is y
    np.testing.assert_array_equal(y, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_element_is_rounded_once_at_any_length(dtype):
    """Against y + a·x computed exactly (fractions), then rounded once: the last n mod 32
    elements too, which some OpenBLAS kernels (Haswell's) update in a scalar loop rounded
    twice (seen on an AMD Zen 5: 1–5 of the last elements differed)."""
    rng = np.random.default_rng(7)
    a = -0.37
    for n in (1, 5, 31, 32, 33, 63, 100, 1003):
        y, x = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        scale = Fraction(float(dtype(a)))
        want = [_nearest(Fraction(float(v)) + scale * Fraction(float(u)), dtype)
                for v, u in zip(y, x, strict=True)]
        axpy_(y, a, x, np.empty_like(y))
        np.testing.assert_array_equal(y, np.array(want, dtype=dtype), err_msg=f"n={n}")


def _nearest(exact, dtype):
    """The ``dtype`` value nearest the fraction ``exact``, ties to even (float(exact) is
    rounded once to float64; a float32 is then looked for among it and its neighbours)."""
    guess = dtype(float(exact))
    candidates = [np.nextafter(guess, dtype(-np.inf)), guess, np.nextafter(guess, dtype(np.inf))]
    bits = np.uint32 if dtype == np.float32 else np.uint64
    return min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact),
                                          int(np.array(v).view(bits)) & 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_torch_add_alpha(dtype):
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    y, x = arrays(dtype)
    want = torch.tensor(y).add_(torch.tensor(x), alpha=-0.37).numpy()
    axpy_(y, -0.37, x, np.empty_like(y))
    np.testing.assert_array_equal(y, want)


def test_non_contiguous_falls_back_to_ufuncs_in_place():
    y, x = arrays(np.float32, (20, 40))
    view, xv = y[:, ::2], x[:, ::2]
    want = view + np.float32(0.5) * xv
    kept = y[:, 1::2].copy()
    axpy_(view, 0.5, xv, np.empty_like(view))
    np.testing.assert_array_equal(y[:, ::2], want)
    np.testing.assert_array_equal(y[:, 1::2], kept)


@pytest.mark.parametrize("fused, options", [(False, {}), (True, {}),
                                            (True, {"momentum": 0.9, "nesterov": "lookahead",
                                                    "momentum_form": "classic"})])
def test_step_runs_blas_on_one_thread_and_restores_it(fused, options):
    """The NumPy path (BLAS ?axpy) runs with BLAS on one thread, restored after; the fused
    kernels run no BLAS and leave its thread count alone. Lookahead Nesterov takes the
    NumPy path even where the kernels could run."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="comes with scikit-learn")
    controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not controller.lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")
    seen = []

    def probe():
        seen.append([lib.get_num_threads() for lib in controller.lib_controllers])

    class Probe(optim.SGD):
        def update_block(self, block, group, first):  # the NumPy path
            probe()
            super().update_block(block, group, first)

        def fused_kernel(self, kernels, group, first, dtype):
            kernel, scalars = super().fused_kernel(kernels, group, first, dtype)
            return lambda *args: probe() or kernel(*args), scalars

    param = nn.Parameter(np.ones((4, 3), np.float32))
    param.add_grad(np.ones((4, 3), np.float32))
    opt = Probe([param], lr=0.5, threads=1, **options)
    opt.fused = fused
    numpy_path = not fused or bool(options)
    if fused and opt.kernels(param.data) is None:
        pytest.skip("no fused kernels here (needs Numba)")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [lib.get_num_threads() for lib in controller.lib_controllers]
        if options:  # lookahead: the gradient at θ + μv comes from a closure
            opt.step(lambda: param.grad.fill(1.0) or 0.0)
        else:
            opt.step()
        after = [lib.get_num_threads() for lib in controller.lib_controllers]
    assert seen and all(n == (1 if numpy_path else 2) for counts in seen for n in counts)
    assert after == before
    if not options:
        np.testing.assert_array_equal(param.data, np.full((4, 3), 0.5, np.float32))


def test_sgd_uses_blas_rounding():
    """Plain SGD in float32 is torch's step bit for bit (one rounding per element)."""
    torch = pytest.importorskip("torch", reason=NO_TORCH)
    y, x = arrays(np.float32)
    param = nn.Parameter(y.copy())
    param.add_grad(x)
    optim.SGD([param], lr=0.0123, threads=1).step()
    theirs = torch.tensor(y, requires_grad=True)
    theirs.grad = torch.tensor(x)
    torch.optim.SGD([theirs], lr=0.0123, foreach=True).step()
    np.testing.assert_array_equal(param.data, theirs.detach().numpy())
    assert inplace._axpy_kernel(np.dtype(np.float32)) is not None
