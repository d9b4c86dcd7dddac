"""Training curves: training and validation loss and accuracy, the kept epoch marked."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.axes  # noqa: E402
import pytest  # noqa: E402

from ermlab.training.plots import plot_history  # noqa: E402

HISTORY = {"epoch": [1, 2, 3, 4], "loss": [1.0, 0.6, 0.4, 0.3], "accuracy": [0.5, 0.7, 0.8, 0.9],
           "val_loss": [0.9, 0.5, 0.6, 0.7], "val_accuracy": [0.55, 0.75, 0.7, 0.7]}


@pytest.fixture
def drawn(monkeypatch):
    """Every curve and vertical line drawn, per figure: {ylabel: [(kind, label, x, y)]}."""
    calls = []
    real_plot, real_axvline = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axvline

    def plot(self, x, y, *args, **kwargs):
        calls.append((self, "curve", kwargs.get("label"), list(x), list(y)))
        return real_plot(self, x, y, *args, **kwargs)

    def axvline(self, x, *args, **kwargs):
        calls.append((self, "vline", kwargs.get("label"), [x], None))
        return real_axvline(self, x, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", axvline)

    def by_figure():
        figures = {}
        for axes, *rest in calls:
            figures.setdefault(axes.get_ylabel(), []).append(tuple(rest))
        return figures

    return by_figure


def test_both_plots_show_training_and_validation_and_mark_the_best_epoch(tmp_path, drawn):
    written = plot_history(HISTORY, tmp_path, best_epoch=2)
    assert [p.name for p in written] == ["loss.png", "accuracy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    figures = drawn()
    assert ("curve", "training", [1, 2, 3, 4], HISTORY["accuracy"]) in figures["accuracy"]
    assert ("curve", "validation", [1, 2, 3, 4], HISTORY["val_accuracy"]) in figures["accuracy"]
    for metric in ("loss", "accuracy"):
        assert ("vline", "best (epoch 2)", [2], None) in figures[metric]
        assert ("curve", None, [2], [HISTORY[f"val_{metric}"][1]]) in figures[metric]


def test_without_a_best_epoch_nothing_is_marked(tmp_path, drawn):
    plot_history(HISTORY, tmp_path)
    assert not [c for calls in drawn().values() for c in calls if c[0] == "vline"]
