"""The rest of the training stack on CuPy stand-in arrays equals the NumPy run: DP-SGD
(with empty Poisson batches), per-example gradients, attacks and adversarial training,
penalties and constraints, sample weights, the in-process distributed strategies,
ensembles, data augmentation and the gradient checks."""

import numpy
import pytest
from fake_cupy import DeviceArray, to_device

from ermlab import backend, gradcheck, losses, nn, optim, regularizers
from ermlab.data import transforms
from ermlab.distributed import EASGD, Downpour, SyncDataParallel
from ermlab.ensemble import Ensemble
from ermlab.privacy import DPSGD, per_example_gradients
from ermlab.robustness import FGSM, PGD
from ermlab.training import Trainer

RNG = numpy.random.default_rng(0)
X = RNG.standard_normal((24, 4)).astype(numpy.float32)
Y = RNG.integers(0, 3, 24)


def _host(x):
    return x.get() if isinstance(x, DeviceArray) else numpy.asarray(x)


def _both(xp, run):
    """``run(to_device_or_identity, device)`` on NumPy and on the device: results as NumPy."""
    host = run(lambda a: a, lambda m: m)
    device = run(xp.asarray, lambda m: to_device(m, xp))
    return host, device


def _mlp():
    return nn.Sequential(nn.Linear(4, 6, rng=0), nn.Tanh(), nn.Linear(6, 3, rng=1))


def _assert_same(host, device, device_type=DeviceArray):
    for h, d in zip(host, device, strict=True):
        assert isinstance(d, device_type), type(d).__name__
        numpy.testing.assert_array_equal(_host(d), h)


def _fit(to, move, epochs=1, batch_size=6, sample_weight=None, **options):
    model = move(_mlp())
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                      optim.SGD(model.parameters(), lr=0.1, momentum=0.5), rng=3, **options)
    trainer.fit(to(X), to(Y), epochs=epochs, batch_size=batch_size,
                sample_weight=None if sample_weight is None else to(sample_weight))
    return trainer


def test_dp_sgd_with_empty_batches_on_device(xp, ufunc_path):
    """Poisson sampling at q = 1/24 draws empty batches: their (absent) scores must live
    on the labels' device (bug: a NumPy (0, 1) array met device labels in the hit count)."""
    sizes = []

    def run(to, move):
        privacy = DPSGD(1.0, noise_multiplier=4.0, delta=1e-2)
        batches = privacy.batches
        privacy.batches = lambda n, rng: [sizes.append(len(b)) or b for b in batches(n, rng)]
        trainer = _fit(to, move, batch_size=1, privacy=privacy)
        return [p.data for p in trainer.model.parameters()], trainer.history["loss"]

    (host, host_loss), (device, device_loss) = _both(xp, run)
    assert 0 in sizes
    _assert_same(host, device)
    assert device_loss == host_loss


def test_per_example_gradients_on_device(xp):
    def run(to, move):
        grads = per_example_gradients(move(_mlp()), losses.SoftmaxCrossEntropy(), to(X), to(Y))
        return [grads[k] for k in sorted(grads)]

    host, device = _both(xp, run)
    _assert_same(host, device)


@pytest.mark.parametrize("attack", [FGSM(0.1, bounds=(-4, 4)),
                                    PGD(0.1, bounds=(-4, 4), steps=2),
                                    PGD(0.5, bounds=(-4, 4), norm="l2", steps=2)],
                         ids=["fgsm", "pgd_linf", "pgd_l2"])
def test_attacks_on_device(xp, attack):
    host, device = _both(xp, lambda to, move: [attack(move(_mlp()), to(X), to(Y), rng=0)])
    _assert_same(host, device)


@pytest.mark.parametrize("options", [
    {"adversary": FGSM(0.1, bounds=(-4, 4))},
    {"regularizer": regularizers.L1(1e-2)},
    {"regularizer": regularizers.ElasticNet(1e-2, 0.5) + regularizers.MaxNorm(0.5)},
    {"sample_weight": numpy.linspace(0, 2, 24).astype(numpy.float32), "top_k": (2,)},
], ids=["adversarial", "l1", "elastic_net_max_norm", "sample_weight_top_k"])
def test_fit_options_on_device(xp, ufunc_path, options):
    options = dict(options)
    weight = options.pop("sample_weight", None)

    def run(to, move):
        trainer = _fit(to, move, sample_weight=weight, **options)
        scores = trainer.evaluate(to(X), to(Y), sample_weight=None if weight is None
                                  else to(weight))
        return [p.data for p in trainer.model.parameters()], trainer.history, scores

    (host, host_history, host_scores), (device, history, scores) = _both(xp, run)
    _assert_same(host, device)
    assert {k: v for k, v in history.items() if k != "time"} == {
        k: v for k, v in host_history.items() if k != "time"}
    assert scores == host_scores


@pytest.mark.parametrize("strategy", [lambda: SyncDataParallel(2), lambda: Downpour(2),
                                      lambda: EASGD(2)], ids=["sync", "downpour", "easgd"])
def test_in_process_strategies_on_device(xp, ufunc_path, strategy):
    """(bug: the parameter server's read-only views set ``flags.writeable``, which CuPy
    arrays do not have.)"""
    def run(to, move):
        trainer = _fit(to, move, strategy=strategy())
        return [p.data for p in trainer.model.parameters()], trainer.history["loss"]

    (host, host_loss), (device, loss) = _both(xp, run)
    _assert_same(host, device)
    assert loss == host_loss


def test_ensemble_predicts_from_device_models(xp):
    def run(to, move):
        models = [move(_mlp()), move(nn.Sequential(nn.Linear(4, 3, rng=5)))]
        return [Ensemble(models, weights=[0.3, 0.7]).predict_proba(to(X))]

    host, device = _both(xp, run)
    _assert_same(host, device, numpy.ndarray)


AUGMENT = {
    "crop": transforms.RandomCrop(6, padding=1),
    "flip": transforms.RandomHorizontalFlip(),
    "scale_crop": transforms.RandomScaleCrop(6),
    "affine": transforms.RandomAffine(degrees=10),
    "radial": transforms.RadialDistortion(0.2),
    "brightness_contrast": transforms.Compose([transforms.RandomBrightness(0.1),
                                               transforms.RandomContrast()]),
    "pca_color": transforms.PCAColor(numpy.array([0.3, 0.2, 0.1]), numpy.eye(3)),
}


@pytest.mark.parametrize("name", list(AUGMENT))
def test_augmentation_on_device(xp, name):
    images = numpy.random.default_rng(1).random((3, 3, 8, 8)).astype(numpy.float32)
    host, device = _both(xp, lambda to, move: [AUGMENT[name](to(images), 5)])
    _assert_same(host, device)


def test_gradient_checks_on_device(xp):
    """check_module, check_loss and check_regularizer take device models and arrays
    (bug: check_module handed its NumPy probe to the device model's backward)."""
    x = numpy.random.default_rng(2).standard_normal((3, 4))

    def run(to, move):
        with backend.default_dtype(numpy.float64):
            model = move(nn.Sequential(nn.Linear(4, 3, rng=0), nn.Tanh(), nn.Linear(3, 2, rng=1)))
        labels = to(numpy.array([0, 3, 1]))
        checks = [gradcheck.check_module(model, to(x)),
                  gradcheck.check_loss(losses.MulticlassHinge(), to(x), labels),
                  gradcheck.check_regularizer(regularizers.ElasticNet(0.1, 0.5),
                                              model.parameters())]
        return [(c.max_rel_error, c.where) for c in checks]

    host, device = _both(xp, run)
    assert device == host
    assert all(error < 1e-6 for error, _ in device)


def test_preprocessing_statistics_on_device(xp, monkeypatch):
    """``Moments`` (min, max, mean, the two-pass m2 block by block) and a ``Standardize``
    fitted on device arrays equal the NumPy run's, bit for bit."""
    from ermlab.data.preprocessing import Moments, Standardize

    monkeypatch.setattr("ermlab.data.rows.CHUNK_BYTES", 4 * 4 * 5)  # blocks of 5 rows
    x = RNG.standard_normal((23, 4)).astype(numpy.float32) * 3 + 1

    def run(put, _):
        moments = Moments.of(put(x), variance=True, threads=2)
        fitted = Standardize().fit(put(x))
        assert type(moments.m2) is type(put(x)) and type(fitted.mean_) is type(put(x))
        return [_host(a) for a in (moments.minimum, moments.maximum, moments.mean,
                                   moments.m2, fitted.mean_, fitted.scale_)]

    for host, device in zip(*_both(xp, run), strict=True):
        numpy.testing.assert_array_equal(device, host)


@pytest.mark.parametrize("make", [
    lambda p: p.MeanImage(), lambda p: p.ChannelMean(),
    lambda p: p.Standardize(per="feature"), lambda p: p.Standardize(per="channel"),
    lambda p: p.Standardize(per="global"),
    lambda p: p.Pipeline([p.Standardize(per="channel"), p.Flatten()]),
    lambda p: p.Pipeline([p.Flatten(), p.MeanImage()])],
    ids=["mean_image", "channel_mean", "per_feature", "per_channel", "global", "then_flatten",
         "flatten_then"])
def test_preprocessing_transforms_on_device(xp, monkeypatch, make):
    """Each transform fitted (block by block) and applied on device images, its state saved
    and loaded again, equals the NumPy run bit for bit; the outputs stay on the device."""
    from ermlab.data import preprocessing

    monkeypatch.setattr("ermlab.data.rows.CHUNK_BYTES", 2 * 3 * 4 * 4 * 4)  # blocks of 2
    x = RNG.standard_normal((9, 3, 4, 4)).astype(numpy.float32) * 2 + 0.5

    def run(put, _):
        fitted = make(preprocessing).fit(put(x))
        out = fitted.transform(put(x[:5]))
        assert type(out) is type(put(x))
        state = fitted.state_dict()
        again = make(preprocessing).load_state_dict(state).transform(put(x[:5]))
        return [_host(out), _host(again), *(numpy.asarray(v) for v in state.values())]

    for host, device in zip(*_both(xp, run), strict=True):
        numpy.testing.assert_array_equal(device, host)
