"""Model zoo: each model builds, runs forward and backward, has the published parameter count."""

import math

import numpy as np
import pytest

from ermlab import optim
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn import zoo
from ermlab.nn.blocks import BasicBlock
from ermlab.nn.stochastic import StochasticDepth


def small_input(name):
    """Small inputs keep this fast: VGG and AlexNet need 32×32; the others run on 8×8."""
    if name == "lenet5":
        return (1, 28, 28)
    return (3, 32, 32) if name.startswith(("vgg", "alexnet", "small_vgg")) else (3, 8, 8)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_every_model_runs_forward_and_backward(name):
    shape = small_input(name)
    model = zoo.build(name, 10, shape, rng=0)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    model.train()
    scores = model.forward(x)
    assert scores.shape == (2, 10) and scores.dtype == np.float32
    assert np.isfinite(scores).all()
    model.zero_grad()
    grad_x = model.backward(np.ones_like(scores) / 20)
    assert grad_x.shape == x.shape and np.isfinite(grad_x).all()
    silent = [n for n, p in model.named_parameters() if not np.abs(p.grad).max() > 0]
    assert not silent, f"parameters without gradient: {silent}"
    model.eval()
    assert model.forward(x[:1]).shape == (1, 10)


def test_lenet5_learns_a_small_batch():
    """15 SGD steps drive the training loss on 16 examples down (the wiring trains)."""
    rng = np.random.default_rng(0)
    model = zoo.lenet5(rng=0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    loss, opt = SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    values = []
    for _ in range(15):
        values.append(float(loss.forward(model.forward(x), y)))
        opt.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()
    assert values[-1] < 0.25 * values[0], values


# -- parameter counts ------------------------------------------------------------------------

#: Published counts for 1000 classes at 224×224×3: torchvision's documented numbers (VGG,
#: ResNet, ResNeXt) and Krizhevsky et al. 2012's AlexNet (two towers; one tower: no groups).
FULL_SIZE = {
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnext50_32x4d": 25_028_904,
    "alexnet": 60_965_224,
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_parameter_counts(name):
    assert zoo.build(name, 1000, (3, 224, 224), rng=0).num_parameters() == FULL_SIZE[name]


def test_alexnet_one_tower():
    assert zoo.alexnet(groups=1, rng=0).num_parameters() == 62_378_344


@pytest.mark.parametrize("depth,count", [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_cifar_resnet_counts_option_a(depth, count):
    """He et al. 2016 Table 6: 0.27M, 0.46M, 0.85M (exact counts as in the common PyTorch port)."""
    model = zoo.resnet_cifar(depth, rng=0)
    assert model.num_parameters() == count
    assert round(count / 1e6, 2) == {20: 0.27, 32: 0.46, 56: 0.85}[depth]


def test_cifar_resnet_option_b_adds_two_projections():
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1×1 conv + BN at stages 2 and 3
    assert zoo.resnet20(shortcut="B", rng=0).num_parameters() == 269_722 + extra


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 32, 32)])
def test_lenet5_count_and_geometry(shape):
    model = zoo.lenet5(10, shape, rng=0)
    conv_c1 = model.features[0]
    assert conv_c1.padding == ((2, 2) if shape[1] == 28 else (0, 0))
    assert model.classifier[0].in_features == 16 * 5 * 5
    # C1: 6·(25+1), C3: 16·(6·25+1), F5: 120·401, F6: 84·121, output 10·85
    assert model.num_parameters() == 156 + 2416 + 48120 + 10164 + 850 == 61_706


def googlenet_count(num_classes, width=1.0, small=False, batch_norm=False):
    """GoogLeNet's count from Szegedy et al. Table 1, written out independently."""
    def s(n):
        return max(1, round(n * width))

    def conv(i, o, k):
        return i * o * k * k + (2 * o if batch_norm else o)

    total = conv(3, s(192), 3) if small else conv(3, s(64), 7) + conv(s(64), s(64), 1) \
        + conv(s(64), s(192), 3)
    c = s(192)
    for row in zoo.GOOGLENET_INCEPTIONS:
        if row == "M":
            continue
        b1, r3, b3, r5, b5, pp = (s(n) for n in row)
        total += conv(c, b1, 1) + conv(c, r3, 1) + conv(r3, b3, 3) + conv(c, r5, 1) \
            + conv(r5, b5, 5) + conv(c, pp, 1)
        c = b1 + b3 + b5 + pp
    return total + c * num_classes + num_classes


def test_googlenet_counts():
    assert zoo.GOOGLENET_INCEPTIONS[0] == (64, 96, 128, 16, 32, 32)  # Table 1, inception (3a)
    assert zoo.googlenet(rng=0).num_parameters() == googlenet_count(1000) == 6_998_552
    small = zoo.build("googlenet_small", 10, (3, 32, 32), rng=0)
    assert small.num_parameters() == googlenet_count(10, 0.25, small=True, batch_norm=True)


def test_vgg_width_scaled_for_small_images():
    model = zoo.vgg16(10, (3, 32, 32), width=0.25, rng=0)
    channels = [m.out_channels for m in model.features if hasattr(m, "out_channels")]
    assert channels == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert model.classifier[0].in_features == 128 * 1 * 1
    assert model.classifier[0].out_features == 128  # 512 · width for small images
    full = zoo.vgg16(10, (3, 32, 32), rng=0)
    conv = sum(9 * a * b + b for a, b in zip([3, 64, 64, 128, 128, 256, 256, 256, 512, 512,
                                              512, 512, 512],
                                             [64, 64, 128, 128, 256, 256, 256, 512, 512, 512,
                                              512, 512, 512]))
    assert full.num_parameters() == conv + (512 * 512 + 512) * 2 + 512 * 10 + 10


def test_small_vgg_count():
    conv = (27 * 32 + 32) + (288 * 32 + 32) + (288 * 64 + 64) + (576 * 64 + 64)
    assert zoo.small_vgg(rng=0).num_parameters() == conv + 4096 * 512 + 512 + 5130 == 2_168_362


# -- stochastic depth ------------------------------------------------------------------------


@pytest.mark.parametrize("builder,blocks,p_last", [
    (zoo.resnet56, 27, 0.5), (zoo.resnet20, 9, 0.8), (zoo.resnet18, 8, 0.5),
])
def test_stochastic_depth_linear_decay(builder, blocks, p_last):
    """Huang et al. 2016, eq. 4: p_l = 1 − (l / L)(1 − p_L) for blocks l = 1…L from the input."""
    shape = (3, 32, 32)
    model = builder(10, shape, stochastic_depth=p_last, rng=0)
    residual = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(residual) == blocks
    expected = [1 - l / blocks * (1 - p_last) for l in range(1, blocks + 1)]
    np.testing.assert_allclose([b.survival_prob for b in residual], expected, rtol=1e-15)
    wrappers = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    np.testing.assert_allclose([w.survival_prob for w in wrappers], expected, rtol=1e-15)
    assert math.isclose(residual[-1].survival_prob, p_last)
    plain = builder(10, shape, rng=0)
    assert model.num_parameters() == plain.num_parameters()
    assert not any(isinstance(m, StochasticDepth) for m in plain.modules())


# -- errors ----------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg17'; choose one of"):
        zoo.build("vgg17", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="vgg16 needs images of at least 32×32; got 16×16"):
        zoo.vgg16(10, (3, 16, 16))
    with pytest.raises(ValueError, match=r"needs input_shape \(channels, height, width\)"):
        zoo.lenet5(10, (28, 28))
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        zoo.resnet_cifar(21)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        zoo.build("lenet5", 0, (1, 28, 28))
