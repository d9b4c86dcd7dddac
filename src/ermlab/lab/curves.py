"""The study's curves: learning curves with seed bands, learning-rate sensitivity,
performance profiles, and SGD's noisy loss per step against the loss per epoch.

All of them read the run records of ``ermlab.lab.results`` (one JSON file per
run, DeepOBS's layout) and the measures of ``ermlab.lab.metrics``:

* learning curves (DeepOBS's plots, Schneider et al. 2019): for each optimizer,
  the tuned setting's curve averaged over its seeds, the band mean ± one
  standard deviation (ddof = 1) over the seeds, against epochs or training
  seconds;
* learning-rate sensitivity: the tuning score (final validation accuracy, or
  − validation loss) of every learning rate tried, the near-best range marked;
* performance profiles (Dolan & Moré 2002): ρ_s(τ), the fraction of problems on
  which optimizer s is within a factor τ of the best, for a cost such as the
  final test loss, 1 − final test accuracy or the seconds to a target;
* SGD's fluctuation (the seeds' picture of stochastic gradients): the loss of
  every mini-batch step, noisy, against the smooth per-epoch training loss.

    >>> from ermlab.lab import curves, results
    >>> records = results.load_all("lab-results")
    >>> curves.learning_curves(records, "logreg").savefig("logreg.png")
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy

from ermlab.lab import metrics

COSTS = ("final_test_loss", "final_test_error", "best_test_loss", "time_to_target")
LABELS = {"train_losses": "training loss", "valid_losses": "validation loss",
          "test_losses": "test loss", "train_accuracies": "training accuracy",
          "valid_accuracies": "validation accuracy", "test_accuracies": "test accuracy"}


def seed_band(runs: Sequence[Mapping[str, Any]], key: str) -> tuple[numpy.ndarray, ...]:
    """(epochs, mean, std) of curve ``key`` over the runs (seeds); NaN-aware, std with
    ddof = 1 (0 for one seed); runs that stopped early (diverged) count where they have
    values."""
    length = max(len(r[key]) for r in runs)
    table = numpy.full((len(runs), length), numpy.nan)
    for i, run in enumerate(runs):
        table[i, :len(run[key])] = numpy.asarray(run[key], dtype=float)
    with warnings.catch_warnings():  # all-NaN columns (every seed diverged) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = numpy.nanmean(table, axis=0)
        std = numpy.nanstd(table, axis=0, ddof=1) if len(runs) > 1 else numpy.zeros(length)
    std = numpy.where(numpy.isfinite(table).sum(axis=0) > 1, std, 0.0)
    return numpy.arange(length), mean, numpy.nan_to_num(std)


def problems_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The problems the records cover, in first-seen order."""
    return list(dict.fromkeys(r["testproblem"] for r in records))


def learning_curves(records: Sequence[Mapping[str, Any]], problem: str,
                    keys: Sequence[str] | None = None, against: str = "epochs") -> Any:
    """One panel per curve ``key`` (default: training loss, test loss and, for
    classification, test accuracy); a line and a seed band per optimizer (its tuned
    setting: ``metrics.final_runs``). ``against``: ``"epochs"`` or ``"seconds"``."""
    from ermlab.lab._mpl import new_figure

    chosen = _final(records, problem)
    first = next(iter(chosen.values()))[0]
    if keys is None:
        keys = ["train_losses", "test_losses"]
        keys += ["test_accuracies"] if "test_accuracies" in first else []
    if against not in ("epochs", "seconds"):
        raise ValueError(f"against is 'epochs' or 'seconds'; got {against!r}")
    fig = new_figure(4.2 * len(keys), 3.6)
    panels = fig.subplots(1, len(keys), squeeze=False)[0]
    for axes, key in zip(panels, keys):
        for optimizer, runs in chosen.items():
            if key not in runs[0]:
                have = sorted(k for k in runs[0] if k.endswith(("losses", "accuracies")))
                raise ValueError(f"{problem}: the runs have no {key!r}; they have {have}")
            epochs, mean, std = seed_band(runs, key)
            x = epochs if against == "epochs" else seed_band(runs, "train_times")[1]
            (line,) = axes.plot(x, mean, label=f"{optimizer} ({len(runs)} seeds)")
            axes.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                              linewidth=0)
        axes.set_xlabel("epoch" if against == "epochs" else "training seconds")
        axes.set_ylabel(LABELS.get(key, key))
        if key.endswith("losses") and _positive(chosen, key):
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    fig.suptitle(f"{problem}: mean ± std over seeds of each optimizer's tuned setting",
                 fontsize=10)
    return fig


def lr_sensitivity(records: Sequence[Mapping[str, Any]], problem: str,
                   tolerance: float = 0.01) -> Any:
    """The tuning score of every learning rate tried, per optimizer (log lr axis); the
    near-best range (within ``tolerance`` of the best, ``metrics.lr_sensitivity``) thick."""
    from ermlab.lab._mpl import new_figure

    runs = [r for r in records if r["testproblem"] == problem]
    if not runs:
        raise ValueError(f"no runs of problem {problem!r}; the records hold "
                         f"{problems_of(records)}")
    fig = new_figure(5.5, 3.8)
    axes = fig.add_subplot()
    for optimizer in dict.fromkeys(r["optimizer_name"] for r in runs):
        found = metrics.lr_sensitivity([r for r in runs if r["optimizer_name"] == optimizer],
                                       tolerance)
        scores = numpy.array(found["scores"], dtype=float)
        scores[~numpy.isfinite(scores)] = numpy.nan  # diverged: a gap in the line
        (line,) = axes.plot(found["lrs"], scores, marker="o", markersize=3,
                            label=f"{optimizer} ({found['decades']:.1f} decades near best)")
        low, high = found["good_range"]
        if math.isfinite(low):
            axes.axvspan(low, high, color=line.get_color(), alpha=0.08)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    classification = any("valid_accuracies" in r for r in runs)
    axes.set_ylabel("final validation accuracy" if classification
                    else "− final validation loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(f"{problem}: learning-rate sensitivity (seed 0 of the tuning runs)",
                   fontsize=10)
    return fig


def costs(records: Sequence[Mapping[str, Any]], cost: str = "final_test_loss",
          target: float | None = None) -> dict[str, dict[str, float]]:
    """``costs[problem][optimizer]`` for a performance profile (lower is better), from each
    optimizer's tuned setting, averaged over seeds: ``final_test_loss``, ``best_test_loss``,
    ``final_test_error`` (1 − accuracy) or ``time_to_target`` (median training seconds
    until the test accuracy reaches ``target``); see ``metrics.tuned_cost``."""
    if cost not in COSTS:
        raise ValueError(f"cost is one of {', '.join(COSTS)}; got {cost!r}")
    if cost == "time_to_target" and target is None:
        raise ValueError("cost 'time_to_target' needs a target (a test accuracy)")
    table: dict[str, dict[str, float]] = {}
    for (problem, optimizer), runs in metrics.final_runs(records).items():
        table.setdefault(problem, {})[optimizer] = metrics.tuned_cost(runs, cost, target)
    return table


def performance_profile(records: Sequence[Mapping[str, Any]], cost: str = "final_test_loss",
                        target: float | None = None, tau_max: float = 10.0) -> Any:
    """Dolan & Moré's ρ_s(τ) against τ (log axis) for every optimizer, as steps."""
    from ermlab.lab._mpl import new_figure

    table = costs(records, cost, target)
    taus = numpy.logspace(0, math.log10(tau_max), 200)
    profile = metrics.performance_profile(table, taus)
    fig = new_figure(5.5, 3.8)
    axes = fig.add_subplot()
    for optimizer, rho in profile.items():
        axes.step(taus, rho, where="post", label=optimizer)
    axes.set_xscale("log")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("τ (within a factor τ of the best)")
    axes.set_ylabel("ρ(τ): fraction of problems")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(f"performance profile over {len(table)} problems, cost: "
                   f"{cost.replace('_', ' ')}", fontsize=10)
    return fig


def sgd_noise(record: Mapping[str, Any], window: int | None = None) -> Any:
    """The loss of every mini-batch step (noisy; its running mean over ``window`` steps,
    default one epoch) against the per-epoch training loss, on one epoch axis."""
    from ermlab.lab._mpl import new_figure

    steps = numpy.asarray(record["minibatch_train_losses"], dtype=float)
    epochs = int(record["num_epochs"])
    if epochs < 1 or len(steps) == 0:
        raise ValueError(f"{record['testproblem']}/{record['optimizer_name']}: the run has no "
                         "mini-batch steps to draw")
    per_epoch = len(steps) / epochs
    position = numpy.arange(1, len(steps) + 1) / per_epoch
    window = max(1, int(round(per_epoch))) if window is None else int(window)
    fig = new_figure(6.5, 3.8)
    axes = fig.add_subplot()
    axes.plot(position, steps, linewidth=0.6, alpha=0.5, label="loss of each mini-batch step")
    if window > 1 and len(steps) >= window:
        smooth = numpy.convolve(steps, numpy.ones(window) / window, mode="valid")
        axes.plot(position[window - 1:], smooth, linewidth=1.2,
                  label=f"running mean of {window} steps")
    axes.plot(numpy.arange(epochs + 1), record["train_losses"][:epochs + 1], marker="o",
              color="black", label="training loss after each epoch")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    if numpy.nanmin(steps) > 0:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    hyper = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in record["optimizer_hyperparams"].items())
    axes.set_title(f"{record['testproblem']}: {record['optimizer_name']} ({hyper}), "
                   f"batch {record['batch_size']}", fontsize=10)
    return fig


def _final(records: Sequence[Mapping[str, Any]], problem: str) -> dict[str, list[dict]]:
    chosen = {optimizer: runs for (p, optimizer), runs in metrics.final_runs(records).items()
              if p == problem}
    if not chosen:
        raise ValueError(f"no runs of problem {problem!r}; the records hold "
                         f"{problems_of(records)}")
    return chosen


def _positive(chosen: Mapping[str, list[dict]], key: str) -> bool:
    values = numpy.array([v for runs in chosen.values() for r in runs for v in r[key]], float)
    values = values[numpy.isfinite(values)]
    return values.size > 0 and values.min() > 0
