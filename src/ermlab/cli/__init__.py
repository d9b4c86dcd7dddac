"""The ``ermlab`` command.

    ermlab train       train a network and write a run directory (default: an MLP on digits)
    ermlab evaluate    test metrics of a finished run
    ermlab predict     predictions of a run's model for new data
    ermlab search      grid or random hyperparameter search from a TOML file
    ermlab datasets    the datasets, where they are cached, and downloads
    ermlab gradcheck   finite-difference check of every built-in component

Errors are one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ermlab.cli import datasets, evaluate, gradcheck, search, train

EXIT_USAGE = 2
COMMANDS = (train, evaluate, datasets, search, gradcheck)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ermlab", description="Neural networks trained by empirical risk minimization.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # e.g. `ermlab evaluate RUN | head -1`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, KeyError, OSError) as error:
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"ermlab {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ermlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
