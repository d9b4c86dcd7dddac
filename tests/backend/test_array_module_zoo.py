"""Whole networks on CuPy stand-in arrays: fprop and bprop of zoo models and blocks
(convolutions, pooling, batch norm, LRN, residual, bottleneck and inception blocks,
stochastic depth, noise) equal the NumPy run bit for bit, and a small CNN trains on the
device as on NumPy."""

import numpy
import pytest
from fake_cupy import fprop_bprop, host, to_device

from ermlab import losses, nn, optim
from ermlab.nn import zoo
from ermlab.training import Trainer

MODELS = {
    "lenet5_avg_tanh": (lambda: zoo.lenet5(rng=0, pooling="avg", activation="tanh"),
                        (2, 1, 28, 28)),
    "small_vgg_bn_dropout": (lambda: zoo.small_vgg(rng=0, batch_norm=True, dropout=0.5,
                                                   input_shape=(3, 8, 8)), (2, 3, 8, 8)),
    "resnet8_shortcut_a": (lambda: zoo.resnet_cifar(8, rng=0, input_shape=(3, 8, 8)),
                           (2, 3, 8, 8)),
    "resnet8_shortcut_b_depth_noise": (
        lambda: zoo.resnet_cifar(8, shortcut="B", stochastic_depth=0.5, noise_std=0.1, rng=0,
                                 input_shape=(3, 8, 8)), (2, 3, 8, 8)),
    "bottleneck_resnext": (lambda: nn.Sequential(
        nn.Bottleneck(4, 2, stride=2, groups=2, base_width=32, rng=0),
        nn.ResNeXtBlock(8, 2, cardinality=2, base_width=32, survival_prob=0.5, rng=1)),
        (2, 4, 6, 6)),
    "inception_lrn": (lambda: nn.Sequential(
        nn.InceptionModule(3, 2, 2, 3, 1, 2, 2, batch_norm=True, rng=0),
        nn.LocalResponseNorm(3), nn.FractionalMaxPool2d(1.5, rng=1)), (2, 3, 7, 7)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_on_device_equals_numpy(xp, name):
    build, shape = MODELS[name]
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal(shape).astype(numpy.float32)
    reference = build()
    grad_out = rng.standard_normal(build().forward(x).shape).astype(numpy.float32)
    y_ref, gx_ref, grads_ref = fprop_bprop(reference, x, grad_out)
    device = to_device(build(), xp)
    y, gx, grads = fprop_bprop(device, xp.asarray(x), xp.asarray(grad_out))
    numpy.testing.assert_array_equal(host(y), y_ref)
    numpy.testing.assert_array_equal(host(gx), gx_ref)
    for grad, ref in zip(grads, grads_ref, strict=True):
        numpy.testing.assert_array_equal(host(grad), ref)
    numpy.testing.assert_array_equal(host(device.eval().forward(xp.asarray(x))),
                                     reference.eval().forward(x))


def test_cnn_fit_on_device_equals_numpy(xp, ufunc_path):
    rng = numpy.random.default_rng(1)
    x = rng.random((12, 1, 8, 8)).astype(numpy.float32)
    y = rng.integers(0, 2, 12)

    def fit(to, move):
        model = move(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4),
                                   nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(64, 2, rng=1)))
        trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                          optim.NAdam(model.parameters(), lr=0.01), rng=2)
        trainer.fit(to(x), to(y), epochs=2, batch_size=4)
        return model, trainer.history["loss"]

    host, host_loss = fit(lambda a: a, lambda m: m)
    device, loss = fit(xp.asarray, lambda m: to_device(m, xp))
    assert loss == host_loss
    for (name, value), ref in zip(device.state_dict().items(), host.state_dict().values()):
        numpy.testing.assert_array_equal(value, ref, err_msg=name)
