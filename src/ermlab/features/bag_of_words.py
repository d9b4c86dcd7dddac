"""Bag of visual words: a codebook of patches learned from the data, then word counts.

1. Draw ``patches`` random patches of ``patch`` × ``patch`` pixels from the
   training images (seeded) and normalize each one's brightness and contrast,

       p ← (p − mean p) / √(var p + ε),   ε = 0.01 (pixels in [0, 1]);

2. cluster them into ``words`` visual words with k-means (scikit-learn's
   ``MiniBatchKMeans``, seeded): the codebook, fitted on the training split only;
3. an image's feature is the histogram of its words: every patch of a dense
   grid (stride ``stride``) is normalized alike and counted for its nearest
   word, h[k] = #{patches p : argmin_j ‖p − c_j‖² = k}, so the counts of an
   image sum to its number of patches.

References: J. Sivic and A. Zisserman, "Video Google", ICCV 2003; G. Csurka et
al., "Visual categorization with bags of keypoints", 2004; A. Coates, H. Lee
and A. Y. Ng, "An analysis of single-layer networks in unsupervised feature
learning", AISTATS 2011 (patch normalization, k-means codebooks).
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import Extractor
from ermlab.features.images import as_images
from ermlab.features.quantize import fit_kmeans, nearest

CONTRAST_EPS = 0.01


class BagOfWords(Extractor):
    """The ``bow`` step (spec ``bow[:WORDS[:PATCH[:STRIDE]]]``, e.g. ``bow:64:6``).

    Args:
        words: codebook size K ≥ 2.
        patch: patch side in pixels.
        stride: step of the dense grid of an image's patches (default patch // 2).
        patches: random training patches the codebook is fitted on (≥ words).
        seed: of the draw and of k-means: the same seed gives the same codebook.
    """

    name = "bow"
    _state = ("codebook",)

    def __init__(self, words: int = 64, patch: int = 6, stride: int | None = None,
                 patches: int = 20000, seed: int = 0) -> None:
        stride = max(1, patch // 2) if stride is None else stride
        for what, value, low in (("words", words, 2), ("patch", patch, 1),
                                 ("stride", stride, 1), ("patches", patches, 1)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"bag of words: {what} must be an integer ≥ {low}; got "
                                 f"{value!r}")
        self.words, self.patch, self.stride = int(words), int(patch), int(stride)
        self.patches, self.seed = int(patches), int(seed)
        if self.words > self.patches:
            raise ValueError(self._too_few(self.patches, "asked for"))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "words": self.words, "patch": self.patch,
                "stride": self.stride, "patches": self.patches, "seed": self.seed}

    def fit(self, images: Any) -> BagOfWords:
        x = as_images(images, "bag of words")
        self._check_size(x)
        sample = normalize(self._random_patches(x, numpy.random.default_rng(self.seed)))
        distinct = len(numpy.unique(sample, axis=0))
        if distinct < self.words:
            raise ValueError(self._too_few(distinct, "found only", " distinct"))
        self.codebook_ = fit_kmeans(sample, self.words, self.seed).astype(x.dtype)
        return self

    def transform(self, images: Any) -> numpy.ndarray:
        """(N, words): each image's count of patches per word (the counts sum to the number
        of patches of the dense grid, ``patches_per_image``)."""
        self.check_fitted()
        x = as_images(images, "bag of words")
        self._check_size(x)
        if x.shape[1] * self.patch ** 2 != self.codebook_.shape[1]:
            raise ValueError(f"bag of words: the codebook holds patches of "
                             f"{self.codebook_.shape[1]} values; images of {x.shape[1]} "
                             f"channels give {x.shape[1] * self.patch ** 2}")
        patches = dense_patches(x, self.patch, self.stride)
        codes = nearest(normalize(patches.reshape(-1, patches.shape[-1])), self.codebook_)
        codes = codes.reshape(len(x), -1)
        rows = numpy.arange(len(x))[:, None] * self.words
        counts = numpy.bincount((rows + codes).ravel(), minlength=len(x) * self.words)
        return counts.reshape(len(x), self.words).astype(x.dtype)

    def patches_per_image(self, height: int, width: int) -> int:
        return ((height - self.patch) // self.stride + 1) * ((width - self.patch) // self.stride
                                                              + 1)

    def _random_patches(self, x: numpy.ndarray, rng: numpy.random.Generator) -> numpy.ndarray:
        n, c, h, w = x.shape
        which = rng.integers(n, size=self.patches)
        top = rng.integers(h - self.patch + 1, size=self.patches)
        left = rng.integers(w - self.patch + 1, size=self.patches)
        offsets = numpy.arange(self.patch)
        rows = (top[:, None] + offsets)[:, None, :, None]
        cols = (left[:, None] + offsets)[:, None, None, :]
        patches = x[which[:, None, None, None], numpy.arange(c)[None, :, None, None], rows, cols]
        return patches.reshape(self.patches, -1)

    def _check_size(self, x: numpy.ndarray) -> None:
        if x.shape[2] < self.patch or x.shape[3] < self.patch:
            raise ValueError(f"bag of words: images of {x.shape[2]}×{x.shape[3]} pixels are "
                             f"smaller than the patches ({self.patch}×{self.patch}); use a "
                             "smaller patch")

    def _too_few(self, count: int, verb: str, kind: str = "") -> str:
        return (f"bag of words: a codebook of {self.words} words needs at least {self.words}"
                f"{kind} training patches; {verb} {count}: ask for fewer words or more patches")


def dense_patches(x: numpy.ndarray, patch: int, stride: int) -> numpy.ndarray:
    """(N, C, H, W) → (N, P, C·patch²): the patches on a grid of step ``stride``, row by row."""
    windows = numpy.lib.stride_tricks.sliding_window_view(x, (patch, patch), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (N, C, rows, cols, patch, patch)
    n, c, rows, cols = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, rows * cols, c * patch * patch)


def normalize(patches: numpy.ndarray) -> numpy.ndarray:
    """Each row's brightness and contrast: (p − mean p) / √(var p + ε)."""
    centred = patches - patches.mean(axis=1, keepdims=True)
    return centred / numpy.sqrt((centred * centred).mean(axis=1, keepdims=True) + CONTRAST_EPS)
