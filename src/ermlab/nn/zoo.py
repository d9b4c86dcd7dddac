"""The seeds' convolutional architectures, from LeNet-5 to ResNet, as ermlab modules.

Every builder has the signature ``builder(num_classes, input_shape, ..., rng=None,
dtype=None)`` with ``input_shape`` = (C, H, W) (NCHW, no batch axis) and returns a
``Sequential`` that maps (N, C, H, W) images to (N, num_classes) scores (pair them with
``losses.SoftmaxCrossEntropy``). ``MODELS`` maps a name to its builder, which is what
``ermlab train --model NAME`` looks up; ``build(name, num_classes, input_shape)`` is the
checked entry point.

Full-size architectures (224×224×3 ImageNet inputs) have the published parameter
counts — AlexNet 60,965,224 (two-tower grouping) or 62,378,344 (one tower), VGG-11/16/19
132,863,336 / 138,357,544 / 143,667,240, ResNet-18/34/50 11,689,512 / 21,797,672 /
25,557,032, ResNeXt-50 32×4d 25,028,904 — and the CIFAR-10 ResNets of He et al. (2016,
§4.2) have 0.27M / 0.46M / 0.85M parameters (ResNet-20/32/56, shortcut option A). The
ImageNet-style networks adapt to small images (H, W < 64): a stride-1 stem instead of
the large strided one, and, for VGG and AlexNet, a narrower fully connected head (see
each builder); ``width`` scales every channel count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ermlab.backend import as_generator
from ermlab.nn import activations
from ermlab.nn.activations import ReLU
from ermlab.nn.blocks import BasicBlock, Bottleneck, InceptionModule, conv_bn
from ermlab.nn.conv import Conv2d
from ermlab.nn.linear import Flatten, Linear
from ermlab.nn.lrn import LocalResponseNorm
from ermlab.nn.module import Module
from ermlab.nn.normalization import BatchNorm2d
from ermlab.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from ermlab.nn.sequential import Sequential
from ermlab.nn.stochastic import Dropout, linear_decay

SMALL_IMAGE = 64  # below this height/width, ImageNet-style networks use their small-image stem


def named(**parts: Module) -> Sequential:
    """A ``Sequential`` whose children have names (``features``, ``classifier``...).

    Every network here is convolutional, so its fully connected layers run their GEMMs
    in ermlab's lanes, as the convolutions do (``Linear``'s ``lanes``)."""
    model = Sequential()
    for name, module in parts.items():
        setattr(model, name, module)
    for module in model.modules():
        if isinstance(module, Linear):
            module.lanes = True
    return model


def check_input_shape(model: str, input_shape: Sequence[int], min_size: int) -> tuple[int, ...]:
    """``input_shape`` as (C, H, W) ints; ValueError when it is not an image at least min_size."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{model} needs input_shape (channels, height, width); got {tuple(input_shape)}"
        )
    if min(shape[1:]) < min_size:
        if shape[2] in (1, 3) and shape[0] >= min_size and shape[1] >= min_size:
            raise ValueError(
                f"{model} takes images channels first, (C, H, W); got {shape}, which looks "
                f"channels last, (H, W, C) = {shape}: transpose the images with "
                "x.transpose(0, 3, 1, 2)"
            )
        raise ValueError(
            f"{model} needs images of at least {min_size}×{min_size}; got {shape[1]}×{shape[2]} "
            "(resize the images or pick a smaller model)"
        )
    return shape


def _out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output size of a convolution or pooling window: ⌊(n + 2p − k) / s⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _head(features: int, hidden: int, num_classes: int, dropout: float, rng, dtype,
          dropout_first: bool = False) -> Sequential:
    """Two hidden fully connected layers with ReLU and dropout, then the class scores."""
    layers: list[Module] = []
    for fan_in in (features, hidden):
        linear = Linear(fan_in, hidden, weight_init="he_uniform", rng=rng, dtype=dtype)
        drop = [Dropout(dropout, rng=rng)] if dropout > 0 else []
        layers += [*drop, linear, ReLU()] if dropout_first else [linear, ReLU(), *drop]
    layers.append(Linear(hidden, num_classes, rng=rng, dtype=dtype))
    return Sequential(*layers)


# -- LeNet-5 --------------------------------------------------------------------------------


def lenet5(
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 28, 28),
    activation: str = "relu",
    pooling: str = "max",
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """LeNet-5, the seeds' CONV-POOL-CONV-POOL-FC-FC (LeCun, Bottou, Bengio & Haffner 1998):

        conv 5×5, 6 maps → pool 2×2 → conv 5×5, 16 maps → pool 2×2
        → fc 120 → fc 84 → fc num_classes

    Inputs smaller than 32×32 (28×28 MNIST / Fashion-MNIST) get padding 2 in the first
    convolution, so that — as in the paper, where 28×28 digits sat in a 32×32 field —
    the second pooling gives 16 maps of 5×5 (400 features). 32×32 inputs are not
    padded. 61,706 parameters for 10 classes.

    The modern variant is the default: ReLU and max pooling. ``activation="tanh",
    pooling="avg"`` is closer to the 1998 network, which used a scaled tanh,
    trainable subsampling (average pooling times a coefficient, plus a bias), a
    partial C1→C3 connection table and RBF outputs — none of which are reproduced.
    """
    c, h, w = check_input_shape("lenet5", input_shape, 12)
    if pooling not in ("max", "avg"):
        raise ValueError(f"lenet5 pooling must be 'max' or 'avg'; got {pooling!r}")
    activations.get(activation)
    rng = as_generator(rng)
    pad = 2 if min(h, w) < 32 else 0
    pool = MaxPool2d if pooling == "max" else AvgPool2d
    h, w = (_out(_out(_out(_out(n, 5, 1, pad), 2, 2), 5), 2, 2) for n in (h, w))
    features = Sequential(
        Conv2d(c, 6, 5, padding=pad, rng=rng, dtype=dtype), activations.get(activation), pool(2),
        Conv2d(6, 16, 5, rng=rng, dtype=dtype), activations.get(activation), pool(2),
    )
    classifier = Sequential(
        Linear(16 * h * w, 120, weight_init="he_uniform", rng=rng, dtype=dtype),
        activations.get(activation),
        Linear(120, 84, weight_init="he_uniform", rng=rng, dtype=dtype),
        activations.get(activation),
        Linear(84, num_classes, rng=rng, dtype=dtype),
    )
    return named(features=features, flatten=Flatten(), classifier=classifier)


# -- AlexNet -------------------------------------------------------------------------------


def alexnet(
    num_classes: int = 1000,
    input_shape: Sequence[int] = (3, 224, 224),
    groups: int = 2,
    lrn: bool = True,
    width: float = 1.0,
    hidden: int | None = None,
    dropout: float = 0.5,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """AlexNet (Krizhevsky, Sutskever & Hinton 2012): five convolutions, three fc layers.

        conv 11×11/4, 96 → LRN → maxpool 3/2 → conv 5×5, 256 (g) → LRN → maxpool 3/2
        → conv 3×3, 384 → conv 3×3, 384 (g) → conv 3×3, 256 (g) → maxpool 3/2
        → [dropout] fc 4096 → [dropout] fc 4096 → fc num_classes

    (g): ``groups=2`` splits the layer in two towers as the paper's two GPUs did
    (60,965,224 parameters for 1000 classes, the paper's "60 million"); ``groups=1``
    is the one-tower network (62,378,344). The first convolution has padding 2, so a
    224×224 input gives 55×55 maps like the paper's 227×227 (torchvision does the same;
    torchvision's own AlexNet is the narrower 64-192-384-256-256 variant of Krizhevsky
    2014). LRN uses k = 2, n = 5, α = 1e-4, β = 0.75 of the paper; torch's
    ``LocalResponseNorm`` divides α by n, so ``alpha`` = n·1e-4 here.

    Images under 64×64 get a 5×5 stride-1 first convolution (padding 2) and, unless
    ``hidden`` is given, fc layers of 512·``width`` units instead of 4096·``width``.
    """
    c, h, w = check_input_shape("alexnet", input_shape, 32)
    rng = as_generator(rng)
    ch = [_scaled(n, width) for n in (96, 256, 384, 384, 256)]
    if any(n % groups for n in ch):
        raise ValueError(f"alexnet channel counts {ch} must be divisible by groups={groups}")
    small = min(h, w) < SMALL_IMAGE
    kernel, stride, pad = (5, 1, 2) if small else (11, 4, 2)
    hidden = hidden or _scaled(512 if small else 4096, width)

    def norm() -> list[Module]:
        return [LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)] if lrn else []

    def conv(i: int, o: int, k: int, g: int = 1, s: int = 1, p: int | None = None) -> list[Module]:
        p = k // 2 if p is None else p
        return [Conv2d(i, o, k, stride=s, padding=p, groups=g, rng=rng, dtype=dtype), ReLU()]

    features = Sequential(
        *conv(c, ch[0], kernel, s=stride, p=pad), *norm(), MaxPool2d(3, 2),
        *conv(ch[0], ch[1], 5, groups), *norm(), MaxPool2d(3, 2),
        *conv(ch[1], ch[2], 3), *conv(ch[2], ch[3], 3, groups), *conv(ch[3], ch[4], 3, groups),
        MaxPool2d(3, 2),
    )
    h, w = (_out(_out(_out(_out(n, kernel, stride, pad), 3, 2), 3, 2), 3, 2) for n in (h, w))
    classifier = _head(ch[4] * h * w, hidden, num_classes, dropout, rng, dtype,
                       dropout_first=True)
    return named(features=features, flatten=Flatten(), classifier=classifier)


# -- VGG -----------------------------------------------------------------------------------

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg(
    config: str | Sequence[int | str],
    num_classes: int = 1000,
    input_shape: Sequence[int] = (3, 224, 224),
    width: float = 1.0,
    hidden: int | None = None,
    batch_norm: bool = False,
    dropout: float = 0.5,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """VGG (Simonyan & Zisserman 2015): stacks of 3×3 convolutions (padding 1) and 2×2 max
    pooling, then fc 4096 → fc 4096 → fc num_classes with dropout 0.5.

    ``config`` is a name of ``VGG_CONFIGS`` (configurations A, B, D, E of the paper's
    Table 1: vgg11, vgg13, vgg16, vgg19) or a list of channel counts and "M" (pool).
    On 224×224×3 inputs the last pool gives 7×7×512 = 25,088 features and VGG-16 has
    138,357,544 parameters, 102,764,544 of them (102,760,448 weights + 4,096 biases)
    in the first fc layer — the seeds' figures. Images under 64×64 (CIFAR's 32×32: a
    1×1×512 map) get fc layers of 512·``width`` units unless ``hidden`` is given;
    ``width`` scales every channel count; ``batch_norm`` adds BN after each convolution
    (torchvision's ``vgg16_bn``).
    """
    name = config if isinstance(config, str) else "vgg"
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG configuration {config!r}; one of {sorted(VGG_CONFIGS)}")
        config = VGG_CONFIGS[config]
    pools = sum(item == "M" for item in config)
    c, h, w = check_input_shape(name, input_shape, 2**pools)
    rng = as_generator(rng)
    layers: list[Module] = []
    for item in config:
        if item == "M":
            layers.append(MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            out = _scaled(int(item), width)
            layers += conv_bn(c, out, 3, batch_norm=batch_norm, rng=rng, dtype=dtype)
            c = out
    hidden = hidden or _scaled(512 if min(input_shape[1:]) < SMALL_IMAGE else 4096, width)
    classifier = _head(c * h * w, hidden, num_classes, dropout, rng, dtype)
    return named(features=Sequential(*layers), flatten=Flatten(), classifier=classifier)


def vgg11(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
          **options: Any) -> Sequential:
    """VGG-11 (configuration A); see ``vgg`` for the options."""
    return vgg("vgg11", num_classes, input_shape, **options)


def vgg16(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
          **options: Any) -> Sequential:
    """VGG-16 (configuration D); see ``vgg`` for the options."""
    return vgg("vgg16", num_classes, input_shape, **options)


def vgg19(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
          **options: Any) -> Sequential:
    """VGG-19 (configuration E); see ``vgg`` for the options."""
    return vgg("vgg19", num_classes, input_shape, **options)


def small_vgg(
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    batch_norm: bool = False,
    dropout: float = 0.0,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """A small VGG-style network for 32×32 images (the CNN benchmark's):

        conv 3×3, 32 → conv 3×3, 32 → maxpool 2 → conv 3×3, 64 → conv 3×3, 64 → maxpool 2
        → fc 512 → fc num_classes

    all convolutions with padding 1 and ReLU (4,096 features at 32×32; 2,168,362
    parameters for 10 classes).
    """
    c, h, w = check_input_shape("small_vgg", input_shape, 4)
    rng = as_generator(rng)
    layers: list[Module] = []
    for item in (32, 32, "M", 64, 64, "M"):
        if item == "M":
            layers.append(MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            layers += conv_bn(c, item, 3, batch_norm=batch_norm, rng=rng, dtype=dtype)
            c = item
    head: list[Module] = [Linear(c * h * w, 512, weight_init="he_uniform", rng=rng, dtype=dtype),
                          ReLU()]
    head += [Dropout(dropout, rng=rng)] if dropout > 0 else []
    head.append(Linear(512, num_classes, rng=rng, dtype=dtype))
    return named(features=Sequential(*layers), flatten=Flatten(), classifier=Sequential(*head))


# -- GoogLeNet -----------------------------------------------------------------------------

#: Szegedy et al. (2015), Table 1: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj;
#: "M" is a 3×3 stride-2 max pooling.
GOOGLENET_INCEPTIONS: list[tuple[int, ...] | str] = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


def googlenet(
    num_classes: int = 1000,
    input_shape: Sequence[int] = (3, 224, 224),
    width: float = 1.0,
    batch_norm: bool = False,
    lrn: bool = True,
    dropout: float = 0.4,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """GoogLeNet (Szegedy et al. 2015, Table 1) without the auxiliary classifiers:

        conv 7×7/2, 64 → maxpool 3/2 → LRN → conv 1×1, 64 → conv 3×3, 192 → LRN
        → maxpool 3/2 → inception 3a, 3b → maxpool 3/2 → inception 4a–4e → maxpool 3/2
        → inception 5a, 5b → global average pool → dropout 0.4 → fc num_classes

    Pooling windows have padding 1 (224 → 112 → 56 → 28 → 14 → 7, the paper's sizes;
    torchvision uses ceil_mode instead). Images under 64×64 get the small-image stem
    of the common CIFAR-10 version — one 3×3 convolution to 192 channels, no pooling,
    no LRN — so inception 3 works on 32×32 maps. ``width`` scales every channel count
    (``googlenet_small`` in ``MODELS`` is width 0.25 with batch norm, ~0.4M parameters
    for 10 classes); ``batch_norm`` puts BN after every convolution.
    """
    c, h, w = check_input_shape("googlenet", input_shape, 8)
    rng = as_generator(rng)
    unit = dict(batch_norm=batch_norm, rng=rng, dtype=dtype)

    def norm() -> list[Module]:
        return [LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)] if lrn else []

    if min(h, w) < SMALL_IMAGE:
        stem = conv_bn(c, _scaled(192, width), 3, **unit)
    else:
        conv1 = Conv2d(c, _scaled(64, width), 7, stride=2, padding=3, bias=not batch_norm,
                       rng=rng, dtype=dtype)
        stem = [conv1, *([BatchNorm2d(_scaled(64, width), dtype=dtype)] if batch_norm else []),
                ReLU(), MaxPool2d(3, 2, padding=1), *norm(),
                *conv_bn(_scaled(64, width), _scaled(64, width), 1, **unit),
                *conv_bn(_scaled(64, width), _scaled(192, width), 3, **unit),
                *norm(), MaxPool2d(3, 2, padding=1)]
    c = _scaled(192, width)
    layers: list[Module] = []
    for item in GOOGLENET_INCEPTIONS:
        if item == "M":
            layers.append(MaxPool2d(3, 2, padding=1))
            continue
        block = InceptionModule(c, *(_scaled(n, width) for n in item), **unit)
        layers.append(block)
        c = block.out_channels
    head: list[Module] = [GlobalAvgPool2d()]
    head += [Dropout(dropout, rng=rng)] if dropout > 0 else []
    head.append(Linear(c, num_classes, rng=rng, dtype=dtype))
    return named(stem=Sequential(*stem), inception=Sequential(*layers),
                 classifier=Sequential(*head))


# -- ResNet --------------------------------------------------------------------------------


def _survival(stochastic_depth: float | None, blocks: int) -> list[float]:
    """Per-block survival probabilities: all 1, or the linear decay rule to p_L."""
    if stochastic_depth is None:
        return [1.0] * blocks
    return linear_decay(blocks, stochastic_depth)


def resnet_cifar(
    depth: int,
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    shortcut: str = "A",
    stochastic_depth: float | None = None,
    width: int = 16,
    noise_std: float = 0.0,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """The CIFAR-10 ResNets of He et al. (2016, §4.2), depth = 6n + 2:

        conv 3×3, 16 → BN → ReLU → 3 stages of n basic blocks with 16, 32, 64 channels
        (the first block of stages 2 and 3 has stride 2) → global average pool → fc

    ``shortcut="A"`` (the paper's choice here): identity shortcuts, with zero-padded
    channels and stride-2 subsampling where the shape changes — parameter-free, so
    ResNet-20/32/56 have 0.27M/0.46M/0.85M parameters (269,722 / 464,154 / 853,018 with
    batch-norm γ, β and the fc layer). ``shortcut="B"`` uses 1×1 projections there.
    ``stochastic_depth`` = p_L turns on stochastic depth (Huang et al. 2016) with the
    linear decay rule p_l = 1 − (l / L)(1 − p_L) over the L = 3n blocks (the paper:
    p_L = 0.5); ``width`` is the first stage's channel count. ``noise_std`` σ > 0
    injects Gaussian noise into every residual block at training and test time (Wang,
    Yuan, Shi & Osher 2019: y = relu(F(x) + σ ε + shortcut(x)); average over draws and
    models with ``Ensemble(models, draws=D)``), drawn from ``rng``.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n ≥ 1 (20, 32, 56…); got {depth}")
    c, _, _ = check_input_shape(f"resnet{depth}", input_shape, 4)
    rng = as_generator(rng)
    n = (depth - 2) // 6
    survival = iter(_survival(stochastic_depth, 3 * n))
    stages: dict[str, Module] = {}
    channels = width
    for stage, planes in enumerate((width, 2 * width, 4 * width), start=1):
        blocks = []
        for index in range(n):
            stride = 2 if stage > 1 and index == 0 else 1
            blocks.append(BasicBlock(channels, planes, stride, shortcut=shortcut,
                                     survival_prob=next(survival), rng=rng, dtype=dtype,
                                     noise_std=noise_std))
            channels = planes
        stages[f"layer{stage}"] = Sequential(*blocks)
    return named(stem=Sequential(*conv_bn(c, width, 3, rng=rng, dtype=dtype)), **stages,
                 pool=GlobalAvgPool2d(), fc=Linear(channels, num_classes, rng=rng, dtype=dtype))


def resnet20(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
             **options: Any) -> Sequential:
    """ResNet-20 for 32×32 images (n = 3); see ``resnet_cifar``."""
    return resnet_cifar(20, num_classes, input_shape, **options)


def resnet32(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
             **options: Any) -> Sequential:
    """ResNet-32 for 32×32 images (n = 5); see ``resnet_cifar``."""
    return resnet_cifar(32, num_classes, input_shape, **options)


def resnet56(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
             **options: Any) -> Sequential:
    """ResNet-56 for 32×32 images (n = 9); see ``resnet_cifar``."""
    return resnet_cifar(56, num_classes, input_shape, **options)


def resnet(
    block: str,
    layers: Sequence[int],
    num_classes: int = 1000,
    input_shape: Sequence[int] = (3, 224, 224),
    groups: int = 1,
    base_width: int = 64,
    shortcut: str = "B",
    stochastic_depth: float | None = None,
    rng: Any = None,
    dtype: Any = None,
) -> Sequential:
    """ImageNet ResNets (He et al. 2016, Table 1) and ResNeXt (Xie et al. 2017):

        conv 7×7/2, 64 → BN → ReLU → maxpool 3/2 → 4 stages of ``layers[i]`` blocks with
        planes 64, 128, 256, 512 (stride 2 at the start of stages 2–4)
        → global average pool → fc num_classes

    ``block`` is "basic" (ResNet-18/34) or "bottleneck" (ResNet-50 and deeper; with
    ``groups`` = cardinality and ``base_width`` = d, ResNeXt). Shortcuts are 1×1
    projections where the shape changes (option B, torchvision's). Images under 64×64
    get a 3×3 stride-1 stem without max pooling (the common CIFAR-10 ResNet-18, which
    has 11,173,962 parameters for 10 classes). ``stochastic_depth`` as in
    ``resnet_cifar``.
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"resnet block must be 'basic' or 'bottleneck'; got {block!r}")
    c, h, w = check_input_shape("resnet", input_shape, 8)
    rng = as_generator(rng)
    if min(h, w) < SMALL_IMAGE:
        stem = conv_bn(c, 64, 3, rng=rng, dtype=dtype)
    else:
        stem = [Conv2d(c, 64, 7, stride=2, padding=3, bias=False, rng=rng, dtype=dtype),
                BatchNorm2d(64, dtype=dtype), ReLU(), MaxPool2d(3, 2, padding=1)]
    survival = iter(_survival(stochastic_depth, sum(layers)))
    stages: dict[str, Module] = {}
    channels = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        blocks: list[Module] = []
        for index in range(count):
            stride = 2 if stage > 1 and index == 0 else 1
            options = dict(shortcut=shortcut, survival_prob=next(survival), rng=rng, dtype=dtype)
            if block == "basic":
                unit: Module = BasicBlock(channels, planes, stride, **options)
            else:
                unit = Bottleneck(channels, planes, stride, groups=groups,
                                  base_width=base_width, **options)
            blocks.append(unit)
            channels = unit.out_channels
        stages[f"layer{stage}"] = Sequential(*blocks)
    return named(stem=Sequential(*stem), **stages, pool=GlobalAvgPool2d(),
                 fc=Linear(channels, num_classes, rng=rng, dtype=dtype))


def resnet18(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
             **options: Any) -> Sequential:
    """ResNet-18: basic blocks [2, 2, 2, 2]; see ``resnet``."""
    return resnet("basic", [2, 2, 2, 2], num_classes, input_shape, **options)


def resnet34(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
             **options: Any) -> Sequential:
    """ResNet-34: basic blocks [3, 4, 6, 3]; see ``resnet``."""
    return resnet("basic", [3, 4, 6, 3], num_classes, input_shape, **options)


def resnet50(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
             **options: Any) -> Sequential:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3]; see ``resnet``."""
    return resnet("bottleneck", [3, 4, 6, 3], num_classes, input_shape, **options)


def resnext50_32x4d(num_classes: int = 1000, input_shape: Sequence[int] = (3, 224, 224),
                    **options: Any) -> Sequential:
    """ResNeXt-50 (32×4d): ResNet-50 with cardinality 32 and group width 4; see ``resnet``."""
    return resnet("bottleneck", [3, 4, 6, 3], num_classes, input_shape, groups=32,
                  base_width=4, **options)


# -- the registry ---------------------------------------------------------------------------

MODELS: dict[str, Callable[..., Module]] = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "small_vgg": small_vgg,
    "googlenet": googlenet,
    "googlenet_small": partial(googlenet, width=0.25, batch_norm=True),
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnext50_32x4d": resnext50_32x4d,
}


def build(name: str, num_classes: int, input_shape: Sequence[int], **options: Any) -> Module:
    """``MODELS[name](num_classes, input_shape, **options)``; a clear error for unknown names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes}")
    return MODELS[name](int(num_classes), tuple(input_shape), **options)
