"""Matplotlib for the lab's pictures: figures without pyplot, PNG bytes, files written whole.

Figures are ``matplotlib.figure.Figure`` objects made directly (no pyplot, so no
global state, no backend to choose and nothing to close); they render to PNG
with Agg and display in Jupyter as they are.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def new_figure(width: float, height: float) -> Any:
    """A fresh ``Figure`` of ``width`` × ``height`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(figure: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=dpi)
    return image.getvalue()


def save_png(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure to ``path`` as PNG, atomically (never a half-drawn file)."""
    from ermlab.training.checkpoint import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, png_bytes(figure, dpi), durable=False)
    return path
