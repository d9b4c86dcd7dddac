"""FeaturePipeline: spec parsing, concatenation, training-only fitting, save/load, bad input."""

import json

import numpy
import pytest

from ermlab import features
from ermlab.features import FeaturePipeline, parse

pytest.importorskip("skimage", reason="hsv-hist needs scikit-image: pip install scikit-image")


def test_features_are_the_steps_concatenated_after_the_image_steps(colour_images):
    pipeline = parse("equalize,hog:4:2,hsv-hist:6:hs,pixels").fit(colour_images)
    out = pipeline.transform(colour_images)
    equalized = features.equalize(colour_images)
    expected = numpy.concatenate([
        features.hog(equalized, pixels_per_cell=(4, 4), cells_per_block=(2, 2)),
        features.hsv_histogram(equalized, 6, "hs"), equalized.reshape(5, -1)], axis=1)
    numpy.testing.assert_array_equal(out, expected)
    assert pipeline.n_features_ == out.shape[1] and out.dtype == numpy.float32
    assert pipeline.describe().endswith(f"= {out.shape[1]} features")


def test_chunks_change_nothing(colour_images):
    whole = parse("hog:4:2,quantize:4").fit(colour_images)
    chunked = FeaturePipeline(whole.steps, chunk=2)
    chunked.input_shape_, chunked.n_features_ = whole.input_shape_, whole.n_features_
    numpy.testing.assert_array_equal(chunked.transform(colour_images),
                                     whole.transform(colour_images))


def test_learned_steps_are_fitted_on_the_training_images_only(colour_images):
    train, test = colour_images[:3], colour_images[3:]
    pipeline = parse("bow:6:4,quantize:4", seed=5).fit(train)
    alone = features.BagOfWords(words=6, patch=4, seed=5).fit(train)
    numpy.testing.assert_array_equal(pipeline.steps[0].codebook_, alone.codebook_)
    before = pipeline.steps[1].palette_.copy()
    pipeline.transform(test)
    numpy.testing.assert_array_equal(pipeline.steps[1].palette_, before)


def test_save_load_round_trip_without_pickle(colour_images, tmp_path):
    pipeline = parse("equalize,hog:4:2,hsv-hist:8,bow:6:4,quantize:4", seed=2)
    expected = pipeline.fit_transform(colour_images)
    path = pipeline.save(tmp_path / "features.safetensors")
    loaded = FeaturePipeline.load(path)
    assert loaded.config() == pipeline.config()
    numpy.testing.assert_array_equal(loaded.transform(colour_images), expected)
    with open(path, "rb") as file:  # safetensors: a JSON header, then raw arrays
        header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
    assert json.loads(header["__metadata__"]["ermlab.features"])["steps"][1]["name"] == "hog"


@pytest.mark.parametrize("spec, message", [
    ("", "comma-separated list of steps"),
    ("sift", "unknown step 'sift'"),
    ("hog:4:2:9:1", "hog takes at most 3 argument"),
    ("hsv-hist:ten", "bins is an integer"),
    ("hsv-hist:10:rgb", "channels are some of h, s, v"),
    ("equalize", "computes no features"),
    ("hog,", "an empty step in 'hog,'"),  # was "unknown step ''"
    (",hog", "an empty step"),
    ("hog,,hsv-hist", "an empty step"),
    ("hog:4_0", "cell is an integer; got '4_0'"),  # int() read 40
    ("hog:+4", "cell is an integer; got '\\+4'"),
    ("hog:\uff14", "cell is an integer"),  # a full-width digit four
])
def test_bad_specs_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        parse(spec)


def test_transform_takes_a_list_of_images_as_fit_does(colour_images):
    """fit took a list; transform failed with "'list' object has no attribute 'shape'"."""
    pipeline = parse("hog:4:2,hsv-hist").fit(list(colour_images))
    numpy.testing.assert_array_equal(pipeline.transform(list(colour_images)),
                                     pipeline.transform(colour_images))


def test_bad_images_are_one_clear_error(colour_images):
    pipeline = parse("hog:4:2")
    with pytest.raises(ValueError, match=r"got rows of shape \(64,\) \(table data, not images"):
        pipeline.fit(numpy.zeros((10, 64), dtype=numpy.float32))
    with pytest.raises(ValueError, match=r"rank 5"):
        pipeline.fit(numpy.zeros((2, 1, 3, 8, 8), dtype=numpy.float32))
    with pytest.raises(ValueError, match="channels last"):
        pipeline.fit(numpy.zeros((2, 16, 16, 3), dtype=numpy.float32))
    broken = colour_images.copy()
    broken[3, 1, 2, 2] = numpy.nan
    with pytest.raises(ValueError, match="1 pixels are NaN or infinite, in 1 of 5 images "
                                         r"\(the first: image 3\)"):
        pipeline.fit(broken)
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 1\]; got values in "
                                         r"\[0, 255\] — divide by 255"):
        pipeline.fit(colour_images * 255)
    fitted = parse("hog:4:2").fit(colour_images)
    with pytest.raises(ValueError, match="fitted on inputs of shape"):
        fitted.transform(colour_images[:, :, :16])


def test_uint8_images_are_scaled(colour_images):
    as_bytes = numpy.round(colour_images * 255).astype(numpy.uint8)
    pipeline = parse("hsv-hist:10").fit(as_bytes)
    numpy.testing.assert_allclose(pipeline.transform(as_bytes),
                                  features.hsv_histogram(as_bytes.astype(numpy.float32) / 255),
                                  atol=1e-7)
