"""Preprocessing fitted on the training split only, checked against statistics written out here."""

import json
import subprocess
import sys

import numpy
import pytest

from ermlab.data import preprocessing
from ermlab.data.preprocessing import ChannelMean, Flatten, MeanImage, Pipeline, Standardize
from ermlab.data.rows import Rows


@pytest.fixture
def images():
    rng = numpy.random.default_rng(3)
    scale = numpy.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1)
    shift = numpy.array([0.1, -3.0, 7.0]).reshape(1, 3, 1, 1)
    train = (rng.standard_normal((50, 3, 4, 5)) * scale + shift).astype(numpy.float32)
    test = (rng.standard_normal((20, 3, 4, 5)) * scale + shift + 1.0).astype(numpy.float32)
    return train, test


def test_mean_image_uses_training_statistics_only(images):
    train, test = images
    transform = MeanImage().fit(train)
    mean = train.astype(numpy.float64).sum(axis=0) / len(train)
    numpy.testing.assert_allclose(transform.transform(test), test - mean, atol=1e-5)
    numpy.testing.assert_allclose(transform.transform(train).mean(axis=0), 0.0, atol=1e-5)
    # the test set is shifted by the training mean, not its own: its mean stays ≈ +1
    assert transform.transform(test).mean() == pytest.approx(1.0, abs=0.2)
    assert transform.transform(test).dtype == numpy.float32


def test_channel_mean_is_one_mean_per_channel(images):
    train, test = images
    transform = ChannelMean().fit(train)
    expected = numpy.array([train[:, c].astype(numpy.float64).mean() for c in range(3)])
    numpy.testing.assert_allclose(transform.mean_, expected, rtol=1e-6)
    numpy.testing.assert_allclose(transform.transform(test),
                                  test - expected.reshape(1, 3, 1, 1), atol=1e-5)


@pytest.mark.parametrize("per", ["feature", "channel", "global"])
def test_standardize_gives_zero_mean_unit_variance_on_train(images, per):
    train, test = images
    out = Standardize(per).fit(train).transform(train).astype(numpy.float64)
    axes = {"feature": 0, "channel": (0, 2, 3), "global": None}[per]
    numpy.testing.assert_allclose(out.mean(axis=axes), 0.0, atol=1e-5)
    numpy.testing.assert_allclose(out.std(axis=axes), 1.0, rtol=1e-5)


def test_standardize_per_feature_matches_scikit_learn(images):
    from sklearn.preprocessing import StandardScaler

    train, test = images
    flat = train.reshape(len(train), -1).astype(numpy.float64)
    oracle = StandardScaler().fit(flat).transform(test.reshape(len(test), -1))
    ours = Standardize().fit(train).transform(test).reshape(len(test), -1)
    numpy.testing.assert_allclose(ours, oracle, rtol=1e-4, atol=1e-5)


def test_zero_variance_features_are_centred_not_divided_by_zero():
    train = numpy.zeros((10, 4), dtype=numpy.float32)
    train[:, 1] = numpy.arange(10)
    train[:, 2] = 5.0                                   # constant feature
    out = Standardize().fit(train).transform(train + 1)
    assert numpy.isfinite(out).all()
    numpy.testing.assert_allclose(out[:, 2], 1.0)       # (6 − 5) / 1
    numpy.testing.assert_allclose(out[:, 0], 1.0)       # (1 − 0) / 1


def test_flatten_and_pipeline_fit_each_step_on_the_previous_output(images):
    train, test = images
    pipeline = Pipeline([ChannelMean(), Flatten(), Standardize()]).fit(train)
    centred = train - train.mean(axis=(0, 2, 3), keepdims=True, dtype=numpy.float64)
    flat = centred.reshape(len(train), -1)
    assert pipeline.transform(test).shape == (20, 60)
    numpy.testing.assert_allclose(pipeline.steps[2].scale_, flat.std(axis=0), rtol=1e-5)


def test_state_round_trip_through_json_and_arrays(images):
    train, test = images
    fitted = Pipeline([MeanImage(), Standardize("channel"), Flatten()]).fit(train)
    config = json.loads(json.dumps(fitted.config()))
    state = {key: numpy.array(value) for key, value in fitted.state_dict().items()}
    assert all(isinstance(v, numpy.ndarray) for v in state.values())
    rebuilt = preprocessing.from_config(config).load_state_dict(state)
    numpy.testing.assert_array_equal(rebuilt.transform(test), fitted.transform(test))
    assert repr(rebuilt.steps[1]) == "Standardize(per='channel')"


def test_clear_errors():
    with pytest.raises(ValueError, match="not fitted; call fit"):
        MeanImage().transform(numpy.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"fitted on inputs of shape \(N, 3\); got \(2, 4\)"):
        MeanImage().fit(numpy.zeros((2, 3))).transform(numpy.zeros((2, 4)))
    with pytest.raises(ValueError, match="per must be"):
        Standardize("pixel")
    with pytest.raises(ValueError, match="unknown transform 'whiten'"):
        preprocessing.from_config({"name": "whiten"})
    with pytest.raises(ValueError, match="lacks mean"):
        MeanImage().load_state_dict({"input_shape": numpy.array([3])})


# -- statistics block by block (Moments) against the two-pass float64 formulas ------------


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 rows or fewer, so every statistic below merges many blocks."""
    monkeypatch.setattr("ermlab.data.rows.CHUNK_BYTES", 3 * 3 * 4 * 5 * 4 - 1)


def far_from_zero(n=301):
    """Large offset, small spread: a one-pass Σx² − n·μ² formula loses every digit here."""
    rng = numpy.random.default_rng(11)
    shift = numpy.array([1e3, -2e2, 5.0]).reshape(1, 3, 1, 1)
    return (rng.standard_normal((n, 3, 4, 5)) * 0.01 + shift).astype(numpy.float32)


def test_moments_equal_the_two_pass_float64_formulas(small_blocks):
    x = far_from_zero()
    moments = preprocessing.Moments.of(x, variance=True)
    assert moments.count == len(x) and moments.dtype == numpy.float32
    numpy.testing.assert_array_equal(moments.minimum, x.min(axis=0))
    numpy.testing.assert_array_equal(moments.maximum, x.max(axis=0))
    numpy.testing.assert_allclose(moments.mean, x.mean(axis=0, dtype=numpy.float64), rtol=1e-14)
    numpy.testing.assert_allclose(moments.variance, x.var(axis=0, dtype=numpy.float64),
                                  rtol=1e-9)
    for axes, data_axes in (((1, 2), (0, 2, 3)), ((0, 1, 2), (0, 1, 2, 3))):
        pooled = moments.pooled(axes)
        numpy.testing.assert_allclose(pooled.mean, x.mean(axis=data_axes, dtype=numpy.float64),
                                      rtol=1e-14)
        numpy.testing.assert_allclose(pooled.variance,
                                      x.var(axis=data_axes, dtype=numpy.float64), rtol=1e-9)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # NaN data: no warning, see ``finite``
@pytest.mark.parametrize("threads", [2, 3])
def test_moments_in_lanes_are_the_one_thread_result_bit_for_bit(threads, small_blocks,
                                                                monkeypatch):
    """Blocks are summarized in lanes and merged in their order: the same bits at any number
    of threads, over several rounds (a short last one), for an array and for ``Rows``."""
    monkeypatch.setattr(preprocessing, "ROUND_BLOCKS", 3)
    lanes = []
    run_ranges = preprocessing.run_ranges
    monkeypatch.setattr(preprocessing, "run_ranges",
                        lambda ranges, *a, **k: lanes.append(len(ranges)) or run_ranges(
                            ranges, *a, **k))
    x = far_from_zero()
    x[5, 1, 2, 3] = numpy.nan
    x[7, 0, 1, 1], x[31, 0, 1, 1] = numpy.inf, -numpy.inf  # in other blocks: ∞ − ∞ merged
    for data in (x, Rows(x, numpy.arange(1, len(x), 2))):
        for mean, variance in ((False, False), (True, False), (True, True)):
            one = preprocessing.Moments.of(data, mean, variance, threads=1)
            lanes.clear()
            many = preprocessing.Moments.of(data, mean, variance, threads=threads)
            assert max(lanes) == threads and len(lanes) > 2
            assert many.count == one.count == len(data)
            for name in ("minimum", "maximum", "mean", "m2"):
                if getattr(one, name) is None:
                    assert getattr(many, name) is None
                else:
                    numpy.testing.assert_array_equal(getattr(many, name), getattr(one, name))


def test_moments_in_lanes_leave_numba_unloaded():
    """A fresh process's statistics run in lanes that wait for each other asleep: Numba's
    spin loop, whose import costs a third of a second, is not loaded for them."""
    code = ("import sys, numpy\n"
            "from ermlab import threads\n"
            "from ermlab.data import preprocessing, rows\n"
            "rows.CHUNK_BYTES = 4096\n"
            "x = numpy.random.default_rng(0).random((2000, 64), dtype=numpy.float32)\n"
            "m = preprocessing.Moments.of(x, variance=True, threads=2)\n"
            "assert len(threads._pool.workers) == 1, 'no lanes ran'\n"
            "assert numpy.allclose(m.variance, x.var(axis=0, dtype=numpy.float64))\n"
            "print('numba' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]


@pytest.mark.parametrize("per", ["feature", "channel", "global"])
def test_standardize_fitted_in_blocks_equals_the_whole_array_formulas(per, small_blocks):
    x = far_from_zero()
    x[:, 0, 0, 0] = 7.0  # a constant feature: its σ becomes 1
    axes = {"feature": (0,), "channel": (0, 2, 3), "global": (0, 1, 2, 3)}[per]
    fitted = Standardize(per=per).fit(x)
    mean = x.mean(axis=axes, dtype=numpy.float64)
    variance = x.var(axis=axes, dtype=numpy.float64)
    n, eps = x.size // mean.size, numpy.finfo(numpy.float64).eps
    scale = numpy.where(variance <= n * eps * variance + (n * mean * eps) ** 2, 1.0,
                        numpy.sqrt(variance))
    numpy.testing.assert_allclose(fitted.mean_, mean, rtol=1e-14)
    numpy.testing.assert_allclose(fitted.scale_, scale, rtol=1e-9)
    assert fitted.scale_.dtype == numpy.float64


def test_mean_transforms_fitted_in_blocks(small_blocks):
    x = far_from_zero()
    numpy.testing.assert_allclose(MeanImage().fit(x).mean_, x.mean(axis=0, dtype=numpy.float64),
                                  rtol=1e-14)
    numpy.testing.assert_allclose(ChannelMean().fit(x).mean_,
                                  x.mean(axis=(0, 2, 3), dtype=numpy.float64), rtol=1e-14)


class CountingRows:
    """An array that counts the rows read from it."""

    def __init__(self, x):
        self.x, self.shape, self.dtype, self.read = x, x.shape, x.dtype, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        rows = self.x[key]
        self.read += len(rows)
        return rows


def test_a_pipeline_fits_in_one_pass_without_transforming_the_data(small_blocks):
    x = far_from_zero()
    source = CountingRows(x)
    pipeline = Pipeline([Standardize(), Flatten()]).fit(source)
    # one pass for the statistics (and one row for the shape Flatten sees): no transformed copy
    assert len(x) <= source.read <= len(x) + 1
    numpy.testing.assert_allclose(pipeline.steps[0].scale_,
                                  numpy.sqrt(x.var(axis=0, dtype=numpy.float64)), rtol=1e-9)
    moments = preprocessing.Moments.of(x, variance=True)
    source.read = 0
    Pipeline([Flatten(), Standardize(per="feature")]).fit(source, moments)
    assert source.read <= 1  # the statistics given are used (one row may be read for shapes)


def test_a_step_after_a_value_changing_step_is_fitted_on_its_output(small_blocks):
    x = far_from_zero()
    pipeline = Pipeline([MeanImage(), Standardize(per="global")]).fit(
        x, preprocessing.Moments.of(x, variance=True))
    centred = x - x.mean(axis=0, dtype=numpy.float64).astype(numpy.float32)
    numpy.testing.assert_allclose(pipeline.steps[1].mean_, centred.mean(dtype=numpy.float64),
                                  atol=1e-12)
    numpy.testing.assert_allclose(pipeline.steps[1].scale_,
                                  numpy.sqrt(centred.var(dtype=numpy.float64)), rtol=1e-9)
    assert pipeline.per_batch and pipeline.needs == "variance"
    assert not Pipeline([MeanImage(), preprocessing.Transform()]).per_batch


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_standardize_calls_constant_what_scikit_learn_does(dtype):
    """scikit-learn's relative rule, σ² ≤ n·ε·σ² + (n·μ·ε)²: a float32 feature of σ = 10⁻⁶ is
    scaled (σ < 10·ε of the dtype left it unscaled), a large-mean feature whose spread is
    rounding is not. The oracle is ``StandardScaler`` at scales from 10⁻⁸ to 10³."""
    from sklearn.preprocessing import StandardScaler

    rng = numpy.random.default_rng(5)
    sigma = numpy.array([1e-8, 1e-6, 1e-4, 1.0, 1e3, 0.0, 0.0, 1e-12, 1e-6])
    mean = numpy.array([0.0, 0.0, 5.0, -3.0, 1e4, 7.25, 1e4 + 0.1, 1e4, 1e3])
    x = (rng.standard_normal((1000, len(sigma))) * sigma + mean).astype(dtype)
    ours, theirs = Standardize().fit(x), StandardScaler().fit(x)
    constant = theirs.scale_ == 1.0
    numpy.testing.assert_array_equal(ours.scale_ == 1.0, constant)
    assert constant[5:8].all() and not constant[:5].any()
    numpy.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-6)
    numpy.testing.assert_allclose(ours.transform(x), theirs.transform(x), rtol=1e-4, atol=1e-4)
