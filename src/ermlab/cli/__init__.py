"""The ``ermlab`` command.

    ermlab train       train a network and write a run directory (default: an MLP on digits)
    ermlab evaluate    test metrics of a finished run
    ermlab predict     predictions of a run's model for new data
    ermlab search      grid or random hyperparameter search from a TOML file
    ermlab datasets    the datasets, where they are cached, and downloads
    ermlab gradcheck   finite-difference check of every built-in component
    ermlab lab         compare optimizers: benchmark problems, tuning protocol, reports
    ermlab compare     linear classifiers on pixels and image features vs MLP and CNN: a table

Errors are one line on stderr and exit code 2; ``--debug`` (before or after the
command) shows the traceback. ``python -m ermlab`` is the same command.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ermlab import __version__
from ermlab.cli import compare, datasets, evaluate, gradcheck, lab, search, train

EXIT_USAGE = 2
COMMANDS = (train, evaluate, datasets, search, gradcheck, lab, compare)
DEBUG_HELP = "show tracebacks on errors"


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line: "ermlab train: error: ... (see --help)"."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ermlab", description="Neural networks trained by empirical risk minimization.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"ermlab {__version__}",
                        help="print the version and exit")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        help="one of the commands below; `ermlab COMMAND --help` lists its options")
    for module in COMMANDS:
        module.add_commands(commands)
    for command in commands.choices.values():
        # SUPPRESS: a --debug given before the command is not reset by the command's default.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command)
            return args.run(args)
    except BrokenPipeError:  # e.g. `ermlab evaluate RUN | head -1`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, KeyError, OSError, MemoryError) as error:
        if args.debug:
            raise
        print(f"ermlab {args.command}: error: {_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ermlab {args.command}: interrupted", file=sys.stderr)
        return 130


def _show_warning(command: str, message: Warning | str, *args: object, **kwargs: object) -> None:
    """A library warning as one line: "ermlab train: warning: ..."."""
    print(f"ermlab {command}: warning: {message}", file=sys.stderr, flush=True)


def _message(error: BaseException) -> str:
    """One line for the user: the error's own words, or what to do about memory."""
    if isinstance(error, MemoryError):
        return (f"out of memory ({error or 'allocation failed'}); use a smaller model "
                "(--hidden), a smaller --batch-size, or a smaller dataset")
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(text).split())


if __name__ == "__main__":
    sys.exit(main())
