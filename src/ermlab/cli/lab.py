"""ermlab lab ...: the optimizer lab (ermlab.lab): benchmark problems, tuning, reports.

    ermlab lab run           tune every optimizer on every problem, rerun the best over seeds
    ermlab lab problems      the problems and optimizers the lab knows, with their settings
    ermlab lab summary       the metrics of a results folder (final/best test metrics, seeds)
    ermlab lab merge         unite results folders (a run in several keeps its longest copy)
    ermlab lab report        one self-contained HTML report of a study
    ermlab lab landscape     loss landscapes of a trained run directory or a lab problem
    ermlab lab trajectories  optimizer paths over a 2-D test function (PNG, GIF)
    ermlab lab boundary      decision boundaries: hidden units × L2 on a 2-D data set
    ermlab lab table         the optimizers' comparison table (Markdown or HTML)

summary and merge also read DeepOBS's result files (their published baselines).
"""

# Each lab subcommand lives in a function ``add_<name>(subcommands)``; the report and
# picture subcommands come from ``ermlab.cli.lab_report`` (``add_commands(subcommands)``).

from __future__ import annotations

import argparse
from pathlib import Path

from ermlab.cli import lab_report

DEBUG_HELP = "show tracebacks on errors"


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "lab", help="compare optimizers: benchmark problems, tuning protocol, reports",
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    subcommands = parser.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND",
                                        help="`ermlab lab LAB_COMMAND --help` lists its options")
    for add in (add_run, add_problems, add_summary, add_merge):
        add(subcommands)
    lab_report.add_commands(subcommands)
    for command in subcommands.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)


def add_run(subcommands) -> None:
    parser = subcommands.add_parser(
        "run", help="tune optimizers on problems and rerun the best setting over seeds",
        description="Same tuning budget for every optimizer (learning rate on a log grid or "
                    "drawn log-uniformly, optionally momentum/β₁), scored on a validation "
                    "split; the best setting is rerun over --seeds seeds in parallel processes. "
                    "One JSON file per run under --out; a rerun skips finished runs.")
    parser.add_argument("--problems", default="logreg,mlp,fmnist_2c2d",
                        help="comma-separated problem names (`ermlab lab problems`), "
                             "or a TOML file describing your own problem")
    parser.add_argument("--optimizers", default="sgd,momentum,nesterov,adam,adagrad,rmsprop",
                        help="comma-separated optimizer names (`ermlab lab problems`)")
    parser.add_argument("--budget", default="small",
                        help="problem size: full (published settings), small (the suite "
                             "fits ~30 min on 2 cores) or tiny (seconds)")
    parser.add_argument("--epochs", type=int, default=None, help="override every problem's epochs")
    parser.add_argument("--search", choices=("grid", "random"), default="grid",
                        help="log-grid or random (log-uniform) search of the learning rate")
    parser.add_argument("--trials", type=int, default=5,
                        help="tuning budget: settings tried per optimizer and problem")
    parser.add_argument("--lr-range", default="1e-4,1", metavar="LOW,HIGH",
                        help="learning-rate interval searched")
    parser.add_argument("--tune-momentum", action="store_true",
                        help="also search momentum (SGD variants) or β₁ (Adam variants) "
                             "in [0.5, 0.99]")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the best setting")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="worker processes (default: the CPUs available)")
    parser.add_argument("--data-path", default=None,
                        help="folder with the IDX files (train-images-idx3-ubyte.gz, ...) of "
                             "an MNIST-format data set")
    parser.add_argument("--out", default="lab-results", help="results folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def add_problems(subcommands) -> None:
    parser = subcommands.add_parser("problems", help="the lab's problems and optimizers")
    parser.add_argument("--budget", default="full", help="full, small or tiny")
    parser.set_defaults(run=list_problems)


def add_summary(subcommands) -> None:
    parser = subcommands.add_parser("summary", help="metrics of a results folder")
    parser.add_argument("results", help="the folder `ermlab lab run --out` wrote (its runs "
                        "are read at the epochs of its study.json)")
    parser.add_argument("--baselines", action="append", default=[], metavar="FOLDER",
                        help="also summarize these folders (e.g. DeepOBS's published result "
                             "files: their optimizers appear as deepobs-sgd, deepobs-adam ...); "
                             "repeatable")
    parser.add_argument("--target", type=float, default=None,
                        help="test accuracy (or loss, for problems without accuracy) to reach, "
                             "for epochs and seconds to target")
    parser.set_defaults(run=summary)


def add_merge(subcommands) -> None:
    parser = subcommands.add_parser("merge", help="unite results folders into one")
    parser.add_argument("sources", nargs="+", help="results folders to read")
    parser.add_argument("--into", required=True, help="the folder to write (created if needed)")
    parser.set_defaults(run=merge)


def run(args: argparse.Namespace) -> int:
    from ermlab.lab import protocol

    study = protocol.Study.from_cli(args)
    summary_lines = study.run(progress=not args.no_progress)
    for line in summary_lines:
        print(line)
    return 0


def list_problems(args: argparse.Namespace) -> int:
    from ermlab.lab import problems, protocol

    for name in problems.names():
        print(problems.describe(problems.get(name, budget=args.budget)))
    print("optimizers: " + ", ".join(protocol.optimizer_names()))
    return 0


def summary(args: argparse.Namespace) -> int:
    from ermlab.lab import metrics, results

    for folder in args.baselines:  # before reading anything: a mistyped path is named
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--baselines folder {folder} does not exist (or is not a "
                                    "folder); give the folder of DeepOBS's result files or of "
                                    "`ermlab lab run --out`")
    records = results.load_all(args.results, epochs=results.study_epochs(args.results))
    if not records:
        raise ValueError(f"{args.results} holds no run files; run `ermlab lab run --out "
                         f"{args.results}` first, or give the folder it wrote")
    for folder in args.baselines:
        baselines = results.load_all(folder)
        if not baselines:
            raise ValueError(f"--baselines folder {folder} holds no run files; give the folder "
                             "of DeepOBS's result files or of `ermlab lab run --out`")
        records += baselines
    records = results.unique(records)  # a run in several folders counts once, as in merge
    for line in metrics.summary_lines(records, target=args.target):
        print(line)
    return 0


def merge(args: argparse.Namespace) -> int:
    from ermlab.lab import results

    for source in args.sources:  # before creating anything: a mistyped source is named
        results.run_files(source)
    results.make_folder(args.into, "the --into folder", "give --into a folder path (it is "
                        "created if needed)")
    counts = results.merge(args.sources, args.into)
    print(f"{counts['copied']} runs copied into {args.into}, {counts['kept']} already there "
          "with as many epochs")
    return 0
