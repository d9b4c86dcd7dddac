"""Modules and losses on CuPy stand-in arrays give the NumPy run's values, bit for bit.

Each case builds the same module twice from one seed, runs fprop and bprop on NumPy
arrays and on stand-in device arrays (``fake_cupy``), and checks that every output,
input gradient and parameter gradient is a device array equal to the NumPy one. The
stand-in refuses implicit conversion to NumPy and mixing with NumPy arrays, so a kernel
that reaches for ``numpy`` on device data fails here.
"""

import numpy
import pytest
from fake_cupy import fprop_bprop, host, to_device

from ermlab import losses, nn

CASES = {
    "linear": (lambda: nn.Linear(5, 3, rng=0), (4, 5)),
    "sigmoid": (nn.Sigmoid, (4, 5)),
    "tanh": (nn.Tanh, (4, 5)),
    "relu": (nn.ReLU, (4, 5)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (4, 5)),
    "elu": (nn.ELU, (4, 5)),
    "softplus": (nn.Softplus, (4, 5)),
    "softmax": (nn.Softmax, (4, 5)),
    "maxout": (lambda: nn.Maxout(5, 3, 2, rng=0), (4, 5)),
    "conv_im2col": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0), (2, 3, 7, 7)),
    "conv_full_width": (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0), (2, 2, 6, 6)),
    "conv_groups_dilation": (lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2, rng=0),
                             (2, 4, 7, 7)),
    "conv_transposed_bprop": (lambda: nn.Conv2d(16, 2, 3, padding=1, rng=0), (2, 16, 5, 5)),
    "conv_1x1": (lambda: nn.Conv2d(3, 4, 1, rng=0), (2, 3, 5, 5)),
    "conv_1x1_strided": (lambda: nn.Conv2d(3, 4, 1, stride=2, rng=0), (2, 3, 5, 5)),
    "max_pool": (lambda: nn.MaxPool2d(2), (2, 3, 6, 6)),
    "max_pool_overlap": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    "avg_pool": (lambda: nn.AvgPool2d(2), (2, 3, 6, 6)),
    "global_avg_pool": (nn.GlobalAvgPool2d, (2, 3, 4, 4)),
    "batch_norm_1d": (lambda: nn.BatchNorm1d(5), (6, 5)),
    "batch_norm_2d": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
    "dropout": (lambda: nn.Dropout(0.5, rng=1), (4, 5)),
    "drop_connect": (lambda: nn.DropConnect(nn.Linear(5, 3, rng=0), 0.5, rng=1), (4, 5)),
    "gaussian_noise": (lambda: nn.GaussianNoise(0.1, rng=1), (4, 5)),
    "flatten_linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 2, rng=0)),
                       (3, 3, 2, 2)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_module_on_device_equals_numpy(xp, name):
    build, shape = CASES[name]
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal(shape).astype(numpy.float32)
    y_shape = build().forward(x).shape
    grad_out = rng.standard_normal(y_shape).astype(numpy.float32)
    y_ref, gx_ref, grads_ref = fprop_bprop(build(), x, grad_out)
    device = to_device(build(), xp)
    y, gx, grads = fprop_bprop(device, xp.asarray(x), xp.asarray(grad_out))
    numpy.testing.assert_array_equal(host(y), y_ref)
    numpy.testing.assert_array_equal(host(gx), gx_ref)
    assert len(grads) == len(grads_ref)
    for grad, ref in zip(grads, grads_ref):
        numpy.testing.assert_array_equal(host(grad), ref)
    device.eval()
    numpy.testing.assert_array_equal(host(device.forward(xp.asarray(x))),
                                     build().eval().forward(x) if not _has_buffers(device)
                                     else _eval_after_step(build, x, grad_out))


def _has_buffers(module):
    return any(True for _ in module.named_buffers())


def _eval_after_step(build, x, grad_out):
    """The NumPy model's evaluation output after one training step (running statistics)."""
    reference = build()
    fprop_bprop(reference, x, grad_out)
    return reference.eval().forward(x)


LOSSES = {
    "softmax_ce": (losses.SoftmaxCrossEntropy, "labels"),
    "nll": (losses.NegativeLogLikelihood, "labels"),
    "hinge": (losses.MulticlassHinge, "labels"),
    "ova_hinge": (losses.OneVsAllHinge, "labels"),
    "squared_error": (losses.MeanSquaredError, "targets"),
    "bce_with_logits": (losses.BinaryCrossEntropyWithLogits, "binary"),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_on_device_equals_numpy(xp, name, weighted):
    make, kind = LOSSES[name]
    rng = numpy.random.default_rng(1)
    scores = rng.standard_normal((6, 4)).astype(numpy.float32)
    if name == "nll":
        scores = rng.dirichlet(numpy.ones(4), 6).astype(numpy.float32)  # probabilities
    y = {"labels": rng.integers(0, 4, 6),
         "targets": rng.standard_normal((6, 4)).astype(numpy.float32),
         "binary": rng.integers(0, 2, (6, 4)).astype(numpy.float32)}[kind]
    weight = rng.random(6).astype(numpy.float32) if weighted else None
    reference = make()
    value_ref = reference.forward(scores, y, sample_weight=weight)
    grad_ref = reference.backward()
    device = make()
    value = device.forward(xp.asarray(scores), xp.asarray(y),
                           sample_weight=None if weight is None else xp.asarray(weight))
    assert isinstance(value, float) and value == value_ref
    numpy.testing.assert_array_equal(host(device.backward()), grad_ref)


def test_loss_rejects_bad_labels_on_device(xp):
    """The boundary checks run on device arrays too (and name the bad label)."""
    scores = xp.asarray(numpy.zeros((3, 4), numpy.float32))
    with pytest.raises(ValueError, match="got 7 at index 1"):
        losses.SoftmaxCrossEntropy().forward(scores, xp.asarray(numpy.array([0, 7, 1])))
