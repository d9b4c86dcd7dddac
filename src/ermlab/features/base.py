"""The face every feature step shares: ``fit`` on training images, then ``transform``.

Two kinds of step make up a ``FeaturePipeline``:

* an ``Extractor`` maps images (N, C, H, W) to feature vectors (N, D): HoG,
  colour histograms, bag of visual words, raw pixels;
* an ``ImageStep`` maps images to images of the same shape (histogram
  equalization); the extractors after it see its output.

As in ``ermlab.data.preprocessing`` (scikit-learn's face): ``__init__`` holds
hyperparameters, ``fit`` learns from the training split only and returns
``self``, fitted state ends in ``_``. ``config()`` is JSON, ``state_dict()`` a
dict of NumPy arrays (safetensors), so a fitted step is saved without pickle.
"""

from __future__ import annotations

from typing import Any

import numpy


class FeatureStep:
    """Base class of feature steps. ``name`` is the step's word in a spec (``"hog"``)."""

    name = "step"
    _state: tuple[str, ...] = ()

    def fit(self, images: numpy.ndarray) -> FeatureStep:
        """Learn what the step needs from training images (N, C, H, W); most steps need none."""
        return self

    def transform(self, images: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able name and hyperparameters (``from_config`` rebuilds the step)."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, numpy.ndarray]:
        return {key: numpy.asarray(getattr(self, key + "_")) for key in self._state}

    def load_state_dict(self, state: dict[str, Any]) -> FeatureStep:
        missing = [key for key in self._state if key not in state]
        if missing:
            raise ValueError(f"{type(self).__name__} state lacks {', '.join(missing)}; was the "
                             "step fitted before it was saved?")
        for key in self._state:
            setattr(self, key + "_", numpy.asarray(state[key]))
        return self

    def check_fitted(self) -> None:
        if any(not hasattr(self, key + "_") for key in self._state):
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(training images) "
                             "first")

    def __repr__(self) -> str:
        options = {k: v for k, v in self.config().items() if k != "name"}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


class Extractor(FeatureStep):
    """Images (N, C, H, W) → features (N, D)."""

    kind = "extractor"


class ImageStep(FeatureStep):
    """Images (N, C, H, W) → images of the same shape."""

    kind = "image"
