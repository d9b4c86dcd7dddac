"""Model selection: grid search, random search and k-fold cross-validation.

Each trial trains one configuration (an ``ermlab.config`` dict) and scores it
on held-out data; the search keeps the configuration with the best mean score
(Bergstra & Bengio 2012, "Random search for hyper-parameter optimization"):

    θ̂(c) = argmin_θ  R̂_train(θ; c)       (early stopping on the validation loss)
    ĉ     = argmax_c  (1/K) Σ_k score(θ̂_k(c); validation fold k)

Validation is a stratified hold-out split (``validation_fraction``), explicit
``validation_data``, or ``cv=K`` folds (``StratifiedKFold`` for labels, ``KFold``
for real targets); the splits are drawn once from ``seed`` and shared by all
trials, so configurations are compared on the same data. scikit-learn does the
enumeration and sampling (``ParameterGrid``, ``ParameterSampler``) and the
splitting; ermlab does the training.

Randomness: trial i (and its fold k) draws its initialization and mini-batch
order from ``SeedSequence(seed).spawn(n_trials)[i].spawn(K)[k]``, so a trial's
result depends on its configuration, its position i in the list of candidates
and ``seed`` — not on ``n_jobs`` nor on the other candidates' values (but
adding or removing a candidate before it changes its seed). Trials run
single-threaded (BLAS limited to one thread by ``threadpoolctl``) in the main
process or in ``n_jobs`` worker processes (joblib's loky backend: no
``if __name__ == "__main__"`` guard needed, large arrays shared by memory
mapping), so sequential and parallel searches give the same table.

Scores are "higher is better": ``accuracy`` (classification losses) or
``neg_loss`` = −(validation loss, unregularized) for regression losses. A trial
whose training diverges (``DivergenceGuard`` raises at the first non-finite
loss) or fails with another ``ValueError`` gets a NaN score and its error
message in the table; it never wins.

A trial's config may also name a learning-rate ``schedule`` (the spec of
``ermlab train --schedule``, e.g. ``"cosine"`` or ``"exponential:0.9"``), in
``base`` or as a searched parameter.

With ``preprocessing`` (an unfitted ``ermlab.data.preprocessing`` transform,
e.g. ``MeanImage()`` or ``Standardize()``), the data are raw inputs and each
split fits its own copy of the preprocessing on its training rows only, then
applies it to its training and validation rows — as scikit-learn's
``Pipeline`` inside ``GridSearchCV`` — so no statistic of a validation fold
leaks into training.

Differences from scikit-learn's ``GridSearchCV``: there is no refit on the
full data (``best_config`` is returned for you to train), and the early-
stopping monitor of each trial is its own validation split.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from ermlab import config as configs
from ermlab.backend import resolve_dtype, to_numpy

SCORINGS = ("accuracy", "neg_loss")
# The columns of a search table besides the searched parameters (and ``split{k}_score``):
# no parameter may take one of these names.
RESULT_COLUMNS = ("trial", "mean_score", "std_score", "epochs_trained", "fit_time", "error")


# -- distributions -----------------------------------------------------------


def uniform(low: float, high: float) -> Any:
    """U(low, high) as a frozen ``scipy.stats`` distribution (for ``random_search``)."""
    from scipy import stats

    low, high = _bounds("uniform", low, high)
    return stats.uniform(loc=low, scale=high - low)


def loguniform(low: float, high: float) -> Any:
    """Log-uniform on [low, high]: log x ~ U(log low, log high), for λ and learning rates."""
    from scipy import stats

    low, high = _bounds("loguniform", low, high)
    if low <= 0:
        raise ValueError(f"loguniform needs 0 < low < high; got low={low}")
    return stats.loguniform(low, high)


def randint(low: int, high: int) -> Any:
    """Integers uniform on {low, …, high − 1} (``scipy.stats.randint``)."""
    from scipy import stats

    if int(low) >= int(high):
        raise ValueError(f"randint needs low < high; got {low} and {high}")
    return stats.randint(int(low), int(high))


DISTRIBUTIONS = {"uniform": uniform, "loguniform": loguniform, "randint": randint}


def parse_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """A search space from plain data (TOML/JSON): ``{"loguniform": [1e-4, 1e-1]}`` becomes
    ``loguniform(1e-4, 1e-1)``; lists of values stay lists. Example TOML::

        hidden = [[64], [128, 64]]
        lr = {loguniform = [1e-4, 1e-1]}
        momentum = {uniform = [0.5, 0.99]}
    """
    parsed = {}
    for key, value in _check_space_type(space).items():
        if isinstance(value, Mapping):
            if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
                raise ValueError(
                    f"space[{key!r}] = {dict(value)!r}: a distribution is one of "
                    f"{{{', '.join(f'{name} = [low, high]' for name in DISTRIBUTIONS)}}}"
                )
            (name, bounds), = value.items()
            if not isinstance(bounds, Sequence) or len(bounds) != 2:
                raise ValueError(f"space[{key!r}]: {name} takes [low, high]; got {bounds!r}")
            value = DISTRIBUTIONS[name](*bounds)
        parsed[key] = value
    return parsed


# -- results -----------------------------------------------------------------


@dataclass
class SearchResult:
    """One row per trial (``table``) and the winner.

    Row keys: ``trial``, the searched parameters (every key of every candidate;
    None where a candidate lacks it, as with a list of grids), ``mean_score``,
    ``std_score``, ``split{k}_score`` per validation split (with more than one),
    ``epochs_trained`` (epochs actually trained, after early stopping, mean over
    the splits; a searched ``epochs`` keeps its own column), ``fit_time``
    (seconds, all splits) and ``error`` (empty unless it failed). No parameter
    may be named like these result columns (``RESULT_COLUMNS``).
    ``candidates`` holds each trial's own parameters, ``best_config`` the full
    config (base settings included) of the best row.
    """

    table: list[dict[str, Any]]
    best_index: int
    best_config: dict[str, Any]
    scoring: str
    params: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_score(self) -> float:
        return self.table[self.best_index]["mean_score"]

    @property
    def best_params(self) -> dict[str, Any]:
        """The winning candidate's own parameters (as scikit-learn's ``best_params_``)."""
        return dict(self.candidates[self.best_index])

    @property
    def split_scores(self) -> list[float]:
        """The per-split scores of the best trial (the k scores of ``cross_validate``)."""
        row = self.table[self.best_index]
        return [row[key] for key in row if key.startswith("split") and key.endswith("_score")]

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the table; lists and tuples (e.g. ``hidden``) as JSON, like ``[128, 64]``,
        and None (a parameter the trial's candidate lacks) as an empty cell.

        The file is replaced all at once: a failure leaves the previous one intact.
        """
        from ermlab.training.checkpoint import atomic_write_bytes

        columns = list(dict.fromkeys(key for row in self.table for key in row))
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        for row in self.table:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
        atomic_write_bytes(path, text.getvalue().encode("utf-8"), durable=False)


# -- the pipeline of one trial ----------------------------------------------


def build_and_train(
    config: Mapping[str, Any],
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    seed: int | numpy.random.SeedSequence = 0,
    scoring: str | None = None,
    n_outputs: int | None = None,
) -> float:
    """Build ``config``, train it with early stopping on (x_val, y_val), return the score.

    ``n_outputs`` defaults to the number of classes (max label + 1) for
    classification losses and the number of target columns otherwise.
    """
    classify = configs.is_classification(config)
    x_train, y_train = _data((x_train, y_train), classify)
    x_val, y_val = _data((x_val, y_val), classify)
    score, _ = _train_and_score(config, x_train, y_train, x_val, y_val, seed, scoring, n_outputs)
    return score


def _train_and_score(config, x_train, y_train, x_val, y_val, seed, scoring, n_outputs):
    """Train on flat float arrays; (score, epochs run)."""
    from ermlab.training import DivergenceGuard

    full = _validate(config)
    scoring = _scoring(full, scoring)
    if n_outputs is None:
        n_outputs = _n_outputs(full, y_train, y_val)
    seed = seed if isinstance(seed, numpy.random.SeedSequence) else numpy.random.SeedSequence(seed)
    init_rng, fit_rng = (numpy.random.default_rng(s) for s in _children(seed, 2))
    trainer = configs.build(_training(full), x_train.shape[1], n_outputs, rng=init_rng,
                            early_stopping=True, callbacks=[DivergenceGuard(raise_error=True)])
    trainer.callbacks.extend(_schedule_callbacks(full, trainer.optimizer))
    trainer.fit(x_train, y_train, epochs=full["epochs"], batch_size=full["batch_size"],
                validation_data=(x_val, y_val), rng=fit_rng)
    scores = trainer.predict_scores(x_val)
    if not numpy.isfinite(scores).all():
        raise FloatingPointError("the validation scores are not finite: training diverged; "
                                 "lower the learning rate")
    if scoring == "accuracy":
        score = float(numpy.mean(scores.argmax(axis=1) == to_numpy(y_val)))
    else:
        score = -float(configs.build_loss(full).forward(scores, to_numpy(y_val)))
    return score, trainer.epoch


# -- searches ----------------------------------------------------------------


def grid_search(
    space: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
    data: Any,
    **options: Any,
) -> SearchResult:
    """Train every combination of ``space`` (``sklearn.model_selection.ParameterGrid``).

    Args:
        space: ``{"hidden": [[32], [64, 32]], "lr": [0.01, 0.1]}`` (or a list of such
            dicts); every value a non-empty list.
        data: ``(x, y)`` or an ``ermlab.data.Dataset`` (its training split is searched;
            the test split is never touched).
        **options: ``base`` (config shared by all trials), ``validation_data``,
            ``validation_fraction`` (0.2), ``cv`` (K folds instead of a hold-out split),
            ``preprocessing`` (fitted per split), ``scoring``, ``n_jobs`` (1; −1 for all
            cores), ``seed`` (0). See ``search``.

    Example:
        >>> result = grid_search({"lr": [1e-3, 1e-1]}, (x, y), base={"epochs": 20})
        >>> result.best_config, result.best_score; result.to_csv("search.csv")
    """
    from sklearn.model_selection import ParameterGrid

    spaces = [space] if isinstance(space, Mapping) else list(space)
    if not spaces:
        raise ValueError("grid_search needs a non-empty space, e.g. {'lr': [0.01, 0.1]}")
    for one in spaces:
        for key, values in _check_space_type(one).items():
            if hasattr(values, "rvs"):
                raise ValueError(
                    f"space[{key!r}] is a distribution; grid_search needs lists of values "
                    "(use random_search for distributions)"
                )
            _check_values(key, values)
    return search(list(ParameterGrid(spaces)), data, **options)


def random_search(
    space: Mapping[str, Any], n_iter: int, data: Any, **options: Any
) -> SearchResult:
    """Train ``n_iter`` configurations sampled from ``space`` (``ParameterSampler``).

    Values are lists (sampled uniformly) or distributions with ``rvs`` —
    ``uniform(a, b)``, ``loguniform(a, b)``, ``randint(a, b)`` or any
    ``scipy.stats`` frozen distribution. Samples come from ``seed`` only.
    Options as in ``grid_search``.
    """
    from sklearn.model_selection import ParameterSampler

    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"random_search needs n_iter ≥ 1 (an integer); got {n_iter!r}")
    space = _check_space_type(space)
    for key, values in space.items():
        if not hasattr(values, "rvs"):
            _check_values(key, values)
    seed = options.get("seed", 0)
    sampler_seed = int(numpy.random.SeedSequence(seed).generate_state(1)[0])
    samples = list(ParameterSampler(space, n_iter, random_state=sampler_seed))
    samples = [{key: _plain(value) for key, value in sample.items()} for sample in samples]
    return search(samples, data, **options)


def cross_validate(
    config: Mapping[str, Any], x: Any, y: Any, k: int = 5, **options: Any
) -> SearchResult:
    """K-fold cross-validation of one config: a one-row ``SearchResult`` whose
    ``split_scores`` are the k validation scores (``mean_score`` their mean)."""
    if "cv" in options:
        raise ValueError("cross_validate takes the number of folds as k, not cv")
    return search([{}], (x, y), base=config, cv=k, **options)


def search(
    candidates: Sequence[Mapping[str, Any]],
    data: Any,
    base: Mapping[str, Any] | None = None,
    validation_data: tuple[Any, Any] | None = None,
    validation_fraction: float = 0.2,
    cv: int | None = None,
    scoring: str | None = None,
    n_jobs: int = 1,
    seed: int = 0,
    preprocessing: Any = None,
) -> SearchResult:
    """Train each candidate (``{**base, **candidate}``) and tabulate the scores.

    Args:
        candidates: parameter dicts, e.g. from ``ParameterGrid``.
        data: ``(x, y)`` or an ``ermlab.data.Dataset`` (training split).
        base: config entries shared by all trials (see ``ermlab.config``; also
            ``schedule``, a learning-rate schedule spec of ``ermlab train``).
        validation_data: explicit ``(x_val, y_val)``; else ``cv`` folds, else a
            stratified hold-out of ``validation_fraction`` of ``data``.
        preprocessing: an unfitted transform (``fit``/``transform``, e.g.
            ``ermlab.data.preprocessing.MeanImage()``) for raw ``data``: a copy is
            fitted on each split's training rows and applied to its training and
            validation rows. Each trial applies it again to its split's rows.
        scoring: ``accuracy`` or ``neg_loss``; default by the loss.
        n_jobs: worker processes (1: in this process; −1: one per core).
        seed: root of the splits, the samples and every trial's seeds (trial i's
            by its position i in ``candidates``; see the module docstring).
    """
    base = dict(base or {})
    trials = [{**base, **candidate} for candidate in candidates]
    if not trials:
        raise ValueError("the search has no candidates")
    keys = list(dict.fromkeys(key for candidate in candidates for key in candidate))
    _check_names(keys)
    fulls = [_validate(trial) for trial in trials]
    scorings = {_scoring(full, scoring) for full in fulls}
    classification = {full["loss"] in configs.CLASSIFICATION_LOSSES for full in fulls}
    if len(classification) > 1:
        raise ValueError("a search cannot mix classification and regression losses")
    classify = classification.pop()
    flat = preprocessing is None
    x, y = _data(data, classify, flat)
    problem = _problem(x, y, classify, validation_data, validation_fraction, cv, seed, scoring,
                       flat)
    if not flat:
        problem = _fitted(problem, preprocessing)
    seeds = _children(numpy.random.SeedSequence(seed), len(trials))
    jobs = _n_jobs(n_jobs, len(trials))
    if jobs == 1:
        outcomes = [_trial(problem, trial, s) for trial, s in zip(trials, seeds)]
    else:
        from joblib import Parallel, delayed

        outcomes = Parallel(n_jobs=jobs, backend="loky")(
            delayed(_trial)(problem, trial, s) for trial, s in zip(trials, seeds))
    own = [{key: _plain(value) for key, value in candidate.items()} for candidate in candidates]
    table = [
        {"trial": i, **{key: params.get(key) for key in keys}, **outcome}
        for i, (params, outcome) in enumerate(zip(own, outcomes))
    ]
    finite = [i for i, row in enumerate(table) if math.isfinite(row["mean_score"])]
    if not finite:
        raise ValueError(f"every trial failed; the first: {table[0]['error']}")
    best = max(finite, key=lambda i: table[i]["mean_score"])
    return SearchResult(table, best, fulls[best], scorings.pop(), keys, own)


# -- trials, in this process or a worker -------------------------------------


@dataclass(frozen=True)
class _Problem:
    x: numpy.ndarray
    y: numpy.ndarray
    splits: tuple[tuple[numpy.ndarray, numpy.ndarray], ...]
    n_outputs: int
    scoring: str | None
    preprocessings: tuple[Any, ...] = ()


def _fitted(problem: _Problem, preprocessing: Any) -> _Problem:
    """``problem`` with one copy of ``preprocessing`` per split, fitted on its training rows."""
    import copy
    from dataclasses import replace

    fitted = tuple(copy.deepcopy(preprocessing).fit(problem.x[train])
                   for train, _ in problem.splits)
    return replace(problem, preprocessings=fitted)


def _rows(problem: _Problem, k: int, index: numpy.ndarray) -> numpy.ndarray:
    """The rows ``index`` of split ``k``, through that split's preprocessing, as flat floats."""
    x = problem.x[index]
    if problem.preprocessings:
        x = to_numpy(problem.preprocessings[k].transform(x))
    return numpy.asarray(x).reshape(len(x), -1).astype(resolve_dtype(), copy=False)


def _trial(problem: _Problem, config: dict[str, Any],
           seed: numpy.random.SeedSequence) -> dict[str, Any]:
    """Train ``config`` on every split; mean/std of the scores, epochs trained, time, error."""
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    scores, epochs, error = [], [], ""
    with threadpool_limits(limits=1), numpy.errstate(over="ignore", invalid="ignore"):
        fold_seeds = _children(seed, len(problem.splits))
        for k, ((train, val), fold_seed) in enumerate(zip(problem.splits, fold_seeds)):
            try:
                score, epoch = _train_and_score(
                    config, _rows(problem, k, train), problem.y[train],
                    _rows(problem, k, val), problem.y[val],
                    fold_seed, problem.scoring, problem.n_outputs)
            except (ValueError, FloatingPointError, OverflowError) as failure:
                score, epoch, error = math.nan, math.nan, f"{type(failure).__name__}: {failure}"
            scores.append(score)
            epochs.append(epoch)
    outcome = {"mean_score": float(numpy.mean(scores)), "std_score": float(numpy.std(scores))}
    if len(scores) > 1:
        outcome.update({f"split{k}_score": s for k, s in enumerate(scores)})
    outcome.update({"epochs_trained": float(numpy.mean(epochs)),
                    "fit_time": time.perf_counter() - start, "error": error})
    return outcome


def _problem(x, y, classify, validation_data, validation_fraction, cv, seed,
             scoring, flat=True) -> _Problem:
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    n = len(x)
    split_seed = int(numpy.random.SeedSequence(seed).generate_state(1)[0]) % (2**31)
    if validation_data is not None:
        if cv is not None:
            raise ValueError("pass either validation_data or cv, not both")
        x_val, y_val = _data(validation_data, classify, flat)
        if x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"validation_data has inputs of shape {x_val.shape[1:]}; "
                             f"the training data {x.shape[1:]}")
        splits = ((numpy.arange(n), numpy.arange(n, n + len(x_val))),)
        x, y = numpy.concatenate([x, x_val]), numpy.concatenate([y, y_val])
    elif cv is not None:
        if isinstance(cv, bool) or not isinstance(cv, int) or not 2 <= cv <= n:
            raise ValueError(f"cv must be an integer number of folds in [2, {n}]; got {cv!r}")
        splitter = (StratifiedKFold if classify else KFold)(cv, shuffle=True,
                                                             random_state=split_seed)
        splits = tuple(splitter.split(x, y if classify else None))
    else:
        if not 0 < validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1); got {validation_fraction}")
        train, val = train_test_split(numpy.arange(n), test_size=validation_fraction,
                                      stratify=y if classify else None, random_state=split_seed)
        splits = ((train, val),)
    n_outputs = int(y.max()) + 1 if classify else (1 if y.ndim == 1 else int(y.shape[1]))
    return _Problem(x, y, splits, n_outputs, scoring)


def _data(data: Any, classify: bool, flat: bool = True) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``(x, y)`` as arrays: ``x`` flattened to float rows when ``flat`` (else as given, for a
    preprocessing), ``y`` integer labels or float targets."""
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        x, y = data.x_train, data.y_train
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise ValueError(
            f"data must be (x, y) or an ermlab.data.Dataset; got {type(data).__name__}")
    x = numpy.asarray(to_numpy(x))
    if flat:
        x = x.reshape(len(x), -1).astype(resolve_dtype(), copy=False)
    y = numpy.asarray(to_numpy(y))
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
    if classify:
        if not numpy.issubdtype(y.dtype, numpy.integer) or y.ndim != 1 or y.min() < 0:
            raise ValueError("classification needs y as a 1-D array of integer labels 0…C−1; "
                             f"got dtype {y.dtype}, shape {y.shape} (encode labels with "
                             "sklearn.preprocessing.LabelEncoder)")
        return x, y.astype(numpy.int64, copy=False)
    return x, y.astype(resolve_dtype(), copy=False)


def _validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a trial: ``ermlab.config``'s keys checked and filled in, and a
    ``schedule`` checked (kept only when given)."""
    full = configs.validate(_training(config))
    if "schedule" in config:
        full["schedule"] = config["schedule"]
        from ermlab.nn.parameter import Parameter

        probe = configs.build_optimizer(_training(full), [Parameter(numpy.zeros(1))])
        _schedule_callbacks(full, probe)
    return full


def _training(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key != "schedule"}


def _schedule_callbacks(config: Mapping[str, Any], optimizer: Any) -> list[Any]:
    """The callbacks of ``config``'s learning-rate ``schedule``, as ``ermlab train`` builds
    them (``ermlab.run.schedule_callbacks``); none without a schedule."""
    from ermlab import run

    if config.get("schedule") is None:
        return []
    if not isinstance(config["schedule"], str):
        raise ValueError(f"config 'schedule' is a spec such as 'cosine' or 'exponential:0.9'; "
                         f"got {config['schedule']!r}")
    return run.schedule_callbacks(dict(config), optimizer)


def _children(seed: numpy.random.SeedSequence, n: int) -> list[numpy.random.SeedSequence]:
    """``seed.spawn(n)`` as from a fresh sequence, without mutating ``seed``."""
    return [numpy.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i),
                                      pool_size=seed.pool_size) for i in range(n)]


def _n_outputs(full: dict[str, Any], y_train: Any, y_val: Any) -> int:
    y_train, y_val = to_numpy(y_train), to_numpy(y_val)
    if full["loss"] in configs.CLASSIFICATION_LOSSES:
        return int(max(y_train.max(), y_val.max())) + 1
    return 1 if y_train.ndim == 1 else int(y_train.shape[1])


def _scoring(full: dict[str, Any], scoring: str | None) -> str:
    if scoring is None:
        return "accuracy" if full["loss"] in configs.CLASSIFICATION_LOSSES else "neg_loss"
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    if scoring == "accuracy" and full["loss"] not in configs.CLASSIFICATION_LOSSES:
        raise ValueError(f"scoring 'accuracy' needs a classification loss; got {full['loss']!r}")
    return scoring


def _n_jobs(n_jobs: int, n_trials: int) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or −1 (all cores); got {n_jobs!r}")
    return min((os.cpu_count() or 1) if n_jobs == -1 else n_jobs, n_trials)


# -- space checks and cells --------------------------------------------------


def _check_names(keys: Sequence[str]) -> None:
    """Refuse parameter names that a result column of the table would shadow."""
    taken = [key for key in keys
             if key in RESULT_COLUMNS or re.fullmatch(r"split\d+_score", str(key))]
    if taken:
        raise ValueError(f"searched parameter(s) {taken} have the name of a result column of "
                         f"the search table ({', '.join(RESULT_COLUMNS)}, split{{k}}_score); "
                         "rename them")


def _check_space_type(space: Any) -> Mapping[str, Any]:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(
            f"a search space is a non-empty dict of name → list of values (or distribution), "
            f"e.g. {{'lr': [0.01, 0.1]}}; got {space!r}")
    return space


def _check_values(key: str, values: Any) -> None:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence,
                                                                             numpy.ndarray)):
        raise ValueError(
            f"space[{key!r}] must be a list of values or a distribution; got {values!r} "
            f"(wrap a single value in a list: [{values!r}])")
    if len(values) == 0:
        raise ValueError(f"space[{key!r}] is an empty list; give at least one value")


def _bounds(name: str, low: Any, high: Any) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} needs finite low < high; got {low} and {high}")
    return low, high


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers, tuples as lists (JSON- and CSV-friendly)."""
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value
