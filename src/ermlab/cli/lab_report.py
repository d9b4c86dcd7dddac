"""``ermlab lab report | landscape | trajectories | boundary | table``: the lab's pictures.

    ermlab lab report RESULTS      one self-contained HTML report of a study
    ermlab lab landscape RUN       loss landscapes of a trained run directory
    ermlab lab trajectories        optimizer paths over a 2-D test function (PNG, GIF)
    ermlab lab boundary            decision boundaries: hidden units × L2 on a 2-D data set
    ermlab lab table               the optimizers' comparison table (Markdown)

Each writes its files, then prints one line per file with the seconds it took.
Registered by ``ermlab.cli.lab`` (``add_commands``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_commands(subcommands) -> None:
    for add in (add_report, add_landscape, add_trajectories, add_boundary, add_table):
        add(subcommands)


def add_report(subcommands) -> None:
    parser = subcommands.add_parser(
        "report", help="one self-contained HTML report of a study (`ermlab lab run --out`)",
        description="Summary table, learning curves with seed bands, learning-rate "
                    "sensitivity, SGD's noise, the performance profile, optimizer trajectories "
                    "(PNG and GIF), the optimizers' comparison table and each figure's wall "
                    "time, in one HTML file with the images embedded (works offline).")
    parser.add_argument("results", help="the folder `ermlab lab run --out` wrote")
    parser.add_argument("--output", default=None,
                        help="the HTML file (default: RESULTS/report.html)")
    parser.add_argument("--target", type=float, default=None,
                        help="test accuracy (loss for problems without) to reach: adds time to "
                             "target and a time-to-target performance profile")
    parser.add_argument("--no-trajectories", action="store_true",
                        help="leave out the trajectory pictures")
    parser.add_argument("--no-animation", action="store_true", help="leave out the GIF")
    parser.add_argument("--steps", type=int, default=150,
                        help="trajectory steps at the saddle (twice as many on Beale's function)")
    parser.add_argument("--boundary", action="store_true",
                        help="add the decision-boundary grid (trains 9 small networks)")
    parser.add_argument("--landscape", action="append", default=[], metavar="RUN",
                        help="add the loss landscapes of this run directory (repeatable)")
    parser.add_argument("--no-seeds-landscape", action="store_true",
                        help="leave out the loss landscape of the seeds' 4-layer ReLU net")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=report)


def add_landscape(subcommands) -> None:
    parser = subcommands.add_parser(
        "landscape", help="loss landscapes of a run directory (interpolation, random slices)",
        description="The interpolation slice from the initial to the trained weights "
                    "(Goodfellow et al. 2015) and 1-D/2-D random-direction slices with filter "
                    "normalization (Li et al. 2018) of the training loss, as PNG files; of a "
                    "run directory, or of a lab learning problem trained here (relu4: the "
                    "seeds' 4-layer ReLU network).")
    parser.add_argument("run_dir", metavar="RUN",
                        help="a folder `ermlab train` wrote, or a lab learning problem name")
    parser.add_argument("--output", default=None,
                        help="folder for the PNG files (default: RUN/landscape, or "
                             "lab-figures/landscape_PROBLEM)")
    parser.add_argument("--optimizer", default="adam:lr=0.001",
                        help="for a problem: the optimizer that trains it (NAME[:key=value])")
    parser.add_argument("--epochs", type=int, default=None,
                        help="for a problem: epochs (default: the budget's)")
    parser.add_argument("--budget", default="small", help="for a problem: full, small or tiny")
    parser.add_argument("--examples", type=int, default=1000,
                        help="examples of the split the loss is measured on")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="train",
                        help="for a run directory: the split the loss is measured on")
    parser.add_argument("--points", type=int, default=41, help="points of each 1-D slice")
    parser.add_argument("--grid", type=int, default=21,
                        help="points per side of the 2-D slice (0: no 2-D slice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=landscape)


def add_trajectories(subcommands) -> None:
    from ermlab.lab import trajectories as tr

    parser = subcommands.add_parser(
        "trajectories", help="optimizer paths over a 2-D test function, PNG and animated GIF",
        description="Every optimizer starts from the function's start point; its iterates "
                    "are drawn over the contour lines. Optimizers as NAME[:key=value...], "
                    "e.g. sgd:lr=0.001, momentum:lr=0.001, adam:lr=0.05, lbfgs:max_iter=1.")
    parser.add_argument("--function", default="beale",
                        help="rosenbrock, beale, booth, himmelblau, saddle, monkey_saddle or "
                             "quadratic (default beale)")
    parser.add_argument("--optimizers", default=None,
                        help="comma-separated specs (default: "
                             f"{','.join(tr.CONTOUR_OPTIMIZERS)}; at a saddle "
                             f"{','.join(tr.SADDLE_OPTIMIZERS)})")
    parser.add_argument("--steps", type=int, default=300, help="steps of every optimizer")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="σ of Gaussian gradient noise (the stochastic variant)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gradient noise")
    parser.add_argument("--gif", action="store_true", help="also write the animated GIF")
    parser.add_argument("--every", type=int, default=None,
                        help="steps per GIF frame (default: about 60 frames)")
    parser.add_argument("--output", default="lab-figures", help="folder for the files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=trajectories)


def add_boundary(subcommands) -> None:
    parser = subcommands.add_parser(
        "boundary", help="decision boundaries of small networks: hidden units × L2 strength",
        description="The seeds' ConvNetJS figure: an MLP 2 → h → 2 trained on a 2-D data set "
                    "for every h and λ, each panel its decision regions and the data.")
    parser.add_argument("--dataset", choices=("spirals", "moons", "circles"), default="spirals",
                        help="the 2-D data set (ermlab.data.toy)")
    parser.add_argument("--n", type=int, default=200, help="number of points")
    parser.add_argument("--hidden", default="2,8,32", help="hidden-unit counts (columns)")
    parser.add_argument("--l2", default="0,0.0001,0.001", help="L2 strengths λ (rows)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs of every network")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, the initialization and the batch order")
    parser.add_argument("--output", default="lab-figures", help="folder for the PNG file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=boundary)


def add_table(subcommands) -> None:
    parser = subcommands.add_parser(
        "table", help="the optimizers' comparison table, from the traits each one declares")
    parser.add_argument("--html", action="store_true", help="HTML instead of Markdown")
    parser.set_defaults(run=table)


# -- the commands ----------------------------------------------------------------------------


def report(args: argparse.Namespace) -> int:
    from ermlab.lab import report as lab_report

    path, built = lab_report.build(
        args.results, args.output, trajectories=not args.no_trajectories,
        animation=not args.no_animation, boundary=args.boundary, landscapes=args.landscape,
        seeds_landscape=not args.no_seeds_landscape, target=args.target, steps=args.steps,
        progress=not args.no_progress)
    for figure in built.figures:
        print(f"{figure.seconds:8.2f} s  {figure.section}: {figure.title}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(built.figures)} figures)")
    return 0


def landscape(args: argparse.Namespace) -> int:
    import numpy

    from ermlab.lab import landscape as lab_landscape

    _positive(args, "points", "examples")
    if args.grid < 0 or args.grid == 1:
        raise ValueError(f"--grid is 0 (no 2-D slice) or ≥ 2 points per side; got {args.grid}")
    run_dir = Path(args.run_dir)
    if run_dir.is_dir() or not _is_problem(args.run_dir):
        output = Path(args.output) if args.output else run_dir / "landscape"
        scene, seconds = _timed(lambda: lab_landscape.from_run(run_dir, args.examples,
                                                               args.split, args.seed))
        print(f"{seconds:8.2f} s  loaded {run_dir} ({args.examples} {args.split} examples "
              "at most)")
    else:
        if args.split != "train":
            raise ValueError("--split applies to run directories; a problem's landscape is "
                             "of its training loss")
        if args.epochs is not None:
            _positive(args, "epochs")
        output = Path(args.output or f"lab-figures/landscape_{args.run_dir}")
        scene, seconds = _timed(lambda: lab_landscape.from_problem(
            args.run_dir, args.optimizer, args.epochs, args.budget, args.examples, args.seed,
            progress=not args.no_progress))
        print(f"{seconds:8.2f} s  trained {args.run_dir} ({args.budget} budget) with "
              f"{args.optimizer}")
    progress = not args.no_progress
    label = f"{args.split} loss"
    _make_folder(output)

    def interpolation():
        alphas, values = scene.interpolation(numpy.linspace(-0.5, 1.5, args.points), progress)
        return lab_landscape.line_figure(alphas, {label: values},
                                         title=f"{run_dir.name}: θ₀ → θ₁")

    def slice_1d():
        alphas, values = scene.slice_1d(alphas=numpy.linspace(-1, 1, args.points),
                                        seed=args.seed, progress=progress)
        return lab_landscape.line_figure(alphas, {label: values}, marks=(0.0,),
                                         xlabel="α  (θ₁ + αd, d filter-normalized)",
                                         title=f"{run_dir.name}: a random direction")

    def slice_2d():
        grid = numpy.linspace(-1, 1, args.grid)
        return lab_landscape.contour_figure(*scene.slice_2d(alphas=grid, seed=args.seed,
                                                            progress=progress),
                                            title=run_dir.name)

    figures = [("interpolation.png", interpolation), ("random_1d.png", slice_1d)]
    figures += [("random_2d.png", slice_2d)] if args.grid else []
    for name, make in figures:
        _write(make, output / name)
    return 0


def trajectories(args: argparse.Namespace) -> int:
    from ermlab.lab import trajectories as tr

    _positive(args, "steps")
    if args.every is not None:
        _positive(args, "every")
    saddle = "saddle" in args.function
    specs = (args.optimizers.split(",") if args.optimizers
             else tr.SADDLE_OPTIMIZERS if saddle else tr.CONTOUR_OPTIMIZERS)
    found, seconds = _timed(lambda: tr.paths(args.function, [s.strip() for s in specs if s],
                                             args.steps, noise=args.noise, seed=args.seed))
    print(f"{seconds:8.2f} s  {len(found)} trajectories of {args.steps} steps on {args.function}")
    output = Path(args.output)
    _make_folder(output)
    stem = args.function + (f"_noise{args.noise:g}" if args.noise else "")
    _write(lambda: tr.figure(args.function, found), output / f"{stem}.png")
    if args.gif:
        every = args.every or max(1, args.steps // 60)
        gif = output / f"{stem}.gif"
        frames, seconds = _timed(lambda: tr.animate(args.function, found, gif, every=every,
                                                    progress=not args.no_progress))
        print(f"{seconds:8.2f} s  wrote {gif} ({frames} frames)")
    return 0


def boundary(args: argparse.Namespace) -> int:
    from ermlab.lab import boundary as lab_boundary

    _positive(args, "epochs")
    hidden = _numbers(args.hidden, int, "--hidden")
    strengths = _numbers(args.l2, float, "--l2")
    x, y = lab_boundary.dataset(args.dataset, args.n, seed=args.seed)
    output = Path(args.output)
    _make_folder(output)
    _write(lambda: lab_boundary.figure(
        lab_boundary.grid(x, y, hidden, strengths, epochs=args.epochs, seed=args.seed,
                          progress=not args.no_progress), x, y,
        f"{args.dataset}: hidden units (→) × λ (↓)"), output / f"boundary_{args.dataset}.png")
    return 0


def table(args: argparse.Namespace) -> int:
    from ermlab.lab import table as lab_table

    rows = lab_table.rows()
    print(lab_table.html(rows) if args.html else lab_table.markdown(rows))
    return 0


# -- helpers ---------------------------------------------------------------------------------


def _timed(make):
    start = time.perf_counter()
    result = make()
    return result, time.perf_counter() - start


def _write(make, path: Path) -> None:
    """Draw a figure and save it as PNG; print the file and the seconds both took."""
    from ermlab.lab import _mpl

    start = time.perf_counter()
    _mpl.save_png(make(), path)
    print(f"{time.perf_counter() - start:8.2f} s  wrote {path}", flush=True)


def _make_folder(output: Path) -> None:
    from ermlab.lab import results

    results.make_folder(output, "the --output folder", "give --output a folder path (it is "
                        "created if needed)")


def _is_problem(name: str) -> bool:
    from ermlab.lab.problems.catalog import PROBLEMS

    return name in PROBLEMS


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be ≥ 1; got {getattr(args, name)}")


def _numbers(text: str, kind: type, flag: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} is a comma-separated list of numbers, e.g. 2,8,32; "
                         f"got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} needs at least one value")
    return values

