"""``ermlab search SPEC.toml``: grid or random search over hyperparameters.

    [search]            # how to search
    method = "random"   # or "grid"
    n_iter = 20         # random search only
    cv = 3              # k-fold cross-validation instead of the validation split
    n_jobs = 2          # parallel worker processes
    seed = 0
    output = "search.csv"

    [base]              # fixed settings: the run keys of `ermlab train` (dataset, epochs, ...)
    dataset = "digits"
    epochs = 30

    [space]             # what varies: lists of values, or distributions
    lr = {loguniform = [1e-4, 1e-1]}
    hidden = [[64], [128, 64]]
"""

from __future__ import annotations

import argparse
from pathlib import Path

SEARCH_KEYS = {"method", "n_iter", "cv", "n_jobs", "seed", "output"}


def add_commands(commands) -> None:
    parser = commands.add_parser("search", help="hyperparameter search from a TOML file",
                                 description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("spec", metavar="SPEC.toml",
                        help="the search: [search], [base] and [space] tables (see above)")
    parser.add_argument("--n-jobs", type=int, default=None, help="override [search] n_jobs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ermlab import run as runs
    from ermlab import selection
    from ermlab.cli.train import check_data, read_toml_document

    document = read_toml_document(args.spec)
    unknown = sorted(set(document) - {"search", "base", "space"})
    if unknown or "space" not in document:
        raise ValueError(f"{args.spec}: use the sections [search], [base] and [space] "
                         f"(missing [space]" if "space" not in document
                         else f"{args.spec}: unknown sections {unknown}; use [search], [base], "
                              "[space]")
    settings = dict(document.get("search", {}))
    bad = sorted(set(settings) - SEARCH_KEYS)
    if bad:
        raise ValueError(f"{args.spec}: unknown [search] keys {bad}; known: {sorted(SEARCH_KEYS)}")
    config = runs.resolve(dict(document.get("base", {})))
    if config["model"] != "mlp":
        raise ValueError("search trains MLPs; set model = \"mlp\" in [base]")
    data = runs.prepare_data(config)
    check_data(config, data)
    base = runs.training_part(config)
    space = selection.parse_space(document["space"])
    options = dict(base=base, seed=settings.get("seed", config["seed"]),
                   n_jobs=args.n_jobs or settings.get("n_jobs", 1))
    if settings.get("cv"):
        options["cv"] = settings["cv"]
    else:
        options["validation_data"] = (data.x_val, data.y_val)
    method = settings.get("method", "grid")
    if method == "grid":
        result = selection.grid_search(space, (data.x_train, data.y_train), **options)
    elif method == "random":
        n_iter = settings.get("n_iter", 10)
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"[search] n_iter must be an integer ≥ 1; got {n_iter!r}")
        result = selection.random_search(space, n_iter,
                                         (data.x_train, data.y_train), **options)
    else:
        raise ValueError(f"[search] method must be 'grid' or 'random'; got {method!r}")
    output = Path(settings.get("output", Path(args.spec).with_suffix(".csv").name))
    result.to_csv(output)
    for row in result.table:
        params = {k: row[k] for k in result.best_params}
        print(f"trial {row['trial']:3d}  score {row['mean_score']:.4f}  {params}")
    print(f"best score {result.best_score:.4f} with {result.best_params}; table: {output}")
    return 0
