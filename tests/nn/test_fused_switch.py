"""``ERMLAB_FUSED=0`` turns the compiled kernels off, read at each call (``nn._fused``)."""

import numpy as np
import pytest

from ermlab.nn import _fused


@pytest.mark.parametrize("through_environ", [True, False])
def test_the_switch_follows_every_change_of_the_environment(monkeypatch, through_environ):
    """The fast read (the mapping behind ``os.environ``) and the plain ``os.environ.get``
    it stands in for answer alike, whatever is set: only ``0`` turns the kernels off."""
    if not through_environ:
        monkeypatch.setattr(_fused, "_OFF", None)  # as off CPython: os.environ.get
    monkeypatch.delenv("ERMLAB_FUSED", raising=False)
    assert not _fused.turned_off()
    for value, off in [("0", True), ("1", False), ("", False), (" 0", False), ("0", True)]:
        monkeypatch.setenv("ERMLAB_FUSED", value)
        assert _fused.turned_off() is off, value
    monkeypatch.delenv("ERMLAB_FUSED")
    assert not _fused.turned_off()


def test_kernels_are_off_where_the_switch_says_so(monkeypatch):
    pytest.importorskip("numba", reason="the kernels need Numba")
    x = np.zeros((2, 3), np.float32)
    monkeypatch.delenv("ERMLAB_FUSED", raising=False)
    assert _fused.kernels("_relu_kernels", x) is not None
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    assert _fused.kernels("_relu_kernels", x) is None
