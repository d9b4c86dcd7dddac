"""Training curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ermlab.training.checkpoint import atomic_write_bytes


def plot_history(history: dict[str, list[Any]], directory: str | Path,
                 best_epoch: int | None = None) -> list[Path]:
    """Write ``loss.png`` and, when accuracy was logged, ``accuracy.png``; return the paths.

    Each plot shows the training curve and the validation curve against the epoch,
    so the gap between them (over-fitting) is visible at a glance. ``best_epoch``
    (the epoch whose weights the run keeps, e.g. the best validation loss) is
    marked by a dashed vertical line and a point on the validation curve.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    directory = Path(directory)
    written = []
    epochs = history.get("epoch", [])
    for metric in ("loss", "accuracy"):
        curves = {name: history[key] for name, key in
                  (("training", metric), ("validation", f"val_{metric}")) if key in history}
        if not curves:
            continue
        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        # fixed margins that fit the labels, where tight_layout would measure every text
        # first (as long as the drawing itself)
        figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.96)
        for name, values in curves.items():
            axes.plot(epochs[:len(values)], values, marker="o", markersize=3, label=name)
        if best_epoch is not None and best_epoch in epochs:
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                         label=f"best (epoch {best_epoch})")
            values = curves.get("validation", next(iter(curves.values())))
            at = epochs.index(best_epoch)
            if at < len(values):
                axes.plot([best_epoch], [values[at]], marker="*", markersize=12, color="black")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
        path = directory / f"{metric}.png"
        image = io.BytesIO()
        figure.savefig(image, format="png", dpi=100)
        atomic_write_bytes(path, image.getvalue(), durable=False)  # never a half-drawn file
        written.append(path)
    return written
