"""Augmentations: shapes, layouts, seeds, and each geometric map against SciPy's resampler.

Oracles: ``scipy.ndimage.affine_transform`` / ``map_coordinates`` with linear
interpolation and ``mode="grid-constant"`` (bilinear, fill outside), given the
maps written out from the docstrings; NumPy's eigen-decomposition for PCA;
plain slicing for crops.
"""

import numpy as np
import pytest
from scipy import ndimage

from ermlab import nn
from ermlab.data import transforms as T


def images(seed=0, shape=(5, 3, 9, 12), dtype=np.float64):
    return np.random.default_rng(seed).random(shape).astype(dtype)


ALL = [
    T.RandomCrop(padding=3),
    T.RandomHorizontalFlip(),
    T.RandomScaleCrop(scale=(1.0, 1.4)),
    T.RandomAffine(degrees=20, translate=(0.1, 0.2), shear=10, stretch=(0.8, 1.2)),
    T.RadialDistortion(0.3),
    T.RandomBrightness(0.2),
    T.RandomContrast(0.5, 1.5),
    T.PCAColor(np.array([2.0, 1.0, 0.5]), np.linalg.qr(images(9, (3, 3)))[0], std=0.1),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_shape_dtype_seed_and_layout(transform):
    x = images(dtype=np.float32)
    y = transform(x, 7)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(transform(x, 7), y)  # seeded runs are identical
    assert not np.array_equal(transform(x, 8), y)  # and the seed matters
    transform.layout = "NHWC"
    try:
        y_nhwc = transform(x.transpose(0, 2, 3, 1), 7)
    finally:
        transform.layout = "NCHW"
    np.testing.assert_allclose(y_nhwc, y.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_compose_draws_from_one_generator_in_order():
    x = images()
    crop, flip = T.RandomCrop(padding=2), T.RandomHorizontalFlip()
    composed = T.Compose([crop, flip])(x, np.random.default_rng(3))
    g = np.random.default_rng(3)
    np.testing.assert_array_equal(composed, flip(crop(x, g), g))


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_flip_twice_is_the_identity(p):
    x = images()
    flip = T.RandomHorizontalFlip(p)
    once = flip(x, 4)
    np.testing.assert_array_equal(flip(once, 4), x)
    if p == 1.0:
        np.testing.assert_array_equal(once, x[..., ::-1])
    else:
        flipped = [np.array_equal(once[n], x[n, ..., ::-1]) for n in range(len(x))]
        unchanged = [np.array_equal(once[n], x[n]) for n in range(len(x))]
        assert all(a != b for a, b in zip(flipped, unchanged)) and any(flipped)


def test_random_crop_windows_come_from_the_padded_image():
    x = images(shape=(40, 2, 5, 6))
    pad = 2
    out = T.RandomCrop(padding=pad)(x, 0)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    offsets = set()
    for n in range(len(x)):
        found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
                 if np.array_equal(padded[n, :, i:i + 5, j:j + 6], out[n])]
        assert found, f"image {n} is not a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 12  # offsets spread over the 25 positions
    smaller = T.RandomCrop(size=(3, 4))(x, 0)
    assert smaller.shape == (40, 2, 3, 4)


def _scipy_affine(x, inverse, shift, fill=0.0):
    """Output o samples input i = inverse (o − c_out) + shift + c_in (centred coordinates)."""
    out = np.empty_like(x)
    c = (np.array(x.shape[2:]) - 1) / 2
    for n in range(len(x)):
        offset = -inverse[n] @ c + shift[n] + c
        for ch in range(x.shape[1]):
            out[n, ch] = ndimage.affine_transform(x[n, ch], inverse[n], offset, order=1,
                                                  mode="grid-constant", cval=fill)
    return out


def test_affine_matches_scipy():
    x = images()
    t = T.RandomAffine(degrees=30, translate=(0.1, 0.2), shear=15, stretch=(0.7, 1.3), fill=0.5)
    out = t(x, 11)
    forward, shift = t.matrices(len(x), np.random.default_rng(11))
    shift = shift * np.array(x.shape[2:])
    inverse = np.linalg.inv(forward)
    expected = _scipy_affine(x, inverse, -np.einsum("nij,nj->ni", inverse, shift), fill=0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_affine_parameters_follow_the_docstring():
    t = T.RandomAffine(degrees=30, shear=15, stretch=(0.7, 1.3))
    forward, _ = t.matrices(1000, np.random.default_rng(0))
    g = np.random.default_rng(0)
    theta = np.deg2rad(g.uniform(-30, 30, 1000))
    phi = np.deg2rad(g.uniform(-15, 15, 1000))
    s = g.uniform(0.7, 1.3, (1000, 2))
    for n in (0, 500, 999):
        c, s_ = np.cos(theta[n]), np.sin(theta[n])
        rot = np.array([[c, -s_], [s_, c]])
        shear = np.array([[1.0, 0.0], [np.tan(phi[n]), 1.0]])
        np.testing.assert_allclose(forward[n], rot @ shear @ np.diag(s[n]), rtol=1e-14)
    # the determinant is s_y s_x: rotation and shear preserve area
    np.testing.assert_allclose(np.linalg.det(forward), s.prod(axis=1), rtol=1e-12)


def test_integer_translation_shifts_pixels_exactly():
    x = images(shape=(3, 1, 6, 6))

    class Shift(T.RandomAffine):
        def matrices(self, n, generator):
            return np.repeat(np.eye(2)[None], n, 0), np.tile([1 / 6, -2 / 6], (n, 1))

    out = Shift()(x, 0)  # down one row, left two columns, zeros enter
    expected = np.zeros_like(x)
    expected[:, :, 1:, :4] = x[:, :, :5, 2:]
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_scale_crop_resizes_whole_pixel_windows_as_torch():
    """The window (round(h/s), round(w/s)) at whole-pixel offsets, resized by torch's
    bilinear ``interpolate`` (the oracle), as torchvision's ``RandomResizedCrop``."""
    torch = pytest.importorskip("torch")
    x = images(shape=(40, 3, 9, 12))
    lo, hi, size = 0.9, 1.6, (7, 8)
    out = T.RandomScaleCrop(size=size, scale=(lo, hi))(x, 5)
    g = np.random.default_rng(5)
    s = g.uniform(lo, hi, len(x))
    rows, cols = np.clip(np.round(7 / s), 1, 9).astype(int), np.clip(np.round(8 / s), 1, 12)
    cols = cols.astype(int)
    top, left = g.integers(0, 9 - rows + 1), g.integers(0, 12 - cols + 1)
    assert len(set(zip(rows, cols))) > 3  # windows smaller and larger than the output
    for n in range(len(x)):
        window = torch.from_numpy(x[n:n + 1, :, top[n]:top[n] + rows[n],
                                    left[n]:left[n] + cols[n]].copy())
        expected = torch.nn.functional.interpolate(window, size=size, mode="bilinear",
                                                   align_corners=False)[0].numpy()
        np.testing.assert_allclose(out[n], expected, rtol=1e-12, atol=1e-12)


def test_scale_one_gives_exact_crops_at_every_offset():
    """s = 1: Krizhevsky's random crops, the input's pixels exactly (the window's offset was
    drawn continuously, and bilinear interpolation blurred every output)."""
    x = images(shape=(400, 1, 7, 6), dtype=np.float32)
    out = T.RandomScaleCrop(size=(4, 4), scale=1.0)(x, 3)
    offsets = []
    for o, image in zip(out, x):
        found = [(i, j) for i in range(4) for j in range(3)
                 if np.array_equal(o, image[:, i:i + 4, j:j + 4])]
        assert len(found) == 1
        offsets += found
    assert set(offsets) == {(i, j) for i in range(4) for j in range(3)}


def test_radial_distortion_matches_scipy():
    x = images()
    out = T.RadialDistortion(0.4)(x, 2)
    kappa = np.random.default_rng(2).uniform(-0.4, 0.4, len(x))
    rows, cols = np.meshgrid(np.arange(9) - 4.0, np.arange(12) - 5.5, indexing="ij")
    r2 = (rows**2 + cols**2) / (4.0**2 + 5.5**2)
    for n in range(len(x)):
        f = 1 + kappa[n] * r2
        coords = [rows * f + 4.0, cols * f + 5.5]
        for ch in range(3):
            expected = ndimage.map_coordinates(x[n, ch], coords, order=1, mode="grid-constant")
            np.testing.assert_allclose(out[n, ch], expected, rtol=1e-10, atol=1e-10)
    assert np.array_equal(out[:, :, 4:5, 5:7] != 0, np.ones((5, 3, 1, 2), bool))
    np.testing.assert_allclose(T.RadialDistortion(0.0)(x, 0), x, atol=1e-15)


def test_brightness_and_contrast():
    x = images(shape=(50, 3, 4, 4))
    y = T.RandomBrightness(0.2)(x, 0)
    offset = (y - x).reshape(50, -1)
    np.testing.assert_allclose(offset, offset[:, :1] * np.ones_like(offset), atol=1e-15)
    assert np.all(np.abs(offset) <= 0.2) and offset.std() > 0.05
    y = T.RandomContrast(0.5, 1.5)(x, 0)
    mean = x.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y.mean(axis=(2, 3), keepdims=True), mean, atol=1e-14)
    factor = (y - mean) / (x - mean)
    per_image = factor.reshape(50, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), rtol=1e-9)
    assert per_image.min() >= 0.5 and per_image.max() <= 1.5


def test_pca_colour_offsets_lie_along_the_principal_components():
    # Training pixels in a plane of RGB space: the third component has eigenvalue 0, and the
    # offsets must have no component along it.
    g = np.random.default_rng(0)
    basis = np.linalg.qr(g.standard_normal((3, 3)))[0]
    coeffs = g.standard_normal((20 * 6 * 6, 2)) * [3.0, 1.0]
    pixels = coeffs @ basis[:, :2].T + [0.4, 0.5, 0.6]
    train = pixels.reshape(20, 6, 6, 3).transpose(0, 3, 1, 2)
    pca = T.PCAColor.fit(train, std=0.1)
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    np.testing.assert_allclose(pca.eigenvalues, values[::-1].clip(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.abs(pca.eigenvectors[:, :2].T @ vectors[:, ::-1][:, :2]),
                               np.eye(2), atol=1e-10)
    x = images(1, (400, 3, 2, 2))
    y = pca(x, 3)
    delta = (y - x).transpose(0, 2, 3, 1).reshape(400, 4, 3)
    np.testing.assert_allclose(delta, delta[:, :1] * np.ones_like(delta), atol=1e-14)
    delta = delta[:, 0]
    assert np.abs(delta @ basis[:, 2]).max() < 1e-12  # nothing off the training plane
    # coordinates along p_i, divided by λ_i, are the α_i ~ N(0, 0.1²)
    alpha = delta @ pca.eigenvectors[:, :2] / pca.eigenvalues[:2]
    assert np.all(np.abs(alpha.std(axis=0) - 0.1) < 5 * 0.1 / np.sqrt(2 * 400))
    assert np.all(np.abs(alpha.mean(axis=0)) < 5 * 0.1 / np.sqrt(400))


def test_ten_crops_and_tta_average():
    x = images(shape=(2, 3, 8, 10))
    crops = T.ten_crops(x, (5, 6))
    expected = [x[..., :5, :6], x[..., :5, 4:], x[..., 3:, :6], x[..., 3:, 4:], x[..., 1:6, 2:8]]
    expected += [c[..., ::-1] for c in expected]
    assert len(crops) == 10
    for ours, theirs in zip(crops, expected):
        np.testing.assert_array_equal(ours, theirs)
    centre = T.ten_crops(x, (4, 5), flips=False)[4]  # odd margins: the offset rounds down
    np.testing.assert_array_equal(centre, x[..., 2:6, 2:7])
    nhwc = T.ten_crops(x.transpose(0, 2, 3, 1), (5, 6), layout="NHWC", flips=False)
    for ours, theirs in zip(nhwc, expected[:5]):
        np.testing.assert_array_equal(ours, theirs.transpose(0, 2, 3, 1))
    weights = images(3, (3 * 5 * 6, 4))

    def predict(batch):
        scores = batch.reshape(len(batch), -1) @ weights
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    averaged = T.predict_tta(predict, x, (5, 6))
    np.testing.assert_allclose(averaged, np.mean([predict(c) for c in expected], axis=0),
                               rtol=1e-14)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, rtol=1e-14)


def test_as_images_and_augment_module():
    x = images(shape=(4, 1, 3, 5)).reshape(4, 15)
    flat_flip = T.AsImages(T.RandomHorizontalFlip(1.0), (1, 3, 5))
    np.testing.assert_array_equal(flat_flip(x, 0), x.reshape(4, 1, 3, 5)[..., ::-1].reshape(4, 15))
    augment = T.Augment(flat_flip)
    model = nn.Sequential(augment, nn.Linear(15, 2, dtype=np.float64, rng=0))
    layer = model[1]
    y = model.forward(x)
    np.testing.assert_allclose(y, flat_flip(x, 0) @ layer.weight.data.T)
    model.backward(np.ones((4, 2)), input_grad=False)
    np.testing.assert_allclose(layer.weight.grad, np.ones((2, 4)) @ flat_flip(x, 0))
    np.testing.assert_allclose(model.eval().forward(x), x @ layer.weight.data.T)
    with pytest.raises(RuntimeError, match="not differentiable"):
        augment.backward(np.ones((4, 15)))
    with pytest.raises(ValueError, match="rows of 15 values"):
        flat_flip(np.ones((4, 16)), 0)


def test_augment_works_with_the_trainer():
    from ermlab.losses import SoftmaxCrossEntropy
    from ermlab.optim.sgd import SGD
    from ermlab.training import Trainer

    g = np.random.default_rng(0)
    x = g.random((32, 12)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    net = nn.Sequential(
        T.Augment(T.AsImages(T.Compose([T.RandomHorizontalFlip(), T.RandomBrightness(0.05)]),
                             (1, 3, 4)), rng=0),
        nn.Linear(12, 2, rng=0),
    )
    history = Trainer(net, SoftmaxCrossEntropy(), SGD(net.parameters(), lr=0.1)).fit(
        x, y, epochs=2, batch_size=8, rng=0)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


def test_parse_builds_the_named_transforms():
    x = images()
    composed = T.parse("crop:2, flip, scale:1:1.2, translate:0.1, rotate:15, shear:5, "
                       "stretch:0.9:1.1, distort:0.1, brightness:0.1, contrast:0.9:1.1, pca:0.2",
                       data=x)
    kinds = [type(t).__name__ for t in composed.transforms]
    assert kinds == ["RandomCrop", "RandomHorizontalFlip", "RandomScaleCrop", "RandomAffine",
                     "RandomAffine", "RandomAffine", "RandomAffine", "RadialDistortion",
                     "RandomBrightness", "RandomContrast", "PCAColor"]
    assert composed.transforms[0].padding == 2 and composed.transforms[4].degrees == 15
    assert composed.transforms[-1].std == 0.2
    assert composed(x, 0).shape == x.shape
    nhwc = T.parse("flip:1", layout="NHWC")
    np.testing.assert_array_equal(nhwc(x.transpose(0, 2, 3, 1), 0),
                                  x.transpose(0, 2, 3, 1)[:, :, ::-1])


def test_parse_takes_a_list_of_items_as_toml_and_json_write_them():
    x = images()
    listed, joined = T.parse(["crop:2", "flip:1"]), T.parse("crop:2,flip:1")
    assert [type(t) for t in listed.transforms] == [type(t) for t in joined.transforms]
    np.testing.assert_array_equal(listed(x, 3), joined(x, 3))


@pytest.mark.parametrize("spec, message", [
    (5, "augmentation spec is a string such as 'crop:2,flip' or a list"),
    (["flip", 2], "augmentation spec is a string"),
    ({"flip": 1}, "augmentation spec is a string"),
    ("blur", "unknown augmentation 'blur'"),
    ("rotate:ten", "bad augmentation 'rotate:ten'"),
    ("flip:1:2", r"usage: flip\[:P\]"),
    ("pca", "needs the training images"),
    ("contrast:1.2:0.8", "lower ≤ upper"),
    ("crop:2.7", r"bad augmentation 'crop:2\.7': the padding is a whole number of pixels"),
    ("crop:0.9", "the padding is a whole number of pixels"),
    ("crop:+4", "the padding is a whole number of pixels"),
    ("flip,scale:0.5:1", r"bad augmentation 'scale:0\.5:1' in 'flip,scale:0\.5:1'.*the lower "
                         "scale must be ≥ 1"),
])
def test_parse_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        T.parse(spec)


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank 4"):
        T.RandomHorizontalFlip()(np.ones((4, 28 * 28)), 0)
    with pytest.raises(ValueError, match="layout"):
        T.RandomCrop(layout="CHW")
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.RandomCrop(size=20)(images(), 0)
    with pytest.raises(ValueError, match="smaller than the crop"):
        T.RandomScaleCrop(scale=(0.5, 1.0))(images(), 0)
    with pytest.raises(ValueError, match="fitted on 3 channels"):
        T.PCAColor.fit(images())(images(shape=(2, 1, 4, 4)), 0)


def test_brightness_refuses_integer_pixels_it_would_leave_unchanged():
    x = np.full((2, 1, 3, 3), 100, np.uint8)
    with pytest.raises(ValueError, match=r"needs floating-point images; got uint8"):
        T.RandomBrightness(0.2)(x, 0)
