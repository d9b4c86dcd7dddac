"""``ermlab gradcheck``: every built-in module, loss and regularizer against finite differences."""

from __future__ import annotations

import argparse


def add_commands(commands) -> None:
    parser = commands.add_parser("gradcheck", help="finite-difference check of every component")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="largest relative error that passes (default 1e-6)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random inputs and parameters (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import math

    from ermlab import gradcheck_suite

    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ValueError(f"--tolerance must be a number > 0; got {args.tolerance}")
    if args.seed < 0:
        raise ValueError(f"--seed must be an integer ≥ 0; got {args.seed}")
    results = gradcheck_suite.run(seed=args.seed)
    width = max(len(name) for _, name, _ in results)
    print(f"{'kind':<12} {'component':<{width}}  {'max rel. error':>14}  where")
    failures = 0
    for kind, name, result in results:
        ok = result.passed(args.tolerance)
        failures += not ok
        print(f"{kind:<12} {name:<{width}}  {result.max_rel_error:14.2e}  {result.where}"
              f"{'' if ok else '   FAIL'}")
    print(f"{len(results) - failures} passed, {failures} failed "
          f"(tolerance {args.tolerance:g}, float64, centred differences)")
    return 1 if failures else 0
