"""Zoo models against the same architectures written in torch.nn: outputs and gradients in float64.

Each torch network is written here independently, with its parameters registered in
the same order as ermlab's; the weights are copied across, and both networks run in
training mode (batch norm on batch statistics, no dropout) on the same batch. Equal
scores, input gradients and parameter gradients prove the wiring: kernel sizes,
padding, strides, groups, shortcuts, concatenation order and the classifier.
"""

from collections import OrderedDict

import numpy as np
import pytest

from ermlab.backend import default_dtype
from ermlab.nn import zoo

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
nn = torch.nn
F = torch.nn.functional


def conv_bn(cin, cout, k, stride=1, groups=1, relu=True, bn=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=not bn)]
    layers += [nn.BatchNorm2d(cout)] if bn else []
    layers += [nn.ReLU()] if relu else []
    return layers


class PadShortcut(nn.Module):
    """He et al.'s option A, as in the common PyTorch CIFAR ResNet."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        before = (self.cout - self.cin) // 2
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, before, self.cout - self.cin - before))


class Residual(nn.Module):
    def __init__(self, layers, cin, cout, stride, shortcut):
        super().__init__()
        self.residual = nn.Sequential(*layers)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = PadShortcut(cin, cout, stride) if shortcut == "A" else \
                nn.Sequential(*conv_bn(cin, cout, 1, stride, relu=False))

    def forward(self, x):
        return F.relu(self.residual(x) + (x if self.shortcut is None else self.shortcut(x)))


def basic(cin, cout, stride, shortcut="B"):
    layers = conv_bn(cin, cout, 3, stride) + conv_bn(cout, cout, 3, relu=False)
    return Residual(layers, cin, cout, stride, shortcut)


def bottleneck(cin, planes, stride, groups, base_width):
    width = int(planes * base_width / 64) * groups
    layers = conv_bn(cin, width, 1) + conv_bn(width, width, 3, stride, groups) \
        + conv_bn(width, 4 * planes, 1, relu=False)
    return Residual(layers, cin, 4 * planes, stride, "B")


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, pp, bn):
        super().__init__()
        self.b1 = nn.Sequential(*conv_bn(cin, c1, 1, bn=bn))
        self.b2 = nn.Sequential(*conv_bn(cin, r3, 1, bn=bn), *conv_bn(r3, c3, 3, bn=bn))
        self.b3 = nn.Sequential(*conv_bn(cin, r5, 1, bn=bn), *conv_bn(r5, c5, 5, bn=bn))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_bn(cin, pp, 1, bn=bn))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def gap():
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def torch_lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def torch_small_vgg():
    return nn.Sequential(
        *conv_bn(3, 32, 3, bn=False), *conv_bn(32, 32, 3, bn=False), nn.MaxPool2d(2),
        *conv_bn(32, 64, 3, bn=False), *conv_bn(64, 64, 3, bn=False), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def torch_vgg11_bn_quarter():
    layers, c = [], 3
    for item in [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]:  # width 1/8
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += conv_bn(c, item, 3)
            c = item
    head = [nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)]
    return nn.Sequential(*layers, nn.Flatten(), *head)


def torch_alexnet_small():
    ch = [24, 64, 96, 96, 64]  # width 1/4
    lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    return nn.Sequential(
        nn.Conv2d(3, ch[0], 5, 1, 2), nn.ReLU(), lrn, nn.MaxPool2d(3, 2),
        nn.Conv2d(ch[0], ch[1], 5, 1, 2, groups=2), nn.ReLU(), lrn, nn.MaxPool2d(3, 2),
        nn.Conv2d(ch[1], ch[2], 3, 1, 1), nn.ReLU(),
        nn.Conv2d(ch[2], ch[3], 3, 1, 1, groups=2), nn.ReLU(),
        nn.Conv2d(ch[3], ch[4], 3, 1, 1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def torch_resnet20(shortcut):
    stages, c = [], 16
    for stage, planes in enumerate((16, 32, 64)):
        blocks = []
        for i in range(3):
            blocks.append(basic(c, planes, 2 if stage and not i else 1, shortcut))
            c = planes
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*conv_bn(3, 16, 3), *stages, gap(), nn.Linear(64, 10))


def torch_resnext_tiny():
    """ImageNet stem, one grouped bottleneck per stage (cardinality 4, d = 8)."""
    stem = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1)]
    stages, c = [], 64
    for stage, planes in enumerate((64, 128, 256, 512)):
        stages.append(bottleneck(c, planes, 2 if stage else 1, 4, 8))
        c = 4 * planes
    return nn.Sequential(*stem, *stages, gap(), nn.Linear(c, 10))


def torch_googlenet(width, bn, small):
    def s(n):
        return max(1, round(n * width))

    lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    if small:
        stem = conv_bn(3, s(192), 3, bn=bn)
    else:
        stem = [nn.Conv2d(3, s(64), 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1), lrn,
                *conv_bn(s(64), s(64), 1, bn=False), *conv_bn(s(64), s(192), 3, bn=False),
                lrn, nn.MaxPool2d(3, 2, 1)]
    layers, c = [], s(192)
    for row in zoo.GOOGLENET_INCEPTIONS:
        if row == "M":
            layers.append(nn.MaxPool2d(3, 2, 1))
            continue
        c1, r3, c3, r5, c5, pp = (s(n) for n in row)
        layers.append(Inception(c, c1, r3, c3, r5, c5, pp, bn))
        c = c1 + c3 + c5 + pp
    return nn.Sequential(*stem, *layers, gap(), nn.Linear(c, 10))


CASES = OrderedDict([
    ("lenet5", (lambda: zoo.lenet5(rng=0), torch_lenet5, (1, 28, 28))),
    ("small_vgg", (lambda: zoo.small_vgg(rng=0), torch_small_vgg, (3, 32, 32))),
    ("vgg11_bn", (lambda: zoo.vgg11(10, (3, 32, 32), width=1 / 8, batch_norm=True, dropout=0,
                                    rng=0), torch_vgg11_bn_quarter, (3, 32, 32))),
    ("alexnet_small", (lambda: zoo.alexnet(10, (3, 32, 32), width=0.25, dropout=0, rng=0),
                       torch_alexnet_small, (3, 32, 32))),
    ("resnet20_A", (lambda: zoo.resnet20(rng=0), lambda: torch_resnet20("A"), (3, 16, 16))),
    ("resnet20_B", (lambda: zoo.resnet20(shortcut="B", rng=0), lambda: torch_resnet20("B"),
                    (3, 16, 16))),
    ("resnext_tiny", (lambda: zoo.resnet("bottleneck", [1, 1, 1, 1], 10, (3, 64, 64), groups=4,
                                         base_width=8, rng=0), torch_resnext_tiny, (3, 64, 64))),
    ("googlenet_small", (lambda: zoo.build("googlenet_small", 10, (3, 16, 16), dropout=0, rng=0),
                         lambda: torch_googlenet(0.25, True, True), (3, 16, 16))),
    ("googlenet_stem224", (lambda: zoo.googlenet(10, (3, 64, 64), width=0.125, dropout=0, rng=0),
                           lambda: torch_googlenet(0.125, False, False), (3, 64, 64))),
])


@pytest.mark.parametrize("case", list(CASES))
def test_same_scores_and_gradients_as_torch(case):
    build, build_torch, shape = CASES[case]
    with default_dtype(np.float64):
        model = build()
    torch.manual_seed(0)
    reference = build_torch().double().train()
    ours, theirs = model.parameters(), list(reference.parameters())
    assert [p.shape for p in ours] == [tuple(t.shape) for t in theirs]
    assert model.num_parameters() == sum(t.numel() for t in theirs)
    with torch.no_grad():
        for p, t in zip(ours, theirs):
            t.copy_(torch.from_numpy(p.data))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, *shape))
    probe = rng.standard_normal((3, 10))

    model.train()
    model.zero_grad()
    scores = model.forward(x)
    grad_x = model.backward(probe)

    tx = torch.tensor(x, requires_grad=True)
    t_scores = reference(tx)
    t_scores.backward(torch.from_numpy(probe))

    np.testing.assert_allclose(scores, t_scores.detach().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-8, atol=1e-11)
    for (name, p), t in zip(model.named_parameters(), theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name)
