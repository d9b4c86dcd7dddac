"""The lab's protocol: the same tuning budget for every optimizer, then the best setting
rerun over seeds — DeepOBS's (Schneider, Balles & Hennig 2019) protocol at laptop scale.

For every problem and optimizer:

1. tuning: ``trials`` settings — the learning rate on a log grid over ``lr_range``
   (``search="grid"``) or drawn log-uniformly (``"random"``; Bergstra & Bengio 2012),
   and with ``tune_momentum`` also momentum (SGD variants) or β₁ (Adam variants)
   — each trained once with seed 0 and scored on the validation split:

       score = final validation accuracy   (classification; DeepOBS's choice)
             = − final validation loss     (otherwise)

   a run that diverged scores −∞. Every optimizer gets the same number of
   settings; other hyperparameters stay at their defaults (``OPTIMIZERS``).
2. seeds: the best setting is rerun with seeds 1 … seeds − 1 (seed 0 is the tuning
   run), each a fresh initialization, batch order and dropout masks.

Runs go to worker processes (multiprocessing's spawn start method, BLAS limited
to one thread in each, Ctrl-C ignored by the workers and handled by the parent,
which stops them); each finished run is one JSON file (``ermlab.lab.results``)
written atomically, so an interrupted study keeps every finished run and a
rerun skips them. A run whose file has fewer epochs than asked for is rerun
from the start with the longer budget: its seed reproduces the earlier epochs,
so the file is extended. A run whose file has more epochs than asked for (a
shorter study into the folder of a longer one) is not rerun: the same seed
makes its first epochs the shorter run, so the study reads the file cut to its
budget (``results.truncate``) — scores, seeds and summary are those of the
requested epochs, and the file keeps its longer curves. The study's choices
(the settings tried, the scores, the best setting, the epochs) go to
``ROOT/study.json``; ``results.study_epochs`` reads the epochs back for the
report and ``ermlab lab summary``.

Where this differs from DeepOBS: DeepOBS's baselines tune the learning rate on a
36-point log grid from 1e-5 to 1e2, pick the best final performance and rerun it
with 10 seeds (DeepOBS docs, "Suggested protocol"); here the grid, its range and
the seed count are arguments (defaults: 5 points on [1e-4, 1], 5 seeds) so that
the small suite fits a laptop.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy

from ermlab.lab import metrics, results

# lab name → (ermlab optimizer, fixed options, the second hyperparameter tune_momentum searches)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "sgd": ("sgd", {}, None),
    "momentum": ("sgd", {"momentum": 0.9}, "momentum"),
    "nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}, "momentum"),
    "adam": ("adam", {}, "beta1"),
    "adagrad": ("adagrad", {}, None),
    "rmsprop": ("rmsprop", {}, None),
    "adadelta": ("adadelta", {}, None),
    "adamax": ("adamax", {}, "beta1"),
    "nadam": ("nadam", {}, "beta1"),
}
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adagrad", "rmsprop")
MOMENTUM_RANGE = (0.5, 0.99)
STUDY_FORMAT = "ermlab.lab.study/1"


def optimizer_names() -> list[str]:
    """The lab's named optimizers, then every other first-order ermlab optimizer."""
    from ermlab import config

    return [*OPTIMIZERS, *sorted(set(config.optimizers()) - set(OPTIMIZERS))]


@dataclass(frozen=True)
class OptimizerFactory:
    """``factory(params)`` builds the lab optimizer ``name`` with ``hyperparams`` (picklable).

    ``beta1`` sets β₁ of ``betas`` (β₂ stays at its default).
    """

    name: str
    hyperparams: tuple[tuple[str, Any], ...]

    def __call__(self, params: list[Any]) -> Any:
        from ermlab import config

        base, fixed, _ = OPTIMIZERS.get(self.name, (self.name, {}, None))
        options = {**fixed, **dict(self.hyperparams)}
        if "beta1" in options:
            beta2 = config.optimizer_options(base)["betas"].default[1]
            options["betas"] = (options.pop("beta1"), beta2)
        return config.optimizer_class(base)(params, **options)


def check_optimizer(name: str) -> str:
    from ermlab import config

    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        try:
            config.optimizer_class(key)
        except ValueError:
            raise ValueError(f"unknown optimizer {name!r}; the lab knows "
                             f"{', '.join(optimizer_names())}") from None
    return key


@dataclass
class Protocol:
    """How a study tunes and repeats (see the module docstring)."""

    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS
    search: str = "grid"
    trials: int = 5
    lr_range: tuple[float, float] = (1e-4, 1.0)
    tune_momentum: bool = False
    seeds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.optimizers = [check_optimizer(name) for name in self.optimizers]
        if not self.optimizers:
            raise ValueError("name at least one optimizer")
        if self.search not in ("grid", "random"):
            raise ValueError(f"search must be 'grid' or 'random'; got {self.search!r}")
        for key in ("trials", "seeds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer ≥ 1; got {value!r}")
        low, high = (float(v) for v in self.lr_range)
        if not 0 < low <= high or not math.isfinite(high):
            raise ValueError(f"lr_range must be 0 < low ≤ high; got {tuple(self.lr_range)}")
        self.lr_range = (low, high)

    def settings(self, problem: str, optimizer: str) -> list[dict[str, Any]]:
        """The ``trials`` hyperparameter settings tried for ``optimizer`` on ``problem``."""
        base, fixed, second = OPTIMIZERS.get(optimizer, (optimizer, {}, None))
        second = second if self.tune_momentum else None
        low, high = numpy.log10(self.lr_range)
        if self.search == "grid":
            if second is None:
                points = [(lr, None) for lr in numpy.logspace(low, high, self.trials)]
            else:
                n_lr = math.ceil(self.trials / 2)
                grid = [(lr, m) for m in (0.9, MOMENTUM_RANGE[1])
                        for lr in numpy.logspace(low, high, n_lr)]
                points = grid[:self.trials]
        else:
            seed = [self.seed, zlib.crc32(f"{problem}/{optimizer}".encode())]
            rng = numpy.random.default_rng(seed)
            points = []
            for _ in range(self.trials):
                lr = 10 ** rng.uniform(low, high)
                m = 1 - 10 ** rng.uniform(*numpy.log10([1 - MOMENTUM_RANGE[1],
                                                        1 - MOMENTUM_RANGE[0]]))
                points.append((lr, m if second else None))
        settings = []
        for lr, m in points:
            setting = {k: v for k, v in fixed.items() if k != second}
            setting["lr"] = float(f"{lr:.4g}")
            if m is not None:
                setting[second] = float(f"{m:.4g}")
            settings.append(setting)
        return settings


@dataclass(frozen=True)
class Job:
    """One run: a problem, an optimizer with one setting, a seed, an epoch budget."""

    problem: Any
    optimizer: str
    hyperparams: tuple[tuple[str, Any], ...]
    seed: int
    epochs: int
    root: str

    @property
    def path(self) -> Path:
        return results.run_path(self.root, self.problem.problem_name, self.optimizer,
                                dict(self.hyperparams), self.problem.batch_size, self.seed)


def run_job(job: Job) -> str:
    """Train one run and write its file; returns the file's path."""
    from ermlab import __version__

    cpu = time.process_time()
    curves = job.problem.train(OptimizerFactory(job.optimizer, job.hyperparams), job.seed,
                               job.epochs)
    curves["cpu_time"] = time.process_time() - cpu
    record = {"format": results.FORMAT, "testproblem": job.problem.problem_name,
              "optimizer_name": job.optimizer, "optimizer_hyperparams": dict(job.hyperparams),
              "random_seed": job.seed, "batch_size": job.problem.batch_size,
              "weight_decay": job.problem.weight_decay,
              "num_epochs": len(curves["train_losses"]) - 1, **curves,
              "problem": job.problem.spec(), "ermlab_version": __version__}
    return str(results.save(record, job.root))


def execute(jobs: Sequence[Job], n_jobs: int = 1, progress: bool = False,
            description: str = "runs", runner: Callable[[Job], str] | None = None) -> list[Job]:
    """Run the jobs whose files are missing or shorter; returns the jobs that ran.

    ``n_jobs`` > 1: spawned worker processes with one BLAS thread each; Ctrl-C
    stops them and re-raises ``KeyboardInterrupt`` (finished runs stay on disk).
    """
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    runner = runner or run_job
    pending = [job for job in jobs if not results.is_complete(job.path, job.epochs)]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=description,
               unit="run", disable=not progress, dynamic_ncols=True)
    try:
        if n_jobs <= 1 or len(pending) <= 1:
            with threadpool_limits(1):
                for job in pending:
                    runner(job)
                    bar.update()
        else:
            pool = multiprocessing.get_context("spawn").Pool(min(n_jobs, len(pending)),
                                                             initializer=_init_worker)
            try:
                for _ in pool.imap_unordered(runner, pending):
                    bar.update()
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
    finally:
        bar.close()
    return pending


def _init_worker() -> None:
    """A worker: one BLAS thread, and Ctrl-C left to the parent (which terminates it)."""
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker.limits = threadpool_limits(1)  # kept alive for the worker's lifetime


@dataclass
class Study:
    """Problems × optimizers under one ``Protocol``, written under ``root``."""

    problems: Sequence[Any]
    protocol: Protocol = field(default_factory=Protocol)
    root: str | os.PathLike = "lab-results"
    n_jobs: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if not self.problems:
            raise ValueError("name at least one problem")
        names = [p.problem_name for p in self.problems]
        if len(set(names)) != len(names):
            raise ValueError(f"problem names must differ; got {names}")
        if self.n_jobs is None:
            self.n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        if isinstance(self.n_jobs, bool) or int(self.n_jobs) != self.n_jobs or self.n_jobs < 1:
            raise ValueError(f"n_jobs must be an integer ≥ 1; got {self.n_jobs!r}")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise ValueError(f"epochs must be an integer ≥ 1; got {self.epochs!r}")

    def _epochs(self, problem: Any) -> int:
        return int(self.epochs or problem.epochs)

    def tuning_jobs(self) -> list[Job]:
        return [Job(problem, optimizer, tuple(setting.items()), 0, self._epochs(problem),
                    str(self.root))
                for problem in self.problems for optimizer in self.protocol.optimizers
                for setting in self.protocol.settings(problem.problem_name, optimizer)]

    def tuning(self) -> dict[str, dict[str, Any]]:
        """Per problem and optimizer: the settings tried, their scores, the best setting."""
        chosen: dict[str, dict[str, Any]] = {}
        for problem in self.problems:
            for optimizer in self.protocol.optimizers:
                settings = self.protocol.settings(problem.problem_name, optimizer)
                jobs = [Job(problem, optimizer, tuple(s.items()), 0, self._epochs(problem),
                            str(self.root)) for s in settings]
                scores = [metrics.tuning_score(results.load(job.path, job.epochs))
                          for job in jobs]
                best = int(numpy.argmax(numpy.nan_to_num(scores, nan=-numpy.inf)))
                chosen.setdefault(problem.problem_name, {})[optimizer] = {
                    "settings": settings, "scores": scores, "best": settings[best],
                    "metric": metrics.tuning_metric(problem.classification)}
        return chosen

    def seed_jobs(self, tuning: dict[str, dict[str, Any]]) -> list[Job]:
        return [Job(problem, optimizer,
                    tuple(tuning[problem.problem_name][optimizer]["best"].items()), seed,
                    self._epochs(problem), str(self.root))
                for problem in self.problems for optimizer in self.protocol.optimizers
                for seed in range(self.protocol.seeds)]

    def run(self, progress: bool = False) -> list[str]:
        """Tune, rerun the best settings over seeds, write ``study.json``; the summary lines."""
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*/*/*/.random_seed__*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        execute(self.tuning_jobs(), self.n_jobs, progress, "tuning")
        tuning = self.tuning()
        execute(self.seed_jobs(tuning), self.n_jobs, progress, "seeds")
        self.write(tuning)
        return metrics.summary_lines(self.final_records(tuning))

    def final_records(self, tuning: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [results.load(job.path, job.epochs) for job in self.seed_jobs(tuning)]

    def write(self, tuning: dict[str, dict[str, Any]]) -> Path:
        document = {"format": STUDY_FORMAT, "protocol": asdict(self.protocol),
                    "epochs": {p.problem_name: self._epochs(p) for p in self.problems},
                    "problems": {p.problem_name: p.spec() for p in self.problems},
                    "tuning": tuning}
        from ermlab.training.checkpoint import atomic_write_bytes

        path = Path(self.root) / "study.json"
        text = json.dumps(results.plain(document), indent=1, allow_nan=False)
        atomic_write_bytes(path, text.encode("utf-8"))  # a crash leaves the old study.json
        return path

    @classmethod
    def from_cli(cls, args: Any) -> Study:
        """The study ``ermlab lab run`` describes (checked before any work starts)."""
        protocol = Protocol(optimizers=_names(args.optimizers), search=args.search,
                            trials=args.trials, lr_range=_range(args.lr_range),
                            tune_momentum=args.tune_momentum, seeds=args.seeds)
        return cls(problems=load_problems(_names(args.problems), args.budget, args.data_path),
                   protocol=protocol, root=args.out, n_jobs=args.n_jobs, epochs=args.epochs)


def load_problems(names: Iterable[str], budget: str = "small",
                  data_path: str | None = None) -> list[Any]:
    """Problems by name, or from a TOML file describing a user problem."""
    from ermlab.lab import problems

    found = []
    for name in names:
        if name.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(f"problem file {path} does not exist")
            with path.open("rb") as file:
                spec = tomllib.load(file)
            found.append(problems.user_problem(spec, data_path))
        else:
            found.append(problems.get(name, budget=budget, data_path=data_path))
    return found


def _names(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _range(text: str) -> tuple[float, float]:
    parts = _names(text)
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--lr-range is LOW,HIGH, e.g. 1e-4,1; got {text!r}") from None
    return low, high
