"""Optimizers on CuPy stand-in arrays: the update of the NumPy ufunc path, bit for bit.

On device arrays the BLAS ``?axpy`` of ``optim.inplace.axpy_`` and the fused compiled
kernels do not apply (they would convert the arrays to NumPy, which the stand-in
refuses) and the blocked, threaded layout keeps each parameter whole; the rule runs as
ufuncs through ``xp``. So each device run is compared with the NumPy run that takes the
same ufunc path (the ``ufunc_path`` fixture), which must agree to the last bit, and with
the default NumPy run (BLAS, fused kernels), within a few float32 roundings.
"""

import numpy
import pytest
from fake_cupy import DeviceArray, host

from ermlab import optim
from ermlab.nn import Parameter

SHAPES = [(5, 4), (4,), (3, 1, 2)]

FIRST_ORDER = {
    "sgd": lambda p: optim.SGD(p, lr=0.1, flush_every=2),
    "sgd_momentum_decay": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1,
                                              weight_decay=0.01, flush_every=2),
    "sgd_nesterov": lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: optim.Adam(p, lr=0.01, flush_every=2),
    "adam_amsgrad_decay": lambda p: optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.1),
    "adamw": lambda p: optim.AdamW(p, lr=0.01),
    "adamax": lambda p: optim.Adamax(p, lr=0.01),
    "nadam": lambda p: optim.NAdam(p, lr=0.01),
    "adagrad": lambda p: optim.Adagrad(p, lr=0.1, lr_decay=0.01),
    "adadelta": lambda p: optim.Adadelta(p, lr=1.0),
    "rmsprop": lambda p: optim.RMSprop(p, lr=0.01),
    "rmsprop_centered_momentum": lambda p: optim.RMSprop(p, lr=0.01, centered=True,
                                                         momentum=0.9),
    "heavy_ball": lambda p: optim.HeavyBall(p, lr=0.1),
    "nagc": lambda p: optim.NAGC(p, lr=0.1),
    "nagsc": lambda p: optim.NAGSC(p, lr=0.1, strong_convexity=0.5),
    "clip_and_noise": lambda p: optim.Transformed(
        optim.SGD(p, lr=0.1, momentum=0.5), optim.ClipGradNorm(1.0),
        optim.ClipGradValue(0.3), optim.GradientNoise(0.01, rng=3)),
}


def _params(to=lambda a: a):
    rng = numpy.random.default_rng(0)
    return [Parameter(to(rng.standard_normal(s).astype(numpy.float32))) for s in SHAPES]


def _gradients(steps):
    rng = numpy.random.default_rng(1)
    return [[rng.standard_normal(s).astype(numpy.float32) for s in SHAPES]
            for _ in range(steps)]


def _steps(optimizer, params, gradients, to=lambda a: a):
    for grads in gradients:
        optimizer.zero_grad()
        for p, g in zip(params, grads):
            p.add_grad(to(g))
        optimizer.step()


@pytest.mark.parametrize("name", list(FIRST_ORDER))
def test_first_order_step_on_device_equals_numpy_ufunc_path(xp, request, name):
    make, gradients = FIRST_ORDER[name], _gradients(3)
    blas_params = _params()
    _steps(make(blas_params), blas_params, gradients)
    device_params = _params(xp.asarray)
    device = make(device_params)
    _steps(device, device_params, gradients, xp.asarray)
    request.getfixturevalue("ufunc_path")
    host_params = _params()
    reference = make(host_params)
    _steps(reference, host_params, gradients)
    for p, ref, blas in zip(device_params, host_params, blas_params):
        numpy.testing.assert_array_equal(host(p.data), ref.data)
        numpy.testing.assert_allclose(host(p.data), blas.data, rtol=1e-5, atol=1e-6)
    for p, ref in zip(device_params, host_params):
        for key, value in reference.state[ref].items():
            if isinstance(value, numpy.ndarray):
                numpy.testing.assert_array_equal(host(device.state[p][key]), value)
            else:
                assert device.state[p][key] == value


def test_optimizer_state_dict_round_trip_on_device(xp):
    """state_dict copies device state to NumPy; load_state_dict puts it back on the device,
    and the restored optimizer takes the same next step."""
    gradients = _gradients(3)
    params = _params(xp.asarray)
    adam = optim.Adam(params, lr=0.01, amsgrad=True)
    _steps(adam, params, gradients[:2], xp.asarray)
    saved = adam.state_dict()
    arrays = [v for s in saved["state"].values() for v in s.values() if hasattr(v, "shape")]
    assert arrays and all(type(v) is numpy.ndarray for v in arrays)
    copies = [Parameter(xp.asarray(p.data.get())) for p in params]
    restored = optim.Adam(copies, lr=0.5)
    restored.load_state_dict(saved)
    assert all(isinstance(v, DeviceArray) for s in restored.state.values() for v in s.values()
               if hasattr(v, "shape"))
    _steps(adam, params, gradients[2:], xp.asarray)
    _steps(restored, copies, gradients[2:], xp.asarray)
    for p, q in zip(params, copies):
        numpy.testing.assert_array_equal(host(q.data), host(p.data))


def _quadratic(params, centers, weights):
    """f(θ) = Σ w ⊙ (θ − c)², gradients into the parameters (torch's closure contract)."""
    def closure():
        total = 0.0
        for p, c, w in zip(params, centers, weights):
            p.zero_grad()
            d = p.data - c
            p.add_grad(2 * w * d)
            total += float((w * d * d).sum())
        return total
    return closure


FULL_BATCH = {
    "lbfgs": lambda p: optim.LBFGS(p, max_iter=5, line_search_fn="strong_wolfe"),
    "bfgs": lambda p: optim.BFGS(p, max_iter=5),
    "newton": lambda p: optim.Newton(p),
}


@pytest.mark.parametrize("name", list(FULL_BATCH))
def test_full_batch_step_on_device_equals_numpy(xp, name):
    rng = numpy.random.default_rng(2)
    centers = [rng.standard_normal(s).astype(numpy.float32) for s in SHAPES]
    weights = [rng.uniform(0.5, 2, s).astype(numpy.float32) for s in SHAPES]
    host_params = _params()
    reference = FULL_BATCH[name](host_params)
    host_value = reference.step(_quadratic(host_params, centers, weights))
    device_params = _params(xp.asarray)
    device = FULL_BATCH[name](device_params)
    value = device.step(_quadratic(device_params, [xp.asarray(c) for c in centers],
                                   [xp.asarray(w) for w in weights]))
    assert float(value) == float(host_value)
    for p, ref in zip(device_params, host_params):
        numpy.testing.assert_array_equal(host(p.data), ref.data)
