"""The array-module tests' fixture: ermlab sees the CuPy stand-in as CuPy."""

import pytest
from fake_cupy import install


@pytest.fixture
def xp(monkeypatch):
    """The stand-in module (``cupy``), installed as ``ermlab.backend.cupy`` for one test."""
    return install(monkeypatch)
