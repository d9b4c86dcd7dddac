"""Training curves as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: dict[str, list[Any]], directory: str | Path) -> list[Path]:
    """Write ``loss.png`` and, when accuracy was logged, ``accuracy.png``; return the paths.

    Each plot shows the training curve and the validation curve against the epoch,
    so the gap between them (over-fitting) is visible at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    written = []
    epochs = history.get("epoch", [])
    for metric, train_key in (("loss", "loss"), ("accuracy", None)):
        curves = {name: history[key] for name, key in
                  (("training", train_key), ("validation", f"val_{metric}"))
                  if key is not None and key in history}
        if not curves:
            continue
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, values in curves.items():
            axes.plot(epochs[:len(values)], values, marker="o", markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = directory / f"{metric}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written
