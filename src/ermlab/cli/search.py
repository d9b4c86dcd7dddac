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
    schedule = "cosine" # the learning-rate schedule of `ermlab train --schedule`

    [space]             # what varies: lists of values, or distributions
    lr = {loguniform = [1e-4, 1e-1]}
    hidden = [[64], [128, 64]]

Each trial trains an MLP (model = "mlp") in one process. Not supported, and
refused: augment, adversarial, dp (and its keys), distributed (and its keys).
[space] varies the training keys (lr, hidden, optimizer, l2, ..., schedule);
the data and preprocessing ([base] dataset, preprocess, features, seed, ...)
are the same for every trial. The preprocessing is fitted on each split's
training rows (each fold's, with cv); with `features`, the image features and
what follows them are fitted once, on the whole training split.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SEARCH_KEYS = {"method", "n_iter", "cv", "n_jobs", "seed", "output"}
# Run keys fixed for the whole search: they define the data, not a trial.
FIXED = ("dataset", "data_path", "model", "preprocess", "features", "seed",
         "validation_fraction", "verify")


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
    if args.n_jobs is not None and (args.n_jobs == 0 or args.n_jobs < -1):
        raise ValueError(f"--n-jobs must be a positive integer or -1 (all cores); got "
                         f"{args.n_jobs}")
    raw_base = dict(document.get("base", {}))
    check_space_keys(args.spec, document["space"])
    config = runs.resolve(raw_base)
    check_supported(args.spec, raw_base, config)
    if config["model"] != "mlp":
        raise ValueError("search trains MLPs; set model = \"mlp\" in [base]")
    data = runs.prepare_data(config)
    check_data(config, data)
    base = {**runs.training_part(config), "schedule": config["schedule"]}
    space = selection.parse_space(document["space"])
    options = dict(base=base, seed=settings.get("seed", config["seed"]),
                   n_jobs=settings.get("n_jobs", 1) if args.n_jobs is None else args.n_jobs)
    train, options["preprocessing"], val = raw_splits(data)
    if settings.get("cv"):
        options["cv"] = settings["cv"]
    else:
        options["validation_data"] = (val, data.y_val)
    method = settings.get("method", "grid")
    if method == "grid":
        result = selection.grid_search(space, (train, data.y_train), **options)
    elif method == "random":
        n_iter = settings.get("n_iter", 10)
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
            raise ValueError(f"[search] n_iter must be an integer ≥ 1; got {n_iter!r}")
        result = selection.random_search(space, n_iter, (train, data.y_train), **options)
    else:
        raise ValueError(f"[search] method must be 'grid' or 'random'; got {method!r}")
    output = Path(settings.get("output", Path(args.spec).with_suffix(".csv").name))
    result.to_csv(output)
    for row in result.table:
        params = {k: row[k] for k in result.best_params}
        print(f"trial {row['trial']:3d}  score {row['mean_score']:.4f}  {params}")
    print(f"best score {result.best_score:.4f} with {result.best_params}; table: {output}")
    return 0


def _unsupported_keys() -> dict[str, tuple[str, ...]]:
    """Run keys of `ermlab train` that a search does not support, by the key that turns them
    on."""
    from ermlab import run as runs

    return {"augment": ("augment",), "adversarial": ("adversarial",), "dp": runs.PRIVACY_KEYS,
            "distributed": runs.STRATEGY_KEYS}


def check_supported(spec: str, raw_base: dict, config: dict) -> None:
    """Refuse [base] keys of `ermlab train` that a search would otherwise ignore."""
    groups = _unsupported_keys()
    given = [key for name, keys in groups.items() if config.get(name)
             for key in keys if key in raw_base]
    if given:
        raise ValueError(f"{spec}: search does not support {given} in [base] (it trains each "
                         "trial in one process, without augmentation, adversarial training, "
                         "differential privacy or distributed training): remove them, and "
                         "train the chosen configuration with `ermlab train`")


def check_space_keys(spec: str, space: Any) -> None:
    """Refuse [space] keys that are not a trial's to vary (a search's data is fixed)."""
    if not isinstance(space, dict):
        return
    unsupported = {key for keys in _unsupported_keys().values() for key in keys}
    bad = [key for key in space if key in unsupported]
    if bad:
        raise ValueError(f"{spec}: search does not support {bad} (augmentation, adversarial "
                         "training, differential privacy, distributed training): remove them "
                         "from [space]")
    fixed = [key for key in space if key in FIXED]
    if fixed:
        raise ValueError(f"{spec}: {fixed} cannot vary in [space]: the data and its "
                         "preprocessing are the same for every trial; set them in [base] "
                         "(one search per value)")


def raw_splits(data: Any) -> tuple[Any, Any, Any]:
    """(training inputs, preprocessing, validation inputs) for ``selection``: the raw rows and
    the run's preprocessing, which the search fits again on each split's training rows; or,
    for a preprocessing computed once (image features), its output and None."""
    from ermlab.data.rows import Rows

    if not data.preprocessor.per_batch:
        return data.x_train, None, data.x_val

    def raw(x: Rows) -> Rows:
        return Rows(x.source, x.index, x.cast)

    return raw(data.x_train), data.preprocessor, raw(data.x_val)
