"""Lab results: one JSON file per run, in DeepOBS's layout (Schneider, Balles & Hennig 2019).

A run is one optimizer with one hyperparameter setting and one seed on one
problem. Its file lives at

    ROOT/<problem>/<optimizer>/<setting>/random_seed__<seed>.json

with ``<setting>`` the hyperparameters as DeepOBS writes them
(``batch_size__128__lr__1e-03__momentum__0.9``), and holds DeepOBS's keys:

====================  =========================================================
key                   value
====================  =========================================================
testproblem           problem name (``fmnist_2c2d``, ``rosenbrock`` ...)
optimizer_name        the lab's optimizer name (``sgd``, ``momentum``, ``adam``...)
optimizer_hyperparams {"lr": ..., and what else was set, e.g. "momentum": 0.9}
random_seed           the seed of initialization, shuffling and dropout
batch_size            mini-batch size (null: full batch)
weight_decay          λ of the L2 penalty λ‖W‖² of the problem
num_epochs            epochs done
train_losses          E + 1 values: before training, then after every epoch
valid_losses          (same; on the validation split the tuning reads)
test_losses           (same; on the test split)
train_accuracies,     the same for classification problems (absent otherwise)
valid_accuracies,
test_accuracies
minibatch_train_losses  the loss of every mini-batch step, in order
====================  =========================================================

and ermlab's additions: ``format`` (``"ermlab.lab.run/1"``), ``train_times``
(E + 1 cumulative seconds of training, evaluation excluded, starting at 0 —
the clock of AlgoPerf's time-to-result), ``wall_time`` (seconds of the whole
run, evaluation included), ``cpu_time`` (CPU seconds of the run's process: on a
busy machine, a fairer measure of the work than the wall clock), ``diverged``
(a non-finite loss stopped the run), ``problem`` (the problem's full
specification: data, model, loss, budget), and for the 2-D test functions
``trajectory`` (the iterate θ before and after every step, a list of [x, y]).

Files are written atomically (a temporary file renamed over the target), so a
run interrupted by Ctrl-C leaves either no file or the previous complete one;
a file therefore always stands for finished epochs. ``load_all`` reads a tree
back, ``merge`` unites trees (the run with more epochs wins a clash), and a run
is extended by training it further and saving it again under the same name. A
run with more epochs than a study asks for is read cut to them (``truncate``):
its seed fixes every step, so its first epochs are the shorter run.

Where DeepOBS differs: its file names carry a time stamp, so a rerun adds a
file; here the name is the run's identity, so a rerun finds and skips it.
DeepOBS's own result files (its published baselines) are read too: ``load``,
``load_all`` and ``merge`` map them to lab runs of ``deepobs-sgd``,
``deepobs-momentum``, ``deepobs-adam`` ... (``ermlab.lab.deepobs``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FORMAT = "ermlab.lab.run/1"
CURVES = ("train_losses", "valid_losses", "test_losses")
ACCURACY_CURVES = ("train_accuracies", "valid_accuracies", "test_accuracies")
REQUIRED = ("format", "testproblem", "optimizer_name", "optimizer_hyperparams", "random_seed",
            "batch_size", "weight_decay", "num_epochs", *CURVES, "train_times", "wall_time",
            "minibatch_train_losses", "diverged", "problem")


def setting_name(hyperparams: Mapping[str, Any], batch_size: int | None) -> str:
    """The folder name of a setting: ``batch_size__128__lr__1e-03__momentum__0.9``.

    Keys are sorted, ``lr`` first; floats are written with ``%g``-like precision
    so that 0.001 and 1e-3 name the same folder.
    """
    keys = sorted(hyperparams, key=lambda k: (k != "lr", k))
    parts = ["batch_size", "full" if batch_size is None else str(int(batch_size))]
    for key in keys:
        parts += [key, _value_name(hyperparams[key])]
    return "__".join(parts)


def run_path(root: str | os.PathLike, problem: str, optimizer: str,
             hyperparams: Mapping[str, Any], batch_size: int | None, seed: int) -> Path:
    """Where the run's JSON file lives under ``root``."""
    return (Path(root) / problem / optimizer / setting_name(hyperparams, batch_size)
            / f"random_seed__{int(seed)}.json")


def record_path(root: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    return run_path(root, record["testproblem"], record["optimizer_name"],
                    record["optimizer_hyperparams"], record["batch_size"], record["random_seed"])


def validate(record: Mapping[str, Any], origin: str = "run record") -> dict[str, Any]:
    """``record`` as a dict after checking it is a complete run; ValueError naming the flaw."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{origin}: a run record is a JSON object; got {type(record).__name__}")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{origin}: missing keys {missing}; not a file written by ermlab.lab "
                         f"(format {FORMAT!r})")
    if record["format"] != FORMAT:
        raise ValueError(f"{origin}: format {record['format']!r}; this ermlab reads {FORMAT!r}")
    epochs = record["num_epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"{origin}: num_epochs must be an integer ≥ 0; got {epochs!r}")
    curves = [*CURVES, "train_times"]
    curves += [key for key in ACCURACY_CURVES if key in record]
    for key in curves:
        values = record[key]
        if not isinstance(values, list) or len(values) != epochs + 1:
            raise ValueError(f"{origin}: {key} must hold num_epochs + 1 = {epochs + 1} values "
                             f"(before training and after every epoch); got "
                             f"{len(values) if isinstance(values, list) else values!r}")
        if not all(v is None or isinstance(v, numbers.Real) for v in values):
            raise ValueError(f"{origin}: {key} must hold numbers (null for not a number)")
    if not isinstance(record["optimizer_hyperparams"], Mapping) or \
            "lr" not in record["optimizer_hyperparams"]:
        raise ValueError(f"{origin}: optimizer_hyperparams must be an object with 'lr'")
    return dict(record)


def save(record: Mapping[str, Any], root: str | os.PathLike) -> Path:
    """Write ``record`` to its place under ``root`` atomically, with the permissions
    ``open()`` would give it (0o666 minus the umask); returns the path."""
    from ermlab.training.checkpoint import atomic_write_bytes

    record = validate(record)
    path = record_path(root, record)
    text = json.dumps(plain(record), indent=1, allow_nan=False)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def load(path: str | os.PathLike, epochs: int | None = None) -> dict[str, Any]:
    """One run record (NaN where the file has null in a curve); with ``epochs``, as it
    stood after that many epochs (``truncate``)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete it and rerun that run") \
            from None
    from ermlab.lab import deepobs

    if deepobs.is_deepobs(record):
        record = deepobs.from_deepobs(record, str(path))
    record = validate(record, str(path))
    for key in (*CURVES, *ACCURACY_CURVES, "train_times", "minibatch_train_losses"):
        if key in record:
            record[key] = [math.nan if v is None else v for v in record[key]]
    for key in ("wall_time", "cpu_time"):
        if key in record and record[key] is None:
            record[key] = math.nan
    return record if epochs is None else truncate(record, epochs, str(path))


def truncate(record: Mapping[str, Any], epochs: int,
             origin: str = "run record") -> dict[str, Any]:
    """``record`` cut to its first ``epochs`` epochs (unchanged when it has no more).

    A run's seed fixes its every step, so a run of E epochs is the first E epochs of a
    longer run of the same setting and seed: the curves keep E + 1 values, the steps
    (``minibatch_train_losses``, ``trajectory``) the first E × steps-per-epoch, and
    ``diverged`` holds only if a kept value is not finite (a run stops at the first
    epoch that ends off the finite numbers, so a cut one never diverged). ``wall_time``
    and ``cpu_time`` cover the whole run and cannot be cut: they become NaN (not
    recorded); ``train_times`` still gives the training time of the kept epochs.
    """
    record = dict(record)
    total = record["num_epochs"]
    if epochs >= total:
        return record
    if epochs < 0:
        raise ValueError(f"{origin}: epochs must be ≥ 0; got {epochs}")
    for key in ("minibatch_train_losses", "trajectory"):
        if key not in record:
            continue
        first = 1 if key == "trajectory" else 0  # the trajectory starts with θ₀
        steps = len(record[key]) - first
        if steps % total:
            raise ValueError(f"{origin}: {steps} {key} steps in {total} epochs are not whole "
                             f"epochs, so the run cannot be cut to {epochs} epochs; delete "
                             "the file and rerun that run")
        record[key] = record[key][:first + epochs * (steps // total)]
    for key in (*CURVES, *ACCURACY_CURVES, "train_times"):
        if key in record:
            record[key] = record[key][:epochs + 1]
    record["num_epochs"] = epochs
    record["diverged"] = bool(record["diverged"]) and not all(
        v is not None and math.isfinite(v) for key in CURVES for v in record[key])
    record["wall_time"] = math.nan
    if "cpu_time" in record:
        record["cpu_time"] = math.nan
    return record


def run_files(root: str | os.PathLike) -> list[Path]:
    """The run files under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} does not exist; run `ermlab lab run` "
                                "first or give the folder it wrote")
    return sorted(root.glob("*/*/*/random_seed__*.json"))


def load_all(root: str | os.PathLike, problem: str | None = None,
             optimizer: str | None = None,
             epochs: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Every run record under ``root`` (optionally of one problem and/or optimizer).

    ``root`` may also hold DeepOBS result files (``ermlab.lab.deepobs``), read as lab runs
    of the optimizers ``deepobs-sgd``, ``deepobs-momentum``, ``deepobs-adam`` ...
    ``epochs`` (problem → epochs, e.g. ``study_epochs(root)``) cuts those problems' runs
    to that budget (``truncate``).
    """
    from ermlab.lab import deepobs

    records = []
    for path in run_files(root):
        if problem is not None and path.parts[-4] != problem:
            continue
        if optimizer is not None and path.parts[-3] not in (optimizer, *deepobs.FOLDERS):
            continue
        record = load(path)
        if epochs is not None and record["testproblem"] in epochs:
            record = truncate(record, int(epochs[record["testproblem"]]), str(path))
        if optimizer is None or record["optimizer_name"] == optimizer:
            records.append(record)
    return records


def unique(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per run (problem, optimizer, setting, seed), as ``merge`` keeps them: of
    copies of the same run, the one with the most epochs, the first among equals."""
    kept: dict[Path, dict[str, Any]] = {}
    for record in records:
        key = record_path("", record)
        if key not in kept or record["num_epochs"] > kept[key]["num_epochs"]:
            kept[key] = dict(record)
    return list(kept.values())


def make_folder(folder: str | os.PathLike, what: str, fix: str) -> Path:
    """Create ``folder`` and its parents; a path that cannot be a folder is a one-line
    ValueError naming it: "cannot create WHAT FOLDER: REASON; FIX"."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       None)
        reason = (f"{blocker} is a file, not a folder" if blocker is not None
                  else error.strerror or str(error))
        raise ValueError(f"cannot create {what} {folder}: {reason}; {fix}") from None
    return folder


def study_epochs(root: str | os.PathLike) -> dict[str, int] | None:
    """Per problem, the epochs of the study last run into ``root`` (``study.json``); None
    when ``root`` holds no study. Its files may hold more epochs, from an earlier, longer
    study: ``load_all(root, epochs=study_epochs(root))`` reads what the study scored."""
    if not (Path(root) / "study.json").is_file():
        return None
    return {problem: int(n) for problem, n in load_study(root).get("epochs", {}).items()}


def load_study(root: str | os.PathLike) -> dict[str, Any]:
    """``ROOT/study.json``, written by ``ermlab.lab.protocol.Study``: the protocol, the
    problems' specifications and epochs, and per problem and optimizer the settings tried,
    their scores and the best setting (``["tuning"][problem][optimizer]["best"]``)."""
    path = Path(root) / "study.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; `ermlab lab run --out {root}` writes "
                                "it when a study finishes")
    document = json.loads(path.read_text())
    if document.get("format") != "ermlab.lab.study/1":
        raise ValueError(f"{path}: format {document.get('format')!r}; this ermlab reads "
                         "'ermlab.lab.study/1'")
    return document


def is_complete(path: str | os.PathLike, epochs: int) -> bool:
    """True when a valid run file with at least ``epochs`` epochs (or a diverged one) exists.

    A longer file counts: it is read cut to ``epochs`` (``load(path, epochs)``)."""
    try:
        record = load(path)
    except (OSError, ValueError):
        return False
    return record["num_epochs"] >= epochs or bool(record["diverged"])


def merge(sources: Iterable[str | os.PathLike], target: str | os.PathLike) -> dict[str, int]:
    """Unite result trees into ``target``; a run in several trees keeps its longest copy.

    Returns ``{"copied": n, "kept": n}`` (kept: the target's copy had as many epochs).
    A DeepOBS result file (``ermlab.lab.deepobs``) is written in the lab's layout and format.
    """
    from ermlab.lab import deepobs

    target = Path(target)
    counts = {"copied": 0, "kept": 0}
    for source in sources:
        source = Path(source)
        for path in run_files(source):
            record = load(path)
            converted = deepobs.is_converted(record)
            destination = record_path(target, record) if converted \
                else target / path.relative_to(source)
            if destination.exists() and load(destination)["num_epochs"] >= record["num_epochs"]:
                counts["kept"] += 1
                continue
            if converted:
                save(record, target)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, destination)
            counts["copied"] += 1
    return counts


def _value_name(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    if isinstance(value, (list, tuple)):
        return "_".join(_value_name(v) for v in value)
    return str(value).replace("/", "_")


def plain(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null, NumPy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
