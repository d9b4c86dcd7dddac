"""What a study measures: final and best test metrics over seeds, time to a target,
learning-rate sensitivity and performance profiles.

* Final / best (DeepOBS, Schneider et al. 2019): the test loss and accuracy after
  the last epoch, and the best over epochs, as mean ± standard deviation over
  the seeds of the tuned setting (``ddof=1``; 0 for one seed).
* Time to result (AlgoPerf, Dahl et al. 2023, "Benchmarking neural network
  training algorithms"): the first epoch at which a curve reaches a target
  (accuracy ≥ target, loss ≤ target) and the training seconds spent by then
  (``train_times``: evaluation excluded); ∞ when it never does. Over seeds, the
  median, as AlgoPerf summarizes its trials.
* Learning-rate sensitivity: the tuning score against the learning rate, and the
  width in decades of the learning rates whose score lies within ``tolerance``
  of the best (a wide plateau is a forgiving optimizer).
* Performance profiles (Dolan & Moré 2002, "Benchmarking optimization software
  with performance profiles"): for costs t_{p,s} (lower is better) of solver s
  on problem p, the ratio r_{p,s} = t_{p,s} / min_s t_{p,s} and

      ρ_s(τ) = |{p : r_{p,s} ≤ τ}| / n_p,

  the fraction of problems solver s solves within a factor τ of the best; a
  failure (∞ or NaN) has r = ∞.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy


def tuning_metric(classification: bool) -> str:
    return "valid_accuracies" if classification else "valid_losses"


def tuning_score(record: Mapping[str, Any]) -> float:
    """Final validation accuracy, or − final validation loss; −∞ for a diverged run."""
    if record["diverged"]:
        return -math.inf
    key = "valid_accuracies" if "valid_accuracies" in record else "valid_losses"
    value = float(record[key][-1])
    if not math.isfinite(value):
        return -math.inf
    return value if key == "valid_accuracies" else -value


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    array = numpy.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def setting_key(record: Mapping[str, Any]) -> tuple:
    return tuple(sorted(record["optimizer_hyperparams"].items()))


def final_runs(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    """Per (problem, optimizer), the runs of the setting repeated over the most seeds
    (the tuned setting of a study; ties go to the better mean tuning score)."""
    groups: dict[tuple[str, str], dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        groups[record["testproblem"], record["optimizer_name"]][setting_key(record)].append(
            record)
    chosen = {}
    for key, settings in groups.items():
        chosen[key] = max(settings.values(), key=lambda runs: (
            len(runs), numpy.mean([tuning_score(r) for r in runs])))
    return dict(sorted(chosen.items()))


def final_and_best(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of the final and best test loss (and accuracy)."""
    out: dict[str, Any] = {"seeds": len(runs), "diverged": sum(bool(r["diverged"]) for r in runs),
                           "hyperparams": dict(runs[0]["optimizer_hyperparams"])}
    curves = [("test_losses", min)]
    if all("test_accuracies" in r for r in runs):
        curves.append(("test_accuracies", max))
    for key, best in curves:
        name = "test_accuracy" if key == "test_accuracies" else "test_loss"
        finals = [float(r[key][-1]) for r in runs]
        bests = [best(_finite(r[key]) or [math.nan]) for r in runs]
        out[f"final_{name}"] = mean_std(finals)
        out[f"best_{name}"] = mean_std(bests)
    return out


def time_to_target(record: Mapping[str, Any], target: float,
                   key: str = "test_accuracies") -> tuple[float, float]:
    """(epochs, training seconds) until ``record[key]`` first reaches ``target``; (∞, ∞) if never.

    Accuracy curves reach a target from below (≥), loss curves from above (≤).
    """
    curve = record[key]
    higher = "accurac" in key
    for epoch in range(1, len(curve)):
        value = curve[epoch]
        if math.isfinite(value) and (value >= target if higher else value <= target):
            return float(epoch), float(record["train_times"][epoch])
    return math.inf, math.inf


def median_time_to_target(runs: Sequence[Mapping[str, Any]], target: float,
                          key: str = "test_accuracies") -> dict[str, float]:
    """Median epochs and seconds to ``target`` over seeds, and the fraction that reached it."""
    times = numpy.array([time_to_target(r, target, key) for r in runs], dtype=float)
    return {"epochs": float(numpy.median(times[:, 0])), "seconds": float(numpy.median(times[:, 1])),
            "reached": float(numpy.isfinite(times[:, 0]).mean())}


def lr_sensitivity(records: Sequence[Mapping[str, Any]], tolerance: float = 0.01,
                   ) -> dict[str, Any]:
    """Tuning score against learning rate, and the width of the near-best region.

    ``records``: runs of one optimizer on one problem that differ in ``lr`` (the
    seed-0 tuning runs). ``tolerance``: how far below the best score still counts
    as good (an accuracy difference, or a loss difference). Returns
    ``{"lrs", "scores", "best_lr", "good_range": (low, high), "decades"}``.
    """
    pairs = sorted((float(r["optimizer_hyperparams"]["lr"]), tuning_score(r)) for r in records
                   if r["random_seed"] == min(q["random_seed"] for q in records))
    if not pairs:
        raise ValueError("lr_sensitivity needs at least one run")
    lrs = [lr for lr, _ in pairs]
    scores = [score for _, score in pairs]
    best = max(scores)
    good = [lr for lr, score in pairs if math.isfinite(score) and score >= best - tolerance]
    if not good:
        return {"lrs": lrs, "scores": scores, "best_lr": math.nan,
                "good_range": (math.nan, math.nan), "decades": math.nan}
    return {"lrs": lrs, "scores": scores, "best_lr": lrs[int(numpy.argmax(scores))],
            "good_range": (min(good), max(good)), "decades": math.log10(max(good) / min(good))}


def performance_profile(costs: Mapping[str, Mapping[str, float]], taus: Sequence[float],
                        ) -> dict[str, numpy.ndarray]:
    """Dolan & Moré's ρ_s(τ) for every solver s, at each τ of ``taus``.

    ``costs[problem][solver]``: lower is better (time to target, final loss,
    1 − accuracy); ∞ or NaN marks a failure. Every problem must list the same
    solvers. Returns ``{solver: array of ρ_s(τ)}``.
    """
    problems = list(costs)
    if not problems:
        raise ValueError("performance_profile needs costs for at least one problem")
    solvers = list(costs[problems[0]])
    for problem in problems:
        if sorted(costs[problem]) != sorted(solvers):
            raise ValueError(f"problem {problem!r} has solvers {sorted(costs[problem])}; "
                             f"every problem needs {sorted(solvers)}")
    table = numpy.array([[float(costs[p][s]) for s in solvers] for p in problems])
    if (table[numpy.isfinite(table)] < 0).any():
        raise ValueError("performance_profile costs must be ≥ 0 (lower is better)")
    table = numpy.where(numpy.isfinite(table), table, numpy.inf)
    best = table.min(axis=1, keepdims=True)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        ratios = numpy.where(table == best, 1.0, table / best)  # 0/0 (both zero) is a tie
    ratios[~numpy.isfinite(table)] = numpy.inf
    taus = numpy.asarray(taus, dtype=float)
    return {solver: (ratios[:, j][None, :] <= taus[:, None]).mean(axis=1)
            for j, solver in enumerate(solvers)}


def tuned_cost(runs: Sequence[Mapping[str, Any]], cost: str = "final_test_loss",
               target: float | None = None) -> float:
    """One optimizer's cost on one problem (lower is better) from the runs of its tuned
    setting, over seeds: the mean ``final_test_loss``, ``best_test_loss`` or
    ``final_test_error`` (1 − accuracy), or the median training seconds until the test
    accuracy (loss, without accuracy) reaches ``target`` (``time_to_target``); ∞ where
    that is not a finite number."""
    if cost == "time_to_target":
        key = "test_accuracies" if "test_accuracies" in runs[0] else "test_losses"
        value = median_time_to_target(runs, target, key)["seconds"]
    else:
        row = final_and_best(runs)
        if cost == "final_test_error":
            if "final_test_accuracy" not in row:
                raise ValueError(f"{runs[0]['testproblem']} has no accuracy; use cost "
                                 "final_test_loss")
            value = 1 - row["final_test_accuracy"][0]
        else:
            value = row[cost][0]
    return value if math.isfinite(value) else math.inf


def final_costs(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``costs[problem][optimizer]`` for ``performance_profile``: the mean final test error
    (1 − accuracy) of the tuned setting, or its mean final test loss where there is no
    accuracy (``tuned_cost``); ∞ when a seed diverged. Problems not run by every optimizer
    are left out."""
    costs: dict[str, dict[str, float]] = defaultdict(dict)
    for (problem, optimizer), runs in final_runs(records).items():
        cost = "final_test_error" if all("test_accuracies" in r for r in runs) \
            else "final_test_loss"
        costs[problem][optimizer] = math.inf if any(r["diverged"] for r in runs) \
            else tuned_cost(runs, cost)
    optimizers = set.union(*(set(c) for c in costs.values())) if costs else set()
    return {p: c for p, c in costs.items() if set(c) == optimizers}


def summary(records: Sequence[Mapping[str, Any]], target: float | None = None,
            ) -> list[dict[str, Any]]:
    """One row per (problem, optimizer): ``final_and_best`` (+ time to target)."""
    rows = []
    for (problem, optimizer), runs in final_runs(records).items():
        row = {"problem": problem, "optimizer": optimizer, **final_and_best(runs)}
        if target is not None:
            key = "test_accuracies" if "test_accuracies" in runs[0] else "test_losses"
            row["time_to_target"] = median_time_to_target(runs, target, key)
        row["wall_time"] = float(sum(r["wall_time"] for r in runs))
        rows.append(row)
    return rows


def summary_lines(records: Sequence[Mapping[str, Any]], target: float | None = None) -> list[str]:
    """``summary`` as aligned text lines."""
    lines = []
    for row in summary(records, target):
        text = (f"{row['problem']:16s} {row['optimizer']:10s} "
                f"{_setting(row['hyperparams']):28s} seeds {row['seeds']}  "
                f"final test loss {_pm(row['final_test_loss'])}")
        if "final_test_accuracy" in row:
            text += (f"  final test acc {_pm(row['final_test_accuracy'])}"
                     f"  best test acc {_pm(row['best_test_accuracy'])}")
        if "time_to_target" in row:
            t = row["time_to_target"]
            text += (f"  to target: {t['epochs']:g} epochs, {t['seconds']:.1f} s "
                     f"({t['reached']:.0%} of seeds)")
        if row["diverged"]:
            text += f"  diverged {row['diverged']}"
        lines.append(text)
    costs = final_costs(records)
    if len(costs) > 1:
        taus = (1.0, 1.05, 1.25, 2.0)
        profile = performance_profile(costs, taus)
        lines.append(f"performance profile over {len(costs)} problems (final test error, or "
                     f"loss): ρ(τ) at τ = {', '.join(f'{t:g}' for t in taus)}")
        for optimizer, rho in sorted(profile.items(), key=lambda item: -item[1].sum()):
            lines.append(f"  {optimizer:10s} " + "  ".join(f"{r:.2f}" for r in rho))
    return lines


def _setting(hyperparams: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in hyperparams.items())


def _pm(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.4f} ± {pair[1]:.4f}"


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]
