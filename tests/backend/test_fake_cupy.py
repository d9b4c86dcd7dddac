"""The CuPy stand-in is as strict as CuPy where the array-module tests rely on it."""

import numpy
import pytest
from fake_cupy import DeviceArray

from ermlab import backend

IMPLICIT = "Implicit conversion to a NumPy array is not allowed"


def test_no_implicit_conversion_and_no_mixing(xp):
    d = xp.asarray(numpy.arange(6, dtype=numpy.float32).reshape(2, 3))
    host = numpy.ones(3, numpy.float32)
    assert not isinstance(d, numpy.ndarray)
    with pytest.raises(TypeError, match=IMPLICIT):
        numpy.asarray(d)
    with pytest.raises(TypeError, match=IMPLICIT):
        numpy.random.default_rng(0).permutation(d)
    for mixed in (lambda: d + host, lambda: host * d, lambda: numpy.add(d, host),
                  lambda: xp.matmul(host[None], d.T), lambda: xp.concatenate([d[0], host])):
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            mixed()
    with pytest.raises(AttributeError):
        xp.random  # noqa: B018 - CuPy's random differs from NumPy's; ermlab must not use it


def test_device_results_and_the_host_boundary(xp):
    d = xp.asarray(numpy.arange(6, dtype=numpy.float32).reshape(2, 3))
    for result in (d.sum(), d[0, 1], numpy.exp(d), numpy.sum(d, axis=0), d * numpy.float32(2),
                   2.0 * d, xp.matmul(d, d.T)):
        assert isinstance(result, DeviceArray)
    assert d.sum().ndim == 0 and float(d.sum()) == 15.0 and d[1, 2].item() == 5.0
    out = xp.empty((2, 2), dtype=numpy.float32)
    assert xp.matmul(d, d.T, out=out) is out
    d[0] = numpy.zeros(3)  # host values may be written in (copied to the device)
    assert type(backend.to_numpy(d)) is numpy.ndarray
    numpy.testing.assert_array_equal(backend.to_numpy(d), [[0, 0, 0], [3, 4, 5]])
    host = numpy.ones(3)
    copy = xp.asarray(host)
    copy += 1
    assert host[0] == 1.0, "asarray copies host data to the device"


def test_backend_sees_the_stand_in_only_inside_the_fixture(xp):
    d = xp.asarray(numpy.zeros(2))
    assert backend.array_module(d) is xp
    assert backend.array_module(numpy.zeros(2)) is numpy
    assert backend.array_module(numpy.zeros(2), d) is xp


def test_the_stand_in_is_gone_after_the_fixture():
    from fake_cupy import FakeCupy

    assert not isinstance(backend.cupy, FakeCupy)
    assert backend.array_module(numpy.zeros(2)) is numpy
