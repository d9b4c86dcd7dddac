"""One self-contained HTML report of a study: every figure embedded, readable offline.

``build(results_dir)`` gathers what ``ermlab lab run`` wrote (the run records of
``ermlab.lab.results`` and ``study.json``) into one HTML file whose images are
``data:`` URIs — no file beside it, no network, no script — so it can be mailed,
archived or opened on a laptop on a train:

* the summary table (``metrics.summary``: final and best test metrics, mean ±
  std over seeds, time to a target, wall time);
* per problem: learning curves with seed bands, learning-rate sensitivity, and
  SGD's loss per step against its loss per epoch (``ermlab.lab.curves``);
* the performance profile across problems;
* optimizer trajectories over Beale's function and at the saddle, PNG and the
  animated GIF (``ermlab.lab.trajectories``);
* the loss landscape of the seeds' 4-layer ReLU network (interpolation slice and
  random slices, ``ermlab.lab.landscape``), and of any run directories given;
* optionally the decision-boundary grid (``ermlab.lab.boundary``);
* the comparison table of the optimizers, from their declared traits
  (``ermlab.lab.table``);
* the wall time of every figure.

The file is written atomically at the end, so an interrupted build leaves the
previous report (or none), never half of one.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from ermlab.lab import _mpl

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; } .note { color: #885; font-style: italic; }
"""


@dataclass
class Figure:
    """One embedded image: its section, title, bytes, MIME type and drawing time."""

    section: str
    title: str
    data: bytes
    mime: str
    seconds: float
    caption: str = ""


@dataclass
class Report:
    """What ``build`` gathered: figures, notes on what was left out and why, tables."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (section, text)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (section, html)
    facts: list[str] = field(default_factory=list)

    def add(self, section: str, title: str, make: Callable[[], tuple[bytes, str]],
            caption: str = "") -> Figure:
        start = time.perf_counter()
        data, mime = make()
        figure = Figure(section, title, data, mime, time.perf_counter() - start, caption)
        self.figures.append(figure)
        return figure


SECTIONS = ("Summary", "Learning curves", "Learning-rate sensitivity", "Performance profile",
            "SGD's noise: loss per step and per epoch", "Trajectories", "Decision boundaries",
            "Loss landscapes", "The optimizers: what each keeps", "Figure wall times")


def build(results_dir: str | Path, output: str | Path | None = None,
          trajectories: bool = True, animation: bool = True, boundary: bool = False,
          seeds_landscape: bool = True, landscapes: Sequence[str | Path] = (),
          target: float | None = None,
          steps: int = 150, progress: bool = True) -> tuple[Path, Report]:
    """Write the study's report (default ``results_dir/report.html``); return its path and
    the ``Report`` (figures with their wall times).

    ``trajectories``/``animation``: the trajectory pictures and the saddle's GIF
    (``steps`` at the saddle, twice as many on Beale's function); ``boundary``: the
    decision-boundary grid on the two spirals (9 networks); ``seeds_landscape``: the
    loss landscape of the seeds' 4-layer ReLU network (``relu4`` trained 5 epochs with
    Adam); ``landscapes``: run directories whose loss landscapes to draw; ``target``: a
    test accuracy (or loss) for the time to target and a time-to-target performance
    profile.
    """
    from ermlab.lab import results

    results_dir = Path(results_dir)
    records = results.load_all(results_dir, epochs=results.study_epochs(results_dir))
    if not records:
        raise ValueError(f"{results_dir} holds no run files; run `ermlab lab run --out "
                         f"{results_dir}` first")
    for run in landscapes:
        if not (Path(run) / "config.json").is_file():
            raise FileNotFoundError(f"{run} is not a run directory (no config.json); give "
                                    "folders `ermlab train` wrote")
    output = Path(output) if output is not None else results_dir / "report.html"
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1; got {steps!r}")
    if output.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is an HTML file: name it *.html; got {output}")
    results.make_folder(output.parent, "the report's folder", "choose another --output")
    report = Report(f"Optimizer lab: {results_dir.resolve().name}")
    jobs = _jobs(report, records, results_dir, trajectories and steps, animation, boundary,
                 seeds_landscape, landscapes, target)
    for job in _bar(jobs, progress):
        job()
    text = render(report)
    from ermlab.training.checkpoint import atomic_write_bytes

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, text.encode("utf-8"), durable=False)
    return output, report


def _jobs(report: Report, records: list[dict], results_dir: Path, trajectories: int,
          animation: bool, boundary: bool, seeds_landscape: bool,
          landscapes: Sequence[str | Path], target: float | None) -> list[Callable[[], Any]]:
    """The report's work as a list of steps (each one figure or table), for the progress bar."""
    from ermlab.lab import curves, landscape, metrics

    jobs: list[Callable[[], Any]] = [lambda: _summary(report, records, results_dir, target)]
    for problem in curves.problems_of(records):
        jobs.append(lambda p=problem: report.add(
            "Learning curves", p, lambda: _png(curves.learning_curves(records, p))))
        runs = [r for r in records if r["testproblem"] == problem]
        lrs = {r["optimizer_hyperparams"]["lr"] for r in runs}
        if len(lrs) > 1:
            jobs.append(lambda p=problem: report.add(
                "Learning-rate sensitivity", p, lambda: _png(curves.lr_sensitivity(records, p))))
        else:
            report.notes.append(("Learning-rate sensitivity",
                                 f"{problem}: one learning rate only, no curve"))
        noisy = _sgd_run(metrics.final_runs(records), problem)
        if noisy is not None:
            jobs.append(lambda r=noisy: report.add(
                "SGD's noise: loss per step and per epoch",
                f"{r['testproblem']}: {r['optimizer_name']}, seed {r['random_seed']}",
                lambda: _png(curves.sgd_noise(r))))
    jobs.append(lambda: _profile(report, records, target))
    if trajectories:
        jobs += _trajectory_jobs(report, animation, int(trajectories))
    if boundary:
        jobs.append(lambda: _boundary(report))
    if seeds_landscape:
        jobs.append(lambda: _landscape(
            report, "relu4", lambda: landscape.from_problem("relu4", "adam:lr=0.001", epochs=5),
            "the seeds' 4-layer ReLU net (10-32-32-32-10, softmax loss) on its teacher data, "
            "trained 5 epochs with Adam (lr 0.001)"))
    for run in landscapes:
        jobs.append(lambda r=Path(run): _landscape(
            report, r.name, lambda: landscape.from_run(r)))
    jobs.append(lambda: _traits(report))
    return jobs


def _summary(report: Report, records: list[dict], results_dir: Path,
             target: float | None) -> None:
    from ermlab.lab import metrics

    rows = metrics.summary(records, target)
    head = ["problem", "optimizer", "setting", "seeds", "final test loss", "best test loss",
            "final test accuracy", "best test accuracy"]
    head += ["epochs / seconds to target"] if target is not None else []
    head += ["wall time of its runs (s)", "diverged"]
    body = []
    for row in rows:
        cells = [row["problem"], row["optimizer"], _setting(row["hyperparams"]),
                 str(row["seeds"]), _pm(row["final_test_loss"]), _pm(row["best_test_loss"]),
                 _pm(row.get("final_test_accuracy")), _pm(row.get("best_test_accuracy"))]
        if target is not None:
            t = row["time_to_target"]
            cells.append(f"{t['epochs']:g} / {t['seconds']:.1f} ({t['reached']:.0%} of seeds)")
        cells += [f"{row['wall_time']:.1f}", str(row["diverged"])]
        body.append(cells)
    report.tables.append(("Summary", _table(head, body)))
    study = results_dir / "study.json"
    report.facts.append(f"{len(records)} runs of {len(rows)} (problem, optimizer) pairs in "
                        f"{html.escape(str(results_dir.resolve()))}")
    if study.is_file():
        document = json.loads(study.read_text())
        protocol = document.get("protocol", {})
        report.facts.append("protocol: " + html.escape(", ".join(
            f"{k} = {v}" for k, v in protocol.items())))
        epochs = document.get("epochs", {})
        if epochs:
            report.facts.append("epochs: " + html.escape(", ".join(
                f"{k} {v}" for k, v in epochs.items())))


def _profile(report: Report, records: list[dict], target: float | None) -> None:
    from ermlab.lab import curves, metrics

    section = "Performance profile"
    problems = curves.problems_of(records)
    if len(problems) < 2:
        report.notes.append((section, "one problem only: a profile compares several"))
        return
    cost = "time_to_target" if target is not None else "final_test_loss"
    try:
        metrics.performance_profile(curves.costs(records, cost, target), [1.0])
    except ValueError as error:  # e.g. optimizers not run on every problem
        report.notes.append((section, f"not drawn: {error}"))
        return
    report.add(section, f"cost: {cost.replace('_', ' ')}",
               lambda: _png(curves.performance_profile(records, cost, target)),
               "ρ(τ): the fraction of problems on which an optimizer's cost is within a "
               "factor τ of the best optimizer's (Dolan & Moré 2002)")


def _trajectory_jobs(report: Report, animation: bool, steps: int) -> list[Callable[[], Any]]:
    """Beale's function (2 × ``steps``) and the saddle (``steps``), and the saddle's GIF."""
    from ermlab.lab import trajectories as tr

    section = "Trajectories"
    jobs: list[Callable[[], Any]] = [
        lambda: report.add(section, f"Beale's function, {2 * steps} steps", lambda: _png(
            tr.figure("beale", tr.paths("beale", tr.CONTOUR_OPTIMIZERS, 2 * steps)))),
        lambda: report.add(section, f"the saddle x² − y², {steps} steps", lambda: _png(
            tr.figure("saddle", tr.paths("saddle", tr.SADDLE_OPTIMIZERS, steps))))]
    if animation:
        every = max(1, steps // 50)
        jobs.append(lambda: report.add(section, "the saddle, animated", lambda: (_gif(
            lambda path: tr.animate("saddle", tr.paths("saddle", tr.SADDLE_OPTIMIZERS, steps),
                                    path, every=every, progress=False)), "image/gif"),
            f"every {every} steps"))
    return jobs


def _boundary(report: Report) -> None:
    from ermlab.lab import boundary

    x, y = boundary.dataset("spirals")

    def make() -> tuple[bytes, str]:
        panels = boundary.grid(x, y, hidden=(2, 8, 32), l2=(0.0, 1e-4, 1e-3), progress=False)
        return _png(boundary.figure(panels, x, y, "two spirals: hidden units (→) × λ (↓)"))

    report.add("Decision boundaries", "two spirals", make)


def _landscape(report: Report, label: str, make_scene: Callable[[], Any],
               about: str = "") -> None:
    """The interpolation slice and 1-D/2-D random slices of one trained network."""
    from ermlab.lab import landscape

    section = "Loss landscapes"
    start = time.perf_counter()
    scene = make_scene()
    prepared = f"training or loading the network took {time.perf_counter() - start:.2f} s"
    prepared = f"{about}; {prepared}" if about else prepared

    def interpolation() -> tuple[bytes, str]:
        alphas, values = scene.interpolation()
        return _png(landscape.line_figure(alphas, {"training loss": values},
                                          title=f"{label}: θ₀ → θ₁"))

    def random_1d() -> tuple[bytes, str]:
        alphas, values = scene.slice_1d()
        return _png(landscape.line_figure(alphas, {"training loss": values},
                                          xlabel="α  (θ₁ + αd, d filter-normalized)",
                                          title=f"{label}: a random direction",
                                          marks=(0.0,)))

    def random_2d() -> tuple[bytes, str]:
        grid = numpy.linspace(-1, 1, 15)
        return _png(landscape.contour_figure(*scene.slice_2d(alphas=grid), title=label))

    report.add(section, f"{label}: interpolation slice (Goodfellow et al. 2015)",
               interpolation, prepared)
    report.add(section, f"{label}: 1-D random slice (Li et al. 2018)", random_1d)
    report.add(section, f"{label}: 2-D random slice (Li et al. 2018)", random_2d)


def _traits(report: Report) -> None:
    from ermlab.lab import table

    report.tables.append(("The optimizers: what each keeps", table.html(table.rows())))


def render(report: Report) -> str:
    """The report as one HTML document (images as data: URIs)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from ermlab import __version__

    facts = [f"written {stamp} by ermlab {__version__}", *report.facts]
    parts.append("<ul>" + "".join(f"<li>{fact}</li>" for fact in facts) + "</ul>")
    timings = [[f.section, f.title, f"{f.seconds:.2f}"] for f in report.figures]
    for section in SECTIONS:
        figures = [f for f in report.figures if f.section == section]
        tables = [t for s, t in report.tables if s == section]
        notes = [n for s, n in report.notes if s == section]
        if section == "Figure wall times" and timings:
            tables = [_table(["section", "figure", "seconds"], timings)]
        if not (figures or tables or notes):
            continue
        parts.append(f"<h2>{html.escape(section)}</h2>")
        parts += tables
        parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
        for figure in figures:
            source = f"data:{figure.mime};base64,{base64.b64encode(figure.data).decode('ascii')}"
            caption = html.escape(figure.title)
            if figure.caption:
                caption += f" — {html.escape(figure.caption)}"
            parts.append(f'<figure><img alt="{html.escape(figure.title)}" src="{source}">'
                         f"<figcaption>{caption} (drawn in {figure.seconds:.2f} s)"
                         "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- helpers ---------------------------------------------------------------------------------


def _png(figure: Any) -> tuple[bytes, str]:
    return _mpl.png_bytes(figure), "image/png"


def _gif(write: Callable[[Path], Any]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ermlab-report-") as folder:
        path = Path(folder) / "animation.gif"
        write(path)
        return path.read_bytes()


def _sgd_run(final: dict[tuple[str, str], list[dict]], problem: str) -> dict | None:
    """The lowest-seed run of the tuned plain-SGD setting (else of the first optimizer)."""
    candidates = {optimizer: runs for (p, optimizer), runs in final.items() if p == problem}
    if not candidates:
        return None
    runs = candidates.get("sgd") or next(iter(candidates.values()))
    run = min(runs, key=lambda r: r["random_seed"])
    return run if run["minibatch_train_losses"] and run["num_epochs"] > 0 else None


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in body)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def _setting(hyperparams: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in hyperparams.items())


def _pm(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "—"
    mean, std = pair
    return "—" if not math.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def _bar(jobs: list[Callable[[], Any]], enabled: bool) -> Any:
    if not enabled:
        return jobs
    from tqdm.auto import tqdm

    return tqdm(jobs, desc="report", unit="figure", leave=False)
