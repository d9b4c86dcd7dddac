"""Bag of visual words: counts, reproducibility, training-only codebook, errors."""

import numpy
import pytest

from ermlab.features import BagOfWords
from ermlab.features.bag_of_words import dense_patches, normalize


def test_word_counts_sum_to_the_number_of_patches(grey_images, colour_images):
    for images in (grey_images, colour_images):
        bow = BagOfWords(words=8, patch=5, stride=3, patches=500, seed=0).fit(images)
        counts = bow.transform(images)
        per_image = bow.patches_per_image(*images.shape[2:])
        assert counts.shape == (len(images), 8)
        numpy.testing.assert_array_equal(counts.sum(axis=1), per_image)
        assert numpy.all(counts == numpy.round(counts))


def test_codebook_is_reproducible_with_the_seed_and_changes_with_it(colour_images):
    first = BagOfWords(words=8, patch=4, patches=400, seed=1).fit(colour_images).codebook_
    again = BagOfWords(words=8, patch=4, patches=400, seed=1).fit(colour_images).codebook_
    other = BagOfWords(words=8, patch=4, patches=400, seed=2).fit(colour_images).codebook_
    numpy.testing.assert_array_equal(first, again)
    assert not numpy.allclose(first, other)


def test_counts_are_those_of_the_nearest_word(colour_images):
    bow = BagOfWords(words=6, patch=4, stride=4, patches=300, seed=0).fit(colour_images[:3])
    patches = normalize(dense_patches(colour_images[3:], 4, 4).reshape(-1, 48))
    brute = ((patches[:, None, :] - bow.codebook_[None]) ** 2).sum(axis=2).argmin(axis=1)
    expected = numpy.stack([numpy.bincount(row, minlength=6) for row in brute.reshape(2, -1)])
    numpy.testing.assert_array_equal(bow.transform(colour_images[3:]), expected)


def test_dense_patches_are_the_image_windows(grey_images):
    patches = dense_patches(grey_images, 5, 3)
    assert patches.shape == (6, 7 * 11, 25)
    numpy.testing.assert_array_equal(patches[2, 11 + 2], grey_images[2, 0, 3:8, 6:11].ravel())


def test_codebook_larger_than_the_patches_is_refused(grey_images):
    with pytest.raises(ValueError, match="at least 50 training patches; asked for 20"):
        BagOfWords(words=50, patches=20)
    with pytest.raises(ValueError, match="distinct training patches"):
        BagOfWords(words=4, patch=4, patches=100).fit(grey_images[3:4])  # a flat image
    with pytest.raises(ValueError, match="smaller than the patches"):
        BagOfWords(words=4, patch=30, patches=100).fit(grey_images)
