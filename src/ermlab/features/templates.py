"""A linear classifier's weights as images: one "template" per class.

A linear classifier on pixels scores class k by s_k = w_kᵀ x + b_k, a match of
the image x against the row w_k of W reshaped to the image's shape. Drawn as
an image, each w_k is the class's template — a blurred average of its
examples (cs231n, "Linear classification"). Each template is rescaled to
[0, 1] on its own, (w − min w) / (max w − min w); colour templates are drawn
in RGB, grey ones with a grey colour map.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy


def template_images(weight: Any, image_shape: tuple[int, ...]) -> numpy.ndarray:
    """(K, D) weights → (K, H, W, C) images in [0, 1], one per class (C = 1 or 3)."""
    from ermlab.backend import to_numpy

    w = numpy.asarray(to_numpy(weight), dtype=numpy.float64)
    shape = tuple(int(d) for d in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if w.ndim != 2 or len(shape) != 3 or shape[0] not in (1, 3) or \
            w.shape[1] != math.prod(shape):
        raise ValueError(f"templates: need weights (classes, C·H·W) of a linear model on "
                         f"pixels of images (C, H, W), C = 1 or 3; got weights {w.shape} for "
                         f"images {tuple(image_shape)} (a model on features or with hidden "
                         "layers has no pixel templates)")
    low = w.min(axis=1, keepdims=True)
    span = w.max(axis=1, keepdims=True) - low
    scaled = (w - low) / numpy.where(span > 0, span, 1.0)
    return numpy.moveaxis(scaled.reshape(len(w), *shape), 1, -1)


def save_templates(weight: Any, image_shape: tuple[int, ...], path: str | Path,
                   class_names: list[str] | None = None, columns: int = 5) -> Path:
    """Write the templates of ``weight`` (a ``Linear`` layer's, (K, C·H·W)) as a PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ermlab.training.checkpoint import atomic_write_bytes

    images = template_images(weight, image_shape)
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(images))]
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.0 * rows),
                                squeeze=False)
    for k, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if k < len(images):
            image = images[k]
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                        cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
            axis.set_title(names[k][:14], fontsize=8)
    figure.suptitle("linear classifier templates (rows of W)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(Path(path), buffer.getvalue(), durable=False)
    return Path(path)


def linear_weight(model: Any) -> Any:
    """The weight matrix of a model that is one ``Linear`` layer (alone or in a Sequential)."""
    from ermlab.nn.linear import Linear

    layers = [m for m in (list(model) if hasattr(model, "__iter__") else [model])
              if hasattr(m, "parameters") and m.parameters()]
    if len(layers) != 1 or not isinstance(layers[0], Linear):
        raise ValueError("templates: the model is not a single Linear layer (use --model linear "
                         "on raw pixels)")
    return layers[0].weight.data
