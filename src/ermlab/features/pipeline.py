"""A feature pipeline: image steps, then extractors whose features are concatenated.

    pipeline = features.parse("equalize,hog:4:2,hsv-hist:10")
    f_train = pipeline.fit_transform(x_train)        # (N, D), fitted on the training split
    f_test = pipeline.transform(x_test)
    pipeline.save("features.safetensors")            # safetensors + JSON, no pickle
    pipeline = features.FeaturePipeline.load("features.safetensors")

Steps run in order on the current images: an image step (``equalize``)
replaces them for the steps after it; an extractor (``hog``, ``hsv-hist``,
``quantize``, ``bow``, ``pixels``) appends its features. Learned steps (the
colour palette, the codebook) are fitted on the training images only. Images
are extracted in chunks of ``chunk`` images, with a progress bar on a terminal.

A ``FeaturePipeline`` is an ``ermlab.data.preprocessing.Transform``: ``ermlab
train --features SPEC`` puts it first in the run's preprocessing, so it is saved
in ``preprocessing.safetensors`` and ``evaluate``/``predict`` apply it.

Spec: comma-separated steps, each ``name[:arg[:arg...]]`` (``STEP_ARGS``):
``hog[:CELL[:BLOCK[:ORIENTATIONS]]]``, ``hsv-hist[:BINS[:CHANNELS]]``,
``quantize[:COLOURS]``, ``bow[:WORDS[:PATCH[:STRIDE]]]``, ``equalize[:NBINS]``,
``pixels``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy

from ermlab.data.preprocessing import Transform
from ermlab.features.bag_of_words import BagOfWords
from ermlab.features.base import FeatureStep
from ermlab.features.equalize import Equalize
from ermlab.features.hog import HoG
from ermlab.features.hsv import HSVHistogram
from ermlab.features.images import as_images
from ermlab.features.pixels import Pixels
from ermlab.features.quantize import ColourQuantization

STEPS: dict[str, type[FeatureStep]] = {
    cls.name: cls for cls in (HoG, HSVHistogram, ColourQuantization, BagOfWords, Pixels, Equalize)
}
# The positional arguments of each step in a spec, in order.
STEP_ARGS: dict[str, tuple[str, ...]] = {
    "hog": ("pixels_per_cell", "cells_per_block", "orientations"),
    "hsv-hist": ("bins", "channels"),
    "quantize": ("colours",),
    "bow": ("words", "patch", "stride"),
    "equalize": ("nbins",),
    "pixels": (),
}
TEXT_ARGS = ("channels",)
SEEDED = ("quantize", "bow")
METADATA_KEY = "ermlab.features"


def parse(spec: str, seed: int = 0) -> FeaturePipeline:
    """The (unfitted) pipeline of ``spec``, e.g. ``"hog,hsv-hist:10"``; ``seed`` seeds the
    learned steps (palette, codebook)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"features: give a comma-separated list of steps such as "
                         f"'hog,hsv-hist:10' (steps: {', '.join(STEPS)}); got {spec!r}")
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise ValueError(f"features: an empty step in {spec!r} (a comma at an end, or two "
                         "together); write the steps between commas, e.g. 'hog,hsv-hist:10'")
    return FeaturePipeline([_parse_step(part, seed) for part in parts])


def _parse_step(text: str, seed: int) -> FeatureStep:
    name, *args = text.split(":")
    name = name.strip().lower()
    if name not in STEPS:
        raise ValueError(f"features: unknown step {name!r}; choose among {', '.join(STEPS)} "
                         "(e.g. 'hog,hsv-hist:10')")
    names = STEP_ARGS[name]
    if len(args) > len(names):
        raise ValueError(f"features: {name} takes at most {len(names)} argument(s) "
                         f"({':'.join([name, *(n.upper() for n in names)])}); got {text!r}")
    options: dict[str, Any] = {"seed": seed} if name in SEEDED else {}
    for key, value in zip(names, args):
        if key in TEXT_ARGS:
            options[key] = value
            continue
        if not re.fullmatch(r"[0-9]+", value.strip()):  # int() takes '4_0', '+4' and ４
            raise ValueError(f"features: {name}'s {key} is an integer; got {value!r} in "
                             f"{text!r}")
        options[key] = int(value)
    return STEPS[name](**options)


def from_config(config: dict[str, Any]) -> FeaturePipeline:
    """An unfitted pipeline from ``FeaturePipeline.config()`` (then ``load_state_dict``)."""
    steps = []
    for step in config.get("steps", []):
        options = dict(step)
        name = options.pop("name", None)
        if name not in STEPS:
            raise ValueError(f"features: unknown step {name!r} in a saved pipeline")
        steps.append(STEPS[name](**options))
    return FeaturePipeline(steps, chunk=int(config.get("chunk", 2048)))


class FeaturePipeline(Transform):
    """Image steps and extractors applied in order; the extractors' features concatenated.

    Fitted attributes: ``input_shape_`` (one image's shape at fit time) and
    ``n_features_`` (D). Transform other images of that same shape.
    """

    name = "features"

    def __init__(self, steps: list[FeatureStep], chunk: int = 2048) -> None:
        self.steps = list(steps)
        if not any(getattr(step, "kind", "") == "extractor" for step in self.steps):
            raise ValueError("features: the pipeline computes no features; add an extractor "
                             f"({', '.join(n for n, c in STEPS.items() if c.kind == 'extractor')})")
        if int(chunk) < 1:
            raise ValueError(f"features: chunk must be ≥ 1; got {chunk}")
        self.chunk = int(chunk)

    def spec(self) -> str:
        return ",".join(step.name for step in self.steps)

    per_batch = False  # costly: ermlab.run extracts once, not on every mini-batch
    needs = None

    def fit(self, x: Any, moments: Any = None) -> FeaturePipeline:
        """Fit the steps on training images ``x`` (``moments``, the preprocessing's statistics
        of ``x``, are not needed)."""
        images = as_images(x, "features")
        self.input_shape_ = tuple(int(d) for d in numpy.shape(x)[1:])
        for step in self.steps:
            step.fit(images)
            if step.kind == "image":
                images = step.transform(images)
        self.n_features_ = int(self._extract(images[:1]).shape[1])
        return self

    def fit_transform(self, x: Any) -> numpy.ndarray:
        return self.fit(x).transform(x)

    def transform(self, x: Any) -> numpy.ndarray:
        """The features of images ``x``: an array, or a list of images as ``fit`` takes."""
        return super().transform(x if hasattr(x, "shape") else numpy.asarray(x))

    def _transform(self, x: Any, xp: Any) -> numpy.ndarray:
        from tqdm import tqdm

        images = as_images(x, "features")
        out = None
        starts = range(0, len(images), self.chunk)
        bar = tqdm(starts, desc=f"features {self.spec()}", unit="chunk", leave=False,
                   disable=None if len(starts) > 1 else True)
        for start in bar:
            part = self._extract(images[start:start + self.chunk])
            if out is None:
                out = numpy.empty((len(images), part.shape[1]), dtype=part.dtype)
            out[start:start + len(part)] = part
        return out

    def _extract(self, images: numpy.ndarray) -> numpy.ndarray:
        parts = []
        for step in self.steps:
            if step.kind == "image":
                images = step.transform(images)
            else:
                parts.append(step.transform(images).astype(images.dtype, copy=False))
        return numpy.concatenate(parts, axis=1)

    def describe(self) -> str:
        """e.g. ``hog 324 + hsv-hist 10 = 334 features`` (fitted)."""
        if not hasattr(self, "n_features_"):
            return self.spec()
        probe = numpy.zeros((1, *self.input_shape_), dtype=numpy.float32)
        images, sizes = as_images(probe), []
        for step in self.steps:
            if step.kind == "image":
                images = step.transform(images)
            else:
                sizes.append(f"{step.name} {step.transform(images).shape[1]}")
        return f"{' + '.join(sizes)} = {self.n_features_} features"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [step.config() for step in self.steps],
                "chunk": self.chunk}

    def state_dict(self) -> dict[str, numpy.ndarray]:
        if not hasattr(self, "n_features_"):
            raise ValueError("FeaturePipeline is not fitted; nothing to save")
        state = {"input_shape": numpy.asarray(self.input_shape_, dtype=numpy.int64),
                 "n_features": numpy.asarray(self.n_features_, dtype=numpy.int64)}
        for i, step in enumerate(self.steps):
            state.update({f"{i}.{k}": numpy.ascontiguousarray(v)
                          for k, v in step.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> FeaturePipeline:
        missing = [key for key in ("input_shape", "n_features") if key not in state]
        if missing:
            raise ValueError(f"FeaturePipeline state lacks {', '.join(missing)}")
        self.input_shape_ = tuple(int(d) for d in numpy.asarray(state["input_shape"]))
        self.n_features_ = int(numpy.asarray(state["n_features"]))
        for i, step in enumerate(self.steps):
            prefix = f"{i}."
            step.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                  if k.startswith(prefix)})
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted pipeline to ``path``: its arrays in safetensors, its config as
        JSON in the file's metadata (atomically)."""
        import safetensors.numpy

        from ermlab.training.checkpoint import atomic_write_bytes

        metadata = {METADATA_KEY: json.dumps(self.config())}
        atomic_write_bytes(Path(path), safetensors.numpy.save(self.state_dict(), metadata))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FeaturePipeline:
        """A fitted pipeline from ``save``'s file."""
        import safetensors.numpy
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no feature pipeline file at {path}")
        try:
            with safe_open(str(path), framework="numpy") as file:
                text = (file.metadata() or {}).get(METADATA_KEY)
            state = safetensors.numpy.load_file(str(path))
        except Exception as error:
            raise ValueError(f"{path} is not a feature pipeline file ({error})") from None
        if text is None:
            raise ValueError(f"{path} holds no feature pipeline (no {METADATA_KEY} metadata)")
        return from_config(json.loads(text)).load_state_dict(state)
