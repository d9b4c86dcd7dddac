"""The array-module tests' fixture: ermlab sees the CuPy stand-in as CuPy."""

import pytest
from fake_cupy import install


@pytest.fixture
def xp(monkeypatch):
    """The stand-in module (``cupy``), installed as ``ermlab.backend.cupy`` for one test."""
    return install(monkeypatch)


@pytest.fixture
def ufunc_path(monkeypatch):
    """NumPy optimizers take the path device arrays take: ufuncs through ``xp``, no BLAS
    ``?axpy`` and no fused compiled kernels (those round differently: one rounding per
    multiply-add), so the two runs can be compared bit for bit."""
    from ermlab.optim import inplace

    monkeypatch.setattr(inplace, "_axpy_kernel", lambda dtype: None)
    monkeypatch.setattr(inplace.InPlaceOptimizer, "kernels", lambda self, *arrays: None,
                        raising=False)
