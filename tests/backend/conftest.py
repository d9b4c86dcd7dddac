"""The array-module tests' fixture: ermlab sees the CuPy stand-in as CuPy."""

import pytest
from fake_cupy import install


@pytest.fixture
def xp(monkeypatch):
    """The stand-in module (``cupy``), installed as ``ermlab.backend.cupy`` for one test.

    ``ERMLAB_FUSED=0`` for the test: the NumPy reference runs then takes the array-op path
    a device array takes, not Numba's compiled kernels (Winograd convolutions, fused batch
    norm), which round differently, so the two runs compare bit for bit."""
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    return install(monkeypatch)


@pytest.fixture
def ufunc_path(monkeypatch):
    """NumPy optimizers take the path device arrays take: ufuncs through ``xp``, no BLAS
    ``?axpy`` and no fused compiled kernels (those round differently: one rounding per
    multiply-add), so the two runs can be compared bit for bit."""
    from ermlab.optim import inplace

    monkeypatch.setattr(inplace, "_axpy_kernel", lambda dtype: None)
    monkeypatch.setattr(inplace, "_fused_kernels", lambda: None)
