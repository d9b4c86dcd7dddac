"""Raw pixels as features: each image flattened to a vector (N, C·H·W).

The baseline of the comparison (a linear classifier on pixels learns one
template per class), and a step to concatenate with the hand-made features.
"""

from __future__ import annotations

from typing import Any

import numpy

from ermlab.features.base import Extractor
from ermlab.features.images import as_images


class Pixels(Extractor):
    """The ``pixels`` step: x ↦ vec(x)."""

    name = "pixels"

    def transform(self, images: Any) -> numpy.ndarray:
        x = as_images(images, "pixels")
        return x.reshape(len(x), -1)
