"""Data augmentation: batched, seeded transforms of image batches, on NumPy or CuPy.

A transform is a callable ``transform(x, rng) -> x``: ``x`` is a batch of
images, (N, C, H, W) with ``layout="NCHW"`` (the default, torch's) or
(N, H, W, C) with ``layout="NHWC"``; ``rng`` is a ``numpy.random.Generator``,
an integer seed or ``None`` (the module-wide generator; see
``ermlab.backend``). Each image gets its own random parameters, drawn on the
CPU from ``rng`` in a fixed order, so a seeded run repeats exactly on NumPy
and on CuPy. The output has the input's layout and dtype (float images are
expected; geometric transforms interpolate) and, except for crops to another
``size``, its shape.

    augment = Compose([RandomCrop(padding=4), RandomHorizontalFlip(),
                       RandomBrightness(0.1)])
    x_batch = augment(x_batch, rng)

Transforms: ``RandomCrop`` (with padding), ``RandomScaleCrop``,
``RandomHorizontalFlip``, ``RandomAffine`` (translation, rotation, shearing,
stretching), ``RadialDistortion``, ``RandomBrightness``, ``RandomContrast``,
``PCAColor``; ``Compose`` chains them. Test-time augmentation: ``ten_crops``
and ``predict_tta`` (average predictions over the four corner crops, the
centre crop and their mirror images).

Using them in training: ``AsImages(transform, (1, 28, 28))`` applies an image
transform to flat rows (N, 784); ``Augment(transform)`` is a Module that
augments its input in training mode only, so
``Sequential(Augment(t, rng=0), model…)`` augments every training batch of an
unchanged Trainer. From the command line, ``parse("crop:4,flip,rotate:10")``
builds a ``Compose`` from a short spec (see ``parse``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy

from ermlab.backend import array_module, as_generator, to_numpy
from ermlab.nn.module import Module

LAYOUTS = ("NCHW", "NHWC")


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")
    return layout


def _to_nhwc(x: Any, layout: str, who: str) -> Any:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(
            f"{who} expects a batch of images of rank 4 ({layout}); got shape "
            f"{tuple(getattr(x, 'shape', ()))}. Reshape flat rows with AsImages(transform, "
            "image_shape)"
        )
    return x.transpose(0, 2, 3, 1) if layout == "NCHW" else x


def _from_nhwc(x: Any, layout: str) -> Any:
    xp = array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x)


def _pair(value: Any, name: str) -> tuple[float, float]:
    lo, hi = (value, value) if numpy.isscalar(value) else tuple(value)
    if not lo <= hi:
        raise ValueError(f"{name} must be a range (low, high) with low ≤ high; got {value!r}")
    return float(lo), float(hi)


class Transform:
    """Base class: ``__call__(x, rng)`` converts to NHWC, calls ``apply``, converts back.

    Subclasses write ``apply(x, generator)`` on an (N, H, W, C) batch.
    """

    def __init__(self, layout: str = "NCHW") -> None:
        self.layout = _check_layout(layout)

    def __call__(self, x: Any, rng: Any = None) -> Any:
        nhwc = _to_nhwc(x, self.layout, type(self).__name__)
        return _from_nhwc(self.apply(nhwc, as_generator(rng)), self.layout)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Compose:
    """Apply transforms in order, all drawing from one generator: t_k(…t_1(x, rng)…, rng)."""

    def __init__(self, transforms: Sequence[Callable[[Any, Any], Any]]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose takes callables transform(x, rng); got {t!r}")

    def __call__(self, x: Any, rng: Any = None) -> Any:
        generator = as_generator(rng)
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


# -- crops and flips ------------------------------------------------------------------


def _gather_windows(x: Any, top: Any, left: Any, h: int, w: int) -> Any:
    """x[n, top_n : top_n + h, left_n : left_n + w, :] for every n, as one gather."""
    xp = array_module(x)
    n = x.shape[0]
    rows = xp.asarray(top)[:, None] + xp.arange(h)[None, :]
    cols = xp.asarray(left)[:, None] + xp.arange(w)[None, :]
    return x[xp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _size(size: Any, x: Any) -> tuple[int, int]:
    if size is None:
        return x.shape[1], x.shape[2]
    h, w = (size, size) if numpy.isscalar(size) else size
    return int(h), int(w)


class RandomCrop(Transform):
    """Pad each side by ``padding`` (with ``fill``), then crop a random (h, w) window per image.

    ``size`` = (h, w) or an int; ``None`` keeps the input size (the CIFAR-10
    "pad 4, crop 32" augmentation of He et al. 2016). Offsets are uniform over
    all windows inside the padded image, as torchvision's ``RandomCrop``.
    """

    def __init__(
        self, size: Any = None, padding: int = 0, fill: float = 0.0, layout: str = "NCHW"
    ) -> None:
        super().__init__(layout)
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be ≥ 0; got {padding}")
        self.size, self.padding, self.fill = size, int(padding), float(fill)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        xp = array_module(x)
        h, w = _size(self.size, x)
        p = self.padding
        if p:
            x = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=self.fill)
        room_h, room_w = x.shape[1] - h, x.shape[2] - w
        if room_h < 0 or room_w < 0:
            raise ValueError(
                f"RandomCrop size {(h, w)} is larger than the padded image {x.shape[1:3]}"
            )
        top = generator.integers(0, room_h + 1, size=x.shape[0])
        left = generator.integers(0, room_w + 1, size=x.shape[0])
        return _gather_windows(x, top, left, h, w)


class RandomHorizontalFlip(Transform):
    """Mirror each image left–right with probability ``p`` (default 0.5)."""

    def __init__(self, p: float = 0.5, layout: str = "NCHW") -> None:
        super().__init__(layout)
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1]; got {p}")
        self.p = float(p)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        xp = array_module(x)
        flip = xp.asarray(generator.random(x.shape[0]) < self.p)
        return xp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


# -- resampling: geometric transforms ---------------------------------------------------------


def _bilinear(x: Any, rows: Any, cols: Any, fill: float) -> Any:
    """Sample x (N, H, W, C) at real coordinates rows, cols (N, h, w); ``fill`` outside."""
    xp = array_module(x)
    n, height, width, _ = x.shape
    r0, c0 = xp.floor(rows), xp.floor(cols)
    dr, dc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(xp.int64), c0.astype(xp.int64)
    batch = xp.arange(n)[:, None, None]
    out = xp.zeros(rows.shape + (x.shape[3],), dtype=numpy.float64)
    for a, wr in ((0, 1 - dr), (1, dr)):
        for b, wc in ((0, 1 - dc), (1, dc)):
            r, c = r0 + a, c0 + b
            inside = ((r >= 0) & (r < height) & (c >= 0) & (c < width))[..., None]
            value = x[batch, xp.clip(r, 0, height - 1), xp.clip(c, 0, width - 1)]
            out += wr * wc * xp.where(inside, value, fill)
    return out.astype(x.dtype)


def _warp(x: Any, inverse: numpy.ndarray, shift: numpy.ndarray, size: Any, fill: float) -> Any:
    """Output pixel q (row, col), centred, samples the input at inverse_n q + shift_n (centred)."""
    xp = array_module(x)
    h, w = size
    rows = xp.arange(h, dtype=numpy.float64) - (h - 1) / 2
    cols = xp.arange(w, dtype=numpy.float64) - (w - 1) / 2
    q = xp.stack(xp.meshgrid(rows, cols, indexing="ij"), axis=-1)  # (h, w, 2)
    src = xp.einsum("nij,hwj->nhwi", xp.asarray(inverse), q) + xp.asarray(shift)[:, None, None]
    centre = numpy.array([(x.shape[1] - 1) / 2, (x.shape[2] - 1) / 2])
    return _bilinear(x, src[..., 0] + centre[0], src[..., 1] + centre[1], fill)


class RandomScaleCrop(Transform):
    """Scale each image by s ~ U[scale], then crop a random (h, w) window: in the input, a
    window of whole pixels resized (bilinear) to (h, w).

    Per image the window is (h', w') = (round(h/s), round(w/s)) input pixels
    (at most (H, W)), its top-left corner (i, j) uniform over the whole-pixel
    positions inside, i ~ U{0, …, H − h'}, j ~ U{0, …, W − w'}, as
    torchvision's ``RandomResizedCrop`` chooses its windows. It is resized as
    torch's bilinear ``interpolate`` (``align_corners=False``): output row r
    samples window row (r + ½)·h'/h − ½, clamped to the window. With ``size``
    smaller than the input and s ≥ 1 this is the scale jittering of Simonyan &
    Zisserman (2015); with s = 1, h' = h and the output is an exact crop of
    the input: Krizhevsky et al.'s (2012) random 224 crops of 256 images.
    Needs min(scale)·H ≥ h, so scale ≥ 1 when ``size`` is None (the input's).
    """

    def __init__(
        self, size: Any = None, scale: Any = (1.0, 1.25), fill: float = 0.0,
        layout: str = "NCHW",
    ) -> None:
        super().__init__(layout)
        self.size, self.scale, self.fill = size, _pair(scale, "RandomScaleCrop scale"), fill
        if self.scale[0] <= 0:
            raise ValueError(f"RandomScaleCrop scale must be > 0; got {scale!r}")
        if size is None and self.scale[0] < 1:
            raise ValueError(
                f"RandomScaleCrop scale {scale!r}: an image scaled by {self.scale[0]} is smaller "
                "than the crop, the image's own size (size=None); the lower scale must be ≥ 1, "
                "or give a smaller size"
            )

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        n, height, width = x.shape[:3]
        h, w = _size(self.size, x)
        if self.scale[0] * height < h or self.scale[0] * width < w:
            raise ValueError(
                f"RandomScaleCrop: an image of {(height, width)} scaled by {self.scale[0]} is "
                f"smaller than the crop {(h, w)}; raise the lower scale"
            )
        s = generator.uniform(*self.scale, size=n)
        rows = numpy.clip(numpy.round(h / s), 1, height).astype(numpy.int64)  # (h', w')
        cols = numpy.clip(numpy.round(w / s), 1, width).astype(numpy.int64)
        top = generator.integers(0, height - rows + 1)
        left = generator.integers(0, width - cols + 1)
        at_rows = numpy.broadcast_to(_resized(top, rows, h)[:, :, None], (n, h, w))
        at_cols = numpy.broadcast_to(_resized(left, cols, w)[:, None, :], (n, h, w))
        xp = array_module(x)
        return _bilinear(x, xp.asarray(at_rows), xp.asarray(at_cols), self.fill)


def _resized(start: numpy.ndarray, length: numpy.ndarray, size: int) -> numpy.ndarray:
    """Input coordinates (n, size) of ``size`` output pixels resizing the windows
    [start, start + length) as torch's bilinear ``interpolate(align_corners=False)``:
    output r samples (r + ½)·length/size − ½ past ``start``, clamped to the window."""
    within = (numpy.arange(size) + 0.5) * (length[:, None] / size) - 0.5
    return start[:, None] + numpy.clip(within, 0, length[:, None] - 1)


class RandomAffine(Transform):
    """Random translation, rotation, shearing and stretching about the image centre.

    Per image, with angle θ ~ U[−degrees, degrees], shear angle φ ~
    U[−shear, shear] (degrees, along the horizontal axis), stretch factors
    s_y, s_x ~ U[stretch] independently, and shift t ~ U[−translate·(H, W)]:

        p_out = R(θ) Sh(φ) diag(s_y, s_x) p_in + t       (p centred on the image)

    and the output samples the input at the inverse map (bilinear, ``fill``
    outside). All parameters zero / one give the identity.
    """

    def __init__(
        self, degrees: float = 0.0, translate: Any = (0.0, 0.0), shear: float = 0.0,
        stretch: Any = (1.0, 1.0), fill: float = 0.0, layout: str = "NCHW",
    ) -> None:
        super().__init__(layout)
        self.degrees, self.shear = float(degrees), float(shear)
        self.translate = tuple(float(t) for t in _pair_of(translate))
        self.stretch = _pair(stretch, "RandomAffine stretch")
        self.fill = float(fill)
        if self.degrees < 0 or self.shear < 0 or min(self.translate) < 0:
            raise ValueError("RandomAffine degrees, translate and shear must be ≥ 0")
        if self.stretch[0] <= 0:
            raise ValueError(f"RandomAffine stretch factors must be > 0; got {stretch!r}")

    def matrices(self, n: int, generator: numpy.random.Generator) -> tuple[Any, Any]:
        """The forward maps (A (n, 2, 2), t (n, 2)) in (row, col) coordinates."""
        theta = numpy.deg2rad(generator.uniform(-self.degrees, self.degrees, size=n))
        phi = numpy.deg2rad(generator.uniform(-self.shear, self.shear, size=n))
        stretch = generator.uniform(*self.stretch, size=(n, 2))
        shift = generator.uniform(-1, 1, size=(n, 2)) * numpy.array(self.translate)
        cos, sin = numpy.cos(theta), numpy.sin(theta)
        rotation = numpy.stack([numpy.stack([cos, -sin], -1), numpy.stack([sin, cos], -1)], 1)
        shearing = numpy.zeros((n, 2, 2))
        shearing[:, 0, 0] = shearing[:, 1, 1] = 1
        shearing[:, 1, 0] = numpy.tan(phi)  # col += tan φ · row
        forward = rotation @ shearing @ (stretch[:, :, None] * numpy.eye(2))
        return forward, shift

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        forward, shift = self.matrices(x.shape[0], generator)
        shift = shift * numpy.array(x.shape[1:3])
        inverse = numpy.linalg.inv(forward)
        return _warp(x, inverse, -numpy.einsum("nij,nj->ni", inverse, shift),
                     x.shape[1:3], self.fill)


def _pair_of(value: Any) -> tuple[float, float]:
    return (value, value) if numpy.isscalar(value) else tuple(value)


class RadialDistortion(Transform):
    """Lens-like radial distortion: the output at radius r samples the input at r(1 + κ r²).

    κ ~ U[−k, k] per image; r is the distance from the centre divided by the
    half-diagonal (r = 1 at the corners). κ > 0 gives barrel distortion
    (magnification falls off with r), κ < 0 pincushion (Brown's model with
    one coefficient).
    """

    def __init__(self, k: float = 0.2, fill: float = 0.0, layout: str = "NCHW") -> None:
        super().__init__(layout)
        if not k >= 0:
            raise ValueError(f"RadialDistortion k must be ≥ 0; got {k}")
        self.k, self.fill = float(k), float(fill)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        xp = array_module(x)
        n, h, w = x.shape[:3]
        kappa = xp.asarray(generator.uniform(-self.k, self.k, size=n))[:, None, None]
        rows = xp.arange(h, dtype=numpy.float64) - (h - 1) / 2
        cols = xp.arange(w, dtype=numpy.float64) - (w - 1) / 2
        grid_r, grid_c = xp.meshgrid(rows, cols, indexing="ij")
        half_diagonal = max(math.hypot((h - 1) / 2, (w - 1) / 2), 1.0)
        factor = 1 + kappa * ((grid_r**2 + grid_c**2) / half_diagonal**2)[None]
        return _bilinear(x, grid_r * factor + (h - 1) / 2, grid_c * factor + (w - 1) / 2,
                         self.fill)


# -- photometric --------------------------------------------------------------------------------


class RandomBrightness(Transform):
    """x + b with b ~ U[−delta, delta] per image (the same offset for every pixel and channel)."""

    def __init__(self, delta: float, layout: str = "NCHW") -> None:
        super().__init__(layout)
        if not delta >= 0:
            raise ValueError(f"RandomBrightness delta must be ≥ 0; got {delta}")
        self.delta = float(delta)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        xp = array_module(x)
        if numpy.dtype(x.dtype).kind != "f":  # the offset rounded to an integer dtype: 0
            raise ValueError(f"RandomBrightness needs floating-point images; got {x.dtype}. "
                             "Convert them: x.astype(numpy.float32) / 255")
        b = generator.uniform(-self.delta, self.delta, size=x.shape[0])
        return x + xp.asarray(b, dtype=x.dtype)[:, None, None, None]


class RandomContrast(Transform):
    """(x − μ) c + μ with c ~ U[lower, upper] per image, μ the image's mean of each channel.

    As TensorFlow's ``adjust_contrast`` (per-channel mean); torchvision mixes
    towards the mean of the grayscale image instead.
    """

    def __init__(self, lower: float = 0.8, upper: float = 1.2, layout: str = "NCHW") -> None:
        super().__init__(layout)
        if not 0 <= lower <= upper:
            raise ValueError(f"RandomContrast needs 0 ≤ lower ≤ upper; got {lower}, {upper}")
        self.lower, self.upper = float(lower), float(upper)

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        xp = array_module(x)
        c = xp.asarray(generator.uniform(self.lower, self.upper, size=x.shape[0]), dtype=x.dtype)
        mean = x.mean(axis=(1, 2), keepdims=True)
        return (x - mean) * c[:, None, None, None] + mean


class PCAColor(Transform):
    """PCA colour augmentation (Krizhevsky et al. 2012, "fancy PCA").

    To every pixel of an image add the same offset along the principal
    components of the training pixels' colours:

        δ = [p_1, …, p_C] [α_1 λ_1, …, α_C λ_C]ᵀ,   α_i ~ N(0, std²) per image

    where p_i, λ_i are the eigenvectors and eigenvalues of the C × C covariance
    of all training pixels (``PCAColor.fit(x_train)``). Krizhevsky et al. use
    std = 0.1 and scale by λ_i as written above; some implementations scale by
    √λ_i instead.
    """

    def __init__(
        self, eigenvalues: Any, eigenvectors: Any, std: float = 0.1, layout: str = "NCHW"
    ) -> None:
        super().__init__(layout)
        self.eigenvalues = numpy.asarray(eigenvalues, dtype=numpy.float64)
        self.eigenvectors = numpy.asarray(eigenvectors, dtype=numpy.float64)
        c = self.eigenvalues.shape[0]
        if self.eigenvalues.ndim != 1 or self.eigenvectors.shape != (c, c):
            raise ValueError(
                "PCAColor needs C eigenvalues and a C × C matrix of eigenvectors (columns); got "
                f"shapes {self.eigenvalues.shape} and {self.eigenvectors.shape}"
            )
        if not std >= 0:
            raise ValueError(f"PCAColor std must be ≥ 0; got {std}")
        self.std = float(std)

    @classmethod
    def fit(cls, x: Any, std: float = 0.1, layout: str = "NCHW") -> PCAColor:
        """Eigen-decompose the covariance of the colours of every pixel of ``x`` (unbiased)."""
        images = _to_nhwc(x, _check_layout(layout), "PCAColor.fit")
        channels = images.shape[3]
        total, outer, count = numpy.zeros(channels), numpy.zeros((channels, channels)), 0
        for start in range(0, images.shape[0], 256):  # chunks keep memory small
            pixels = to_numpy(images[start:start + 256]).reshape(-1, channels)
            pixels = pixels.astype(numpy.float64)
            total += pixels.sum(axis=0)
            outer += pixels.T @ pixels
            count += pixels.shape[0]
        if count < 2:
            raise ValueError("PCAColor.fit needs at least 2 pixels")
        mean = total / count
        covariance = (outer - count * numpy.outer(mean, mean)) / (count - 1)
        eigenvalues, eigenvectors = numpy.linalg.eigh(covariance)
        return cls(numpy.clip(eigenvalues[::-1], 0, None), eigenvectors[:, ::-1], std, layout)

    def offsets(self, n: int, generator: numpy.random.Generator) -> numpy.ndarray:
        """The colour offsets δ (n, C) for n images."""
        alpha = generator.normal(0.0, self.std, size=(n, self.eigenvalues.shape[0]))
        return (alpha * self.eigenvalues) @ self.eigenvectors.T

    def apply(self, x: Any, generator: numpy.random.Generator) -> Any:
        if x.shape[3] != self.eigenvalues.shape[0]:
            raise ValueError(
                f"PCAColor was fitted on {self.eigenvalues.shape[0]} channels; got images with "
                f"{x.shape[3]} channels"
            )
        xp = array_module(x)
        delta = xp.asarray(self.offsets(x.shape[0], generator), dtype=x.dtype)
        return x + delta[:, None, None, :]

    def __repr__(self) -> str:
        return f"PCAColor(channels={self.eigenvalues.shape[0]}, std={self.std})"


# -- test-time augmentation -----------------------------------------------------------------


def ten_crops(x: Any, size: Any, layout: str = "NCHW", flips: bool = True) -> list[Any]:
    """The four corner crops and the centre crop of size (h, w), then their mirror images.

    Returns 10 batches (5 without ``flips``) in the order top-left, top-right,
    bottom-left, bottom-right, centre (Krizhevsky et al. 2012's test-time crops); the
    centre offset rounds down when the margin is odd (torchvision rounds half to even).
    """
    nhwc = _to_nhwc(x, _check_layout(layout), "ten_crops")
    height, width = nhwc.shape[1:3]
    h, w = _size(size, nhwc)
    if h > height or w > width:
        raise ValueError(f"ten_crops size {(h, w)} is larger than the images {(height, width)}")
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w),
               ((height - h) // 2, (width - w) // 2)]
    crops = [nhwc[:, r:r + h, c:c + w, :] for r, c in corners]
    if flips:
        crops += [crop[:, :, ::-1, :] for crop in crops]
    return [_from_nhwc(crop, layout) for crop in crops]


def predict_tta(
    predict: Callable[[Any], Any], x: Any, size: Any, layout: str = "NCHW", flips: bool = True
) -> Any:
    """Test-time augmentation: (1/K) Σ_k predict(crop_k(x)) over ``ten_crops``.

    ``predict`` maps a batch of crops to predicted probabilities (N, classes),
    e.g. ``lambda c: softmax(model.eval().forward(c))``.
    """
    crops = ten_crops(x, size, layout, flips)
    total = predict(crops[0])
    for crop in crops[1:]:
        total = total + predict(crop)
    return total / len(crops)


# -- adaptors for training ----------------------------------------------------------------------


class AsImages:
    """Apply an image transform to flat rows: (N, D) → (N, *image_shape) → transform → (N, D).

    ``image_shape`` is in the transform's layout, e.g. (1, 28, 28) for
    Fashion-MNIST rows with NCHW transforms.
    """

    def __init__(self, transform: Callable[[Any, Any], Any], image_shape: Sequence[int]) -> None:
        self.transform, self.image_shape = transform, tuple(int(d) for d in image_shape)

    def __call__(self, x: Any, rng: Any = None) -> Any:
        if x.ndim != 2 or x.shape[1] != math.prod(self.image_shape):
            raise ValueError(
                f"AsImages expects rows of {math.prod(self.image_shape)} values "
                f"{self.image_shape}; got shape {tuple(x.shape)}"
            )
        images = x.reshape((x.shape[0], *self.image_shape))
        return self.transform(images, rng).reshape(x.shape[0], -1)


class Augment(Module):
    """A Module that applies ``transform(x, rng)`` in training mode and nothing in eval mode.

    Put it first in a model so an unchanged Trainer augments every training
    batch: ``Sequential(Augment(t, rng=0), *layers)``. It has no gradient
    (augmentation is not differentiable): as the first box it is called with
    ``input_grad=False``; asking it for an input gradient is an error.
    """

    def __init__(self, transform: Callable[[Any, Any], Any], rng: Any = None) -> None:
        super().__init__()
        if not callable(transform):
            raise ValueError(f"Augment needs a callable transform(x, rng); got {transform!r}")
        self.transform = transform
        self._rng = None if rng is None else as_generator(rng)

    def forward(self, x: Any) -> Any:
        return self.transform(x, as_generator(self._rng)) if self.training else x

    def backward(self, grad_out: Any, input_grad: bool = True) -> Any:
        if input_grad:
            raise RuntimeError(
                "Augment has no input gradient (augmentation is not differentiable); put it "
                "first in the model, where backward runs with input_grad=False"
            )
        return None

    def extra_repr(self) -> str:
        return repr(self.transform)


# -- the command line -----------------------------------------------------------------------


def _spec_table() -> dict[str, tuple[Callable[..., Transform], str]]:
    return {
        "crop": (lambda pad=4: RandomCrop(padding=int(pad)), "crop[:PADDING]"),
        "flip": (lambda p=0.5: RandomHorizontalFlip(p), "flip[:P]"),
        "scale": (lambda lo=1.0, hi=1.25: RandomScaleCrop(scale=(lo, hi)), "scale[:LO:HI]"),
        "translate": (lambda f=0.1: RandomAffine(translate=(f, f)), "translate[:FRACTION]"),
        "rotate": (lambda d=10.0: RandomAffine(degrees=d), "rotate[:DEGREES]"),
        "shear": (lambda d=10.0: RandomAffine(shear=d), "shear[:DEGREES]"),
        "stretch": (lambda lo=0.9, hi=1.1: RandomAffine(stretch=(lo, hi)), "stretch[:LO:HI]"),
        "distort": (lambda k=0.2: RadialDistortion(k), "distort[:K]"),
        "brightness": (lambda d=0.1: RandomBrightness(d), "brightness[:DELTA]"),
        "contrast": (lambda lo=0.8, hi=1.2: RandomContrast(lo, hi), "contrast[:LO:HI]"),
        "pca": (PCAColor.fit, "pca[:STD]"),
    }


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (list, tuple)) and all(isinstance(item, str) for item in spec):
        return ",".join(spec)
    raise ValueError(f"an augmentation spec is a string such as 'crop:2,flip' or a list of "
                     f"such items; got {spec!r}")


def parse(spec: str | Sequence[str], layout: str = "NCHW", data: Any = None) -> Compose:
    """Build a ``Compose`` from a command-line spec such as ``"crop:4,flip,rotate:10"``.

    Items are separated by commas, arguments by colons; every argument has a
    default. Padding and the fill of warps are 0 in the units the batches are in:
    under ``ermlab train``'s preprocessing (the mean subtracted) that is the mean
    colour, not black. Crop's padding is a whole number of pixels, and ``scale`` crops
    windows of the image's size, so its LO is ≥ 1. A list of items
    (``["crop:4", "flip"]``, as a TOML file or ``--set augment=[...]`` writes
    it) is the same as the items joined by commas.
    Names: crop[:PADDING], flip[:P], scale[:LO:HI], translate[:FRACTION],
    rotate[:DEGREES], shear[:DEGREES], stretch[:LO:HI], distort[:K],
    brightness[:DELTA], contrast[:LO:HI], pca[:STD] (fitted on ``data``, the
    training images, which it then needs).
    """
    spec = _spec_text(spec)
    table = _spec_table()
    transforms = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, *args = item.split(":")
        if name not in table:
            usage = ", ".join(text for _, text in table.values())
            raise ValueError(f"unknown augmentation {name!r} in {spec!r}; choose from {usage}")
        try:
            if name == "crop" and not all(re.fullmatch(r"[0-9]+", a.strip()) for a in args):
                raise ValueError("the padding is a whole number of pixels (digits 0-9)")
            values = [float(a) for a in args]
            if name == "pca":
                if data is None:
                    raise ValueError("'pca' needs the training images: parse(spec, data=x_train)")
                transform = PCAColor.fit(data, *values, layout=layout)
            else:
                transform = table[name][0](*values)
        except (TypeError, ValueError) as error:
            where = "" if item == spec.strip() else f" in {spec!r}"
            raise ValueError(
                f"bad augmentation {item!r}{where}: {error} (usage: {table[name][1]})"
            ) from None
        transform.layout = _check_layout(layout)
        transforms.append(transform)
    return Compose(transforms)
