"""Preprocessing fitted on the training split only, checked against statistics written out here."""

import json

import numpy
import pytest

from ermlab.data import preprocessing
from ermlab.data.preprocessing import ChannelMean, Flatten, MeanImage, Pipeline, Standardize


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
