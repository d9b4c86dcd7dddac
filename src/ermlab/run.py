"""A run: one configuration turned into data, a model and a Trainer, recorded in a directory.

The configuration is one flat dict (from command-line flags, a TOML file, or
both). Its training keys are ``ermlab.config``'s vocabulary (``hidden``,
``optimizer``, ``lr``, ``l2``, ``batch_size``, ``epochs`` …); the run adds:

* ``dataset`` (``ermlab.data.load`` name, default ``digits``) and ``data_path``;
* ``model``: ``mlp`` (default), ``linear`` (one ``Linear`` layer, f(x) = Wx + b:
  softmax regression, or a multiclass SVM with ``loss = "hinge"``; its weights
  on raw images are drawn as ``templates.png``) or a model-zoo name
  (``ermlab.nn.zoo``);
* ``features``: an ``ermlab.features`` spec such as ``"hog,hsv-hist:10"`` — image
  features computed before the model (``linear`` or ``mlp``), fitted on the
  training split as the first step of the preprocessing, so they are saved in
  ``preprocessing.safetensors`` and ``evaluate``/``predict`` apply them; the
  ``auto`` preprocessing then standardizes the features;
* ``preprocess``: ``auto`` (default), ``standardize`` (per feature for an MLP,
  per channel for a CNN), ``mean_image``, ``channel_mean`` or ``none`` — fitted
  on the training split only. ``auto`` is what the classic courses (cs231n)
  do: images, already scaled to [0, 1] by ``ermlab.data``, get the mean
  training image subtracted, x ← x − (1/N) Σₙ xₙ (the per-channel mean instead
  when ``augment`` is set, since a flipped or shifted image no longer lines up
  with the mean image); tables are standardized per feature,
  x_j ← (x_j − μ_j) / σ_j. Images are not divided by a per-pixel σ_j: border
  pixels that are almost always 0 have a tiny σ_j, and the rare non-zero value
  becomes huge (MNIST MLP: 96.6 % test accuracy standardized vs 97.8 % on
  [0, 1] pixels). Fashion-MNIST, MLP of 256 hidden units, Adam, 10 epochs, best
  validation loss / test accuracy of the weights with that loss, seeds 0 and 1:
  per-pixel standardize 0.344 / 87.7 %, 0.333 / 87.8 %; mean image 0.307 /
  87.8 %, 0.296 / 88.4 %; [0, 1] only 0.297 / 88.9 %, 0.296 / 88.0 %; per-channel
  mean 0.312 / 87.5 % and per-channel mean and σ 0.335 / 87.6 % (seed 0);
* ``augment``: an ``ermlab.data.transforms.parse`` spec such as ``"crop:2,flip"``;
* ``adversarial``: adversarial training (Madry et al. 2018), an attack spec of
  ``ermlab.robustness.parse`` such as ``"pgd:eps=0.1,steps=7"`` whose ε is in the raw
  data's units (pixels in [0, 1]) and whose valid range is the training inputs';
* ``schedule``: ``none``, ``cosine``, ``step:S[:G]``, ``multistep:M1+M2[:G]``,
  ``exponential:G``, ``inverse_time:D[:C]`` (per update), ``warm_restarts:T0[:TMULT]``,
  ``plateau[:FACTOR[:PATIENCE]]``;
* ``seed`` and ``validation_fraction`` (the stratified hold-out used for early
  stopping and model choice; the test split is only used at the end).
* ``dp``: differentially private training (``ermlab.privacy.DPSGD``, Abadi et al.
  2016) with ``clip`` (C, default 1.0), ``noise`` (σ; absent: calibrated so that
  ``target_epsilon`` is spent in ``epochs``), ``target_epsilon`` (the run stops before
  an epoch that would exceed it), ``delta`` (default 1e-5, below 1/N) and ``accountant``
  (``rdp`` or ``pld``). Recorded only when on, with the σ used; ``history.csv`` holds
  ε per epoch and ``metrics.json`` the ε spent. A resume may not change them, nor
  ``batch_size`` (the sampling rate).
* ``distributed``: ``hogwild``, ``sync``, ``downpour`` or ``easgd`` — train with
  that ``ermlab.distributed`` strategy in the Trainer (absent: single-process),
  with ``workers`` (default 2) and the strategy's options (``STRATEGIES``:
  ``n_fetch``, ``n_push``, ``local_lr``, ``shards``, ``delay`` of Downpour;
  ``tau``, ``alpha``, ``easgd_momentum`` (EAMSGD's δ), ``asynchronous``,
  ``shards``, ``delay`` of EASGD); ``backend``: ``inprocess`` (default: the
  workers take turns in this process; Hogwild: worker processes on this
  machine) or ``ray`` (``ermlab.distributed.ray_backend.OnRay``: sync,
  downpour and easgd (asynchronous or synchronous, shards too) on Ray actors, a local Ray unless
  ``address`` — or ``RAY_ADDRESS`` — names a cluster to join; ``address``
  alone implies ``ray``; a resume may change the address). Downpour's server
  optimizer defaults to ``adagrad`` (Dean et al.), Hogwild's workers run
  ``sgd``; ``--optimizer`` names any other (Hogwild: plain SGD only). Only
  the chosen strategy's keys are recorded, with their defaults filled in;
  the checkpoints hold the strategy's state (server parameters and
  optimizer, counters, workers), and ``--resume`` refuses to change any of
  these keys but the address.

A run directory holds ``config.json`` (this dict), ``history.csv``,
``last.safetensors`` (checkpoint after every epoch, for ``--resume``),
``best.safetensors`` (best validation loss), ``preprocessing.safetensors``,
``metrics.json`` and the ``loss.png`` / ``accuracy.png`` plots.

A run directory stands on its own. Paths in ``config.json`` are absolute
(resolved when the run starts), so ``evaluate`` works from any working
directory. ``preprocessing.safetensors`` holds the fitted preprocessing and
what the model was trained on — the class names, the input shape and dtype,
and the per-feature minimum and maximum of the training inputs — so
``predict`` needs the run directory alone, never the training data.

Every file is written atomically, and a run directory stays usable after a
crash at any moment (``kill -9`` included):

* ``--resume RUN`` continues from the newest valid checkpoint, ``last`` or
  ``best`` (after epoch N both hold the same state; ``best`` can be one epoch
  ahead when the process died between the two writes). A damaged checkpoint is
  skipped with a warning. A run with no checkpoint yet (it died or diverged
  in its first epoch) starts again from scratch with its saved configuration.
  ``config.json`` is rewritten only once the checkpoint has been restored.
* ``--output DIR`` may reuse a directory that holds no valid checkpoint
  (a run that never finished an epoch); one with a checkpoint is refused.
* Temporaries of interrupted writes are removed by the next run.

What ``--resume`` may change (``RESUMABLE``): the epoch budget and early
stopping (``epochs``, ``patience``, ``min_delta``; ``epochs`` not where the
schedule plans the learning rate over them — ``cosine``, and ``step`` or
``multistep`` without explicit sizes), ``batch_size``, the
regularization (``l1``, ``l2``, ``max_norm``), ``augment`` (on or off: the
``auto`` preprocessing is pinned to the kind fitted, ``_kept_preprocess``), and the
optimizer's hyperparameters (``lr``, ``momentum``, ``betas``, ...; applied
over the restored optimizer state; ``lr`` only when no closed-form schedule
sets it). Everything that defines the model, the data or the optimizer's
kind (``model``, ``hidden``, ``dataset``, ``preprocess``, ``seed``,
``optimizer``, ``schedule``, ...) is refused: start a new run for those.
Early stopping keeps its best value and best weights across a resume; a run
that had stopped early continues only when ``epochs``, ``patience`` or
``min_delta`` is given, and then its count of epochs without improvement
starts again from 0 (so it trains up to ``patience`` more epochs).
"""

from __future__ import annotations

import json
import numbers
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ermlab import config as training_config

RUN_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data_path": None,
    "model": "mlp",
    "preprocess": "auto",
    "augment": None,
    "schedule": "none",
    "seed": 0,
    "validation_fraction": 0.1,
    "verify": True,
    "adversarial": None,
    "features": None,
}
PREPROCESS = ("auto", "standardize", "mean_image", "channel_mean", "none")
CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "history.csv", "metrics.json"
LAST, BEST, PREPROCESSING = "last.safetensors", "best.safetensors", "preprocessing.safetensors"
# Files a fresh start in a reused directory removes (config.json and preprocessing are rewritten).
STALE_FILES = (HISTORY_FILE, METRICS_FILE, LAST, BEST, "loss.png", "accuracy.png",
               "templates.png")
# Keys --resume may change besides the optimizer's hyperparameters (see the module docstring).
RESUMABLE = ("epochs", "patience", "min_delta", "batch_size", "l1", "l2", "max_norm", "augment")
STOPPING = ("epochs", "patience", "min_delta")
# The MLP's architecture keys (``ermlab.config``) and the flags that set them.
MLP_FLAGS = {"hidden": "--hidden", "activation": "--activation",
             "weight_init": "--set weight_init", "dropout": "--dropout",
             "batch_norm": "--batch-norm"}
MLP_KEYS = tuple(MLP_FLAGS)
FILE_SUFFIXES = (".npz", ".csv")
# ermlab.distributed strategies by name: their options (besides workers) and defaults.
STRATEGIES: dict[str, dict[str, Any]] = {
    "hogwild": {},
    "sync": {},
    "downpour": {"n_fetch": 1, "n_push": 1, "local_lr": 0.0, "shards": 1, "delay": 0},
    "easgd": {"tau": 1, "alpha": None, "easgd_momentum": 0.0, "asynchronous": True,
              "shards": 1, "delay": 0},
}
STRATEGY_OPTIONS = tuple(dict.fromkeys(k for options in STRATEGIES.values() for k in options))
STRATEGY_KEYS = ("distributed", "workers", "backend", "address", *STRATEGY_OPTIONS)
BACKENDS = ("inprocess", "ray")
# Differential privacy (``dp``): the keys and their defaults, recorded only when ``dp`` is on.
PRIVACY_DEFAULTS: dict[str, Any] = {"clip": 1.0, "noise": None, "target_epsilon": None,
                                    "delta": 1e-5, "accountant": "rdp"}
PRIVACY_KEYS = ("dp", *PRIVACY_DEFAULTS)
# The optimizer a strategy uses when none is named (Downpour's server: Adagrad, as in the paper).
STRATEGY_OPTIMIZERS = {"downpour": "adagrad", "hogwild": "sgd"}


def resolve(config: dict[str, Any], saved: bool = False) -> dict[str, Any]:
    """The full run configuration: defaults filled in, every value checked.

    A key of the MLP's architecture (``MLP_KEYS``) that the model does not use is refused;
    in a ``saved`` configuration (``config.json`` of a run directory, where earlier
    versions recorded such keys and ignored them) it is reset to its default instead.
    """
    full = {**RUN_DEFAULTS, **config}
    if full.get("model") == "linear":
        _linear_model(config, full)
    if full.get("distributed") in STRATEGY_OPTIMIZERS and "optimizer" not in full:
        full["optimizer"] = STRATEGY_OPTIMIZERS[full["distributed"]]
    full.update(training_config.validate(training_part(full),
                                         also_known=[*RUN_DEFAULTS, *STRATEGY_KEYS,
                                                     *PRIVACY_KEYS]))
    _check_model_keys(full, saved)
    _check_run_keys(full)
    _check_strategy_keys(full)
    _check_privacy_keys(full)
    full["hidden"] = list(full["hidden"])
    _model_builder(full["model"])
    if full["data_path"]:
        full["data_path"] = _absolute(full["data_path"])
    if _is_file_dataset(full["dataset"]):
        full["dataset"] = _absolute(full["dataset"])
    return full


def _is_file_dataset(dataset: str) -> bool:
    """Whether ``dataset`` is a path: a ``.npz``/``.csv`` file or a folder of ``.npy`` files."""
    from ermlab.data.datasets import LOADERS

    path = Path(dataset).expanduser()
    return path.suffix.lower() in FILE_SUFFIXES or (
        dataset not in LOADERS and bool(dataset.strip()) and path.is_dir())


def _linear_model(config: dict[str, Any], full: dict[str, Any]) -> None:
    """``model = "linear"``: one Linear layer f(x) = Wx + b, an MLP without hidden layers,
    from W = 0 unless ``weight_init`` says otherwise: the loss is convex in W, so a random
    start buys nothing, and it stayed in the learned W (a third of its norm after 3
    Fashion-MNIST epochs, and all of it on border pixels that are always 0, which get no
    gradient) and in the class templates drawn from it (``templates.png``)."""
    if config.get("hidden") not in (None, [], (), ""):
        raise ValueError(f"--model linear has no hidden layers; leave out --hidden "
                         f"{config['hidden']!r} (or use --model mlp)")
    full["hidden"] = []
    if config.get("weight_init") is None:
        full["weight_init"] = "zeros"


def _check_model_keys(full: dict[str, Any], saved: bool) -> None:
    """Refuse (or, ``saved``, reset) the MLP keys the model does not use: all of them for a
    model-zoo network, which the command builds as published; dropout and batch norm (which
    follow hidden activations) for a model without hidden layers."""
    name = full["model"]
    if name == "mlp" and full["hidden"]:
        return
    keys = ("dropout", "batch_norm") if name in ("mlp", "linear") else MLP_KEYS
    unused = [key for key in keys if full[key] != training_config.DEFAULTS[key]]
    if saved or not unused:
        full.update({key: training_config.DEFAULTS[key] for key in unused})
        return
    flags = ", ".join(MLP_FLAGS[key] for key in unused)
    if name in ("mlp", "linear"):
        raise ValueError(f"--model {name} has no hidden layers, so {flags} (applied after "
                         "each hidden activation) would do nothing: leave out "
                         f"{flags}, or give --hidden WIDTHS with --model mlp")
    raise ValueError(f"--model {name} is built as published and does not use {flags} (options "
                     f"of --model mlp): leave out {flags}")


def _check_features(full: dict[str, Any]) -> None:
    """``features``: an ``ermlab.features`` spec, for a linear model or an MLP on images."""
    from ermlab.features.pipeline import parse

    if not isinstance(full["features"], str):
        raise ValueError(f"config 'features' is a spec such as 'hog,hsv-hist:10'; got "
                         f"{full['features']!r}")
    try:
        parse(full["features"], seed=full["seed"])
    except ImportError as error:  # one line: how to install scikit-image
        raise ValueError(str(error)) from None
    if not _is_mlp(full):
        raise ValueError(f"--features gives the model feature vectors: use --model linear or "
                         f"mlp, not {full['model']}")
    for key, why in (("augment", "changes the images while training"),
                     ("adversarial", "attacks the images through the preprocessing")):
        if full[key] is not None:
            raise ValueError(f"--{key} {why}, but with --features the model sees feature "
                             f"vectors computed once: leave out --{key} or --features")
    if full["preprocess"] == "channel_mean":
        raise ValueError("--preprocess channel_mean needs images; with --features the model "
                         "sees feature vectors: use standardize, mean_image or none")


def _check_run_keys(full: dict[str, Any]) -> None:
    """Types and ranges of the run's own keys (``ermlab.config`` checks the training keys)."""
    for key in ("dataset", "model", "preprocess", "schedule"):
        if not isinstance(full[key], str):
            raise ValueError(f"config {key!r} is a name (a string); got {full[key]!r}")
    if full["data_path"] is not None and not isinstance(full["data_path"], str):
        raise ValueError(f"config 'data_path' is a path (a string); got {full['data_path']!r}")
    if full["preprocess"] not in PREPROCESS:
        raise ValueError(f"unknown preprocess {full['preprocess']!r}; choose one of {PREPROCESS}")
    fraction = full["validation_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or \
            not 0 < fraction < 1:
        raise ValueError(f"config 'validation_fraction' must be a number in (0, 1); got "
                         f"{fraction!r}")
    seed = full["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or \
            not 0 <= seed < 2**32:
        raise ValueError(f"config 'seed' must be an integer in [0, 2³²); got {seed!r}")
    if not isinstance(full["verify"], bool):
        raise ValueError(f"config 'verify' is true or false; got {full['verify']!r}")
    if full["adversarial"] is not None:
        from ermlab.robustness import parse

        if not isinstance(full["adversarial"], str):
            raise ValueError(f"config 'adversarial' is an attack spec such as "
                             f"'pgd:eps=0.1,steps=7'; got {full['adversarial']!r}")
        parse(full["adversarial"], bounds=(0.0, numpy.inf))  # the spec; eps vs data later
    if full["features"] is not None:
        _check_features(full)


def _check_privacy_keys(full: dict[str, Any]) -> None:
    """``dp`` and its keys: only with ``dp``, defaults filled in, checked by ``DPSGD``."""
    given = [key for key in PRIVACY_DEFAULTS if key in full]
    if not full.get("dp"):
        if full.get("dp", False) is not False or given:
            raise ValueError(f"{', '.join(given) or 'dp'} need(s) --dp (dp = true); got dp = "
                             f"{full.get('dp')!r}")
        full.pop("dp", None)
        return
    if full["dp"] is not True:
        raise ValueError(f"config 'dp' is true or false; got {full['dp']!r}")
    if full.get("distributed"):
        raise ValueError("--dp trains in the Trainer's own loop; it cannot be combined with "
                         f"--distributed {full['distributed']}")
    for key, default in PRIVACY_DEFAULTS.items():
        full.setdefault(key, default)
    _privacy(full)


def _privacy(config: dict[str, Any]) -> Any:
    """The ``ermlab.privacy.DPSGD`` of a ``dp`` config (None without ``dp``)."""
    if not config.get("dp"):
        return None
    from ermlab.privacy import DPSGD

    for key in ("clip", "noise", "target_epsilon", "delta"):
        value = config[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ValueError(f"config {key!r} is a number; got {value!r}")
    return DPSGD(config["clip"], config["noise"], delta=config["delta"],
                 target_epsilon=config["target_epsilon"], accountant=config["accountant"])


def _check_strategy_keys(full: dict[str, Any]) -> None:
    """The ``distributed`` strategy's keys: known, of this strategy, in range; defaults filled
    in (only the chosen strategy's keys stay in the config)."""
    kind = full.pop("distributed", None)
    given = [key for key in STRATEGY_KEYS if key in full and key != "distributed"]
    if kind is None:
        for key in given:
            if full[key] is not None:
                raise ValueError(f"{key!r} is an option of distributed training; add "
                                 f"--distributed {{{','.join(STRATEGIES)}}} or leave it out")
            del full[key]
        return
    if kind not in STRATEGIES:
        raise ValueError(f"unknown distributed strategy {kind!r}; choose one of "
                         f"{', '.join(STRATEGIES)}")
    options = STRATEGIES[kind]
    foreign = [key for key in given if key in STRATEGY_OPTIONS and key not in options]
    if foreign:
        owners = [name for name, opts in STRATEGIES.items() if foreign[0] in opts]
        raise ValueError(f"{foreign[0]!r} is an option of --distributed {' / '.join(owners)}, "
                         f"not of {kind} (whose options are: workers"
                         f"{''.join(', ' + k for k in options)})")
    full["distributed"] = kind
    full["workers"] = full.get("workers") if full.get("workers") is not None else 2
    for key, default in options.items():
        full[key] = full.get(key, default)
    address = full.get("address")
    backend = full.get("backend") or ("ray" if address is not None else "inprocess")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if address is not None and (backend != "ray" or not isinstance(address, str)):
        raise ValueError(f"--address {address!r} names a Ray cluster (a string such as "
                         "HEAD:6379 or auto) for --backend ray")
    if backend == "ray" and kind == "hogwild":
        raise ValueError("Hogwild runs worker processes on shared memory of this machine, not "
                         "on Ray; use --backend inprocess (the default) or another strategy")
    full["backend"], full["address"] = backend, address
    import warnings

    with warnings.catch_warnings():  # only the checks here; build_strategy warns
        warnings.simplefilter("ignore")
        _strategy(full)


def build_strategy(config: dict[str, Any]) -> Any:
    """The ``ermlab.distributed`` strategy the config names (wrapped in ``OnRay`` for
    ``backend="ray"``), or None (single-process)."""
    strategy = _strategy(config)
    if strategy is None or config.get("backend", "inprocess") != "ray":
        return strategy
    from ermlab.distributed import ray_backend

    address = config.get("address")
    cpus = _available_cpus()
    if address is None and not os.environ.get("RAY_ADDRESS") and config["workers"] > cpus:
        import warnings

        warnings.warn(f"{config['workers']} workers on a local Ray of {cpus} CPUs: they take "
                      "turns on the cores, so they run no faster and their gradients grow "
                      f"staler (use workers ≤ {cpus}, or --address to join a larger cluster)",
                      RuntimeWarning, stacklevel=2)
    try:
        return ray_backend.OnRay(strategy, address=address, num_cpus=cpus)
    except ImportError as error:  # one line: how to install Ray
        raise ValueError(str(error)) from None


def _available_cpus() -> int:
    from ermlab.distributed.hogwild import available_cpus

    return available_cpus()


def _strategy(config: dict[str, Any]) -> Any:
    kind = config.get("distributed")
    if kind is None:
        return None
    from ermlab import distributed

    workers, seed = config["workers"], config["seed"]
    if kind == "hogwild":
        return distributed.Hogwild(workers, seed=seed)
    if kind == "sync":
        return distributed.SyncDataParallel(workers, seed=seed)
    common = {key: config[key] for key in ("shards", "delay")}
    if kind == "downpour":
        return distributed.Downpour(workers, config["n_fetch"], config["n_push"],
                                    local_lr=config["local_lr"], seed=seed, **common)
    return distributed.EASGD(workers, config["tau"], config["alpha"],
                             momentum=config["easgd_momentum"],
                             asynchronous=config["asynchronous"], seed=seed, **common)


def _absolute(path: Any) -> str:
    """``path`` resolved against the working directory now, so the run works from anywhere."""
    return str(Path(str(path)).expanduser().resolve())


def training_part(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that ``ermlab.config`` knows (model, loss, optimizer, ...)."""
    return {key: value for key, value in config.items()
            if key not in RUN_DEFAULTS and key not in STRATEGY_KEYS and key not in PRIVACY_KEYS}


@dataclass
class Inputs:
    """What a run's model was trained on: enough to check and predict new inputs.

    ``shape`` and ``dtype`` are one raw example's (before preprocessing);
    ``minimum`` and ``maximum`` are per feature (of shape ``shape``) over the
    training split.
    """

    class_names: list[str]
    shape: tuple[int, ...]
    dtype: str
    minimum: numpy.ndarray
    maximum: numpy.ndarray

    @classmethod
    def of(cls, x_train: Any, class_names: list[str], moments: Any = None) -> Inputs:
        """What ``x_train`` is (an array, memory map or ``Rows``); its ``Moments``, when
        given, hold the minimum and maximum (else they are computed block by block)."""
        from ermlab.data.preprocessing import Moments

        moments = moments or Moments.of(x_train, mean=False)
        return cls(list(class_names), tuple(int(d) for d in x_train.shape[1:]),
                   numpy.dtype(x_train.dtype).str, moments.minimum, moments.maximum)

    def check_matches(self, shape: tuple[int, ...], class_names: list[str], what: str) -> None:
        """Raise a one-line ValueError when data ``what`` no longer match what the run was
        trained on: another example shape, or other class names (e.g. a data file that was
        rewritten since). Checked before anything compares values or labels."""
        shape, names = tuple(int(d) for d in shape), [str(c) for c in class_names]
        saved = [str(c) for c in self.class_names]
        changes = []
        if shape != tuple(self.shape):
            changes.append(f"its examples have shape {shape}, the run's had {tuple(self.shape)}")
        if len(names) != len(saved):
            changes.append(f"it has {len(names)} classes, the run had {len(saved)}")
        elif names != saved:
            i = next(i for i, (new, old) in enumerate(zip(names, saved)) if new != old)
            changes.append(f"its class {i} is named {names[i]!r}, the run's was {saved[i]!r}")
        if changes:
            raise ValueError(f"{what} no longer matches the data the run was trained on: "
                             f"{' and '.join(changes)}; use the data file the run was trained "
                             "on, or train a new run on this one")

    def warn_if_far(self, x: Any, what: str, moments: Any = None) -> None:
        """Warn on stderr when values of ``x`` lie far outside the training range.

        Far: more than one training span s = max(maximum) − min(minimum) below
        a feature's training minimum or above its maximum,
        x < minimum − s or x > maximum + s — e.g. pixels in [0, 255] given to
        a run trained on [0, 1]. ``x`` is read block by block; its ``Moments``
        (minimum and maximum), when given, spare that pass when nothing is far.
        """

        span = float(self.maximum.max() - self.minimum.min()) or 1.0
        low, high = self.minimum - span, self.maximum + span
        if moments is not None and moments.count and bool(
                (moments.minimum >= low).all() and (moments.maximum <= high).all()):
            return
        count, rows, first, value = flagged_values(
            x, lambda chunk: (chunk < low) | (chunk > high))
        if not count:
            return
        row = int(first[0])
        feature = tuple(int(i) for i in first[1:]) if len(first) > 2 else int(first[1])
        warn(f"{what}: {count} values in {rows} "
             f"examples lie far outside the training range (first: example {row}, feature "
             f"{feature} = {value:g}; trained on [{self.minimum[first[1:]]:g}, "
             f"{self.maximum[first[1:]]:g}]); are they scaled like the training data?")


def warn(message: str) -> None:
    """One warning line on standard error."""
    print(f"ermlab: warning: {message}", file=sys.stderr, flush=True)


def flagged_values(x: Any, flag: Any) -> tuple[int, int, tuple | None, Any]:
    """Read ``x`` block by block and count the values ``flag(chunk)`` marks: (how many, in how
    many rows, the index of the first, its value) — (0, 0, None, None) when none is."""
    from ermlab.data.rows import row_chunks

    count = rows = offset = 0
    first = value = None
    for chunk in row_chunks(x):
        marked = flag(chunk)
        if marked.any():
            count += int(marked.sum())
            rows += int(marked.reshape(len(chunk), -1).any(axis=1).sum())
            if first is None:
                at = numpy.unravel_index(int(numpy.flatnonzero(marked)[0]), chunk.shape)
                first, value = (offset + int(at[0]), *at[1:]), chunk[at]
        offset += len(chunk)
    return count, rows, first, value


def check_finite(x: Any, what: str, ranges: tuple[Any, ...] = ()) -> None:
    """Raise a one-line ValueError naming how many values of ``x`` are NaN or ±inf, and where.

    ``x`` is read block by block. ``ranges``, ``Moments`` that together cover
    every row of ``x``, settle the usual case (all finite) without reading it.
    """

    if ranges and all(moments.finite for moments in ranges):
        return
    count, rows, first, value = flagged_values(x, lambda chunk: ~numpy.isfinite(chunk))
    if not count:
        return
    feature = first[1:] if len(first) > 2 else first[1] if len(first) > 1 else None
    where = f"example {first[0]}" + ("" if feature is None else f", feature {feature}")
    raise ValueError(f"{what}: {count} value{'s are' if count > 1 else ' is'} NaN or infinite, "
                     f"in {rows} of {len(x)} examples (the first at {where}: {value}); "
                     "remove or fill them in first")


@dataclass
class Data:
    """The three splits, preprocessed, and what the run needs to know about them.

    The x splits are ``ermlab.data.rows.Rows`` views that preprocess each batch
    as it is read (arrays when the preprocessing is not ``per_batch``).
    """

    x_train: Any
    y_train: numpy.ndarray
    x_val: Any
    y_val: numpy.ndarray
    x_test: Any
    y_test: numpy.ndarray
    class_names: list[str]
    preprocessor: Any
    image_shape: tuple[int, ...]
    inputs: Inputs


def prepare_data(config: dict[str, Any], preprocessor_state: dict | None = None,
                 trained_on: Inputs | None = None) -> Data:
    """Load the dataset, split off validation data, fit preprocessing on the training split.

    With ``preprocessor_state`` (from ``preprocessing.safetensors``) the saved
    statistics are used instead of being fitted again. Non-finite inputs are an
    error; with ``trained_on`` (a saved run's ``Inputs``), data of another
    example shape or other class names are an error (``Inputs.check_matches``)
    and test inputs far outside that training range get a warning.

    Nothing is copied whole: ``.npz``/``.npy`` files are memory-mapped, the
    splits are ``Rows`` (index arrays into the loaded arrays), one pass over
    the training rows gives their range and the preprocessing's statistics
    (``Moments``), and a ``per_batch`` preprocessing runs on each batch as the
    Trainer reads it.
    """
    from ermlab import data
    from ermlab.data import splits
    from ermlab.data.preprocessing import Moments
    from ermlab.data.rows import Rows

    options = {"path": config["data_path"]} if config["data_path"] else {}
    if not config["verify"] and config["dataset"] in data.sources.SOURCES:
        options["verify"] = False  # files that are not the official release, with a warning
    if data.datasets.loader_name(config["dataset"]) in data.datasets.MAPPABLE:
        options["mmap_mode"] = "r"  # read-only maps: no copy, data larger than memory works
    dataset = data.load(config["dataset"], **options)
    name = Path(str(config["dataset"])).name
    split = splits.train_val_test_split(dataset.y_train, config["validation_fraction"], 0.0,
                                        config["seed"])
    x_train, x_val = Rows(dataset.x_train, split.train), Rows(dataset.x_train, split.validation)
    x_test = Rows(dataset.x_test)
    image_shape = tuple(dataset.x_train.shape[1:])
    if trained_on is not None:  # before anything reads values or labels
        trained_on.check_matches(image_shape, dataset.class_names, name)
    preprocessor = _preprocessor(config, image_shape)
    fit = preprocessor_state is None
    moments = Moments.of(x_train, mean=fit and preprocessor.needs is not None,
                         variance=fit and preprocessor.needs == "variance")
    check_finite(dataset.x_train, f"{name} training inputs",
                 (moments, Moments.of(x_val, mean=False)))
    test_range = Moments.of(x_test, mean=False)
    check_finite(x_test, f"{name} test inputs", (test_range,))
    if trained_on is not None:
        trained_on.warn_if_far(x_test, f"{name} test inputs", test_range)
    if fit and not preprocessor.per_batch:  # features computed once, while fitting
        train = numpy.asarray(preprocessor.fit_transform(x_train, moments))
    else:
        if fit:
            preprocessor.fit(x_train, moments)
        else:
            preprocessor.load_state_dict(preprocessor_state)
        train = _preprocessed(x_train, preprocessor)
    return Data(train, dataset.y_train[split.train],
                _preprocessed(x_val, preprocessor), dataset.y_train[split.validation],
                _preprocessed(x_test, preprocessor), dataset.y_test,
                list(dataset.class_names), preprocessor, image_shape,
                Inputs.of(x_train, dataset.class_names, moments))


def _preprocessed(x: Any, preprocessor: Any) -> Any:
    """``x`` preprocessed batch by batch as it is read, or once, whole, for a preprocessing
    that is not ``per_batch`` (e.g. image features)."""
    from ermlab.data.rows import Rows

    if preprocessor.per_batch:
        return Rows(x, transform=preprocessor)
    return preprocessor.transform(numpy.asarray(x))


def _is_mlp(config: dict[str, Any]) -> bool:
    return config["model"] in ("mlp", "linear")


def _preprocessor(config: dict[str, Any], image_shape: tuple[int, ...]) -> Any:
    from ermlab.data import preprocessing

    steps = []
    if config.get("features"):  # image features first: the rest sees feature vectors
        from ermlab.features.pipeline import parse

        steps.append(parse(config["features"], seed=config["seed"]))
    is_image = len(image_shape) == 3 and not config.get("features")
    kind = config["preprocess"]
    if kind == "auto":  # see the module docstring
        image_kind = "channel_mean" if config["augment"] else "mean_image"
        kind = image_kind if is_image else "standardize"
    if kind == "standardize":
        steps.append(preprocessing.Standardize(per="channel" if is_image and not _is_mlp(config)
                                               else "feature"))
    elif kind == "mean_image":
        steps.append(preprocessing.MeanImage())
    elif kind == "channel_mean":
        if not is_image:
            raise ValueError("preprocess 'channel_mean' needs image data (N, C, H, W)")
        steps.append(preprocessing.ChannelMean())
    if _is_mlp(config) and len(image_shape) > 1 and not config.get("features"):
        steps.append(preprocessing.Flatten())
    return preprocessing.Pipeline(steps)


def model_input_shape(config: dict[str, Any], preprocessor: Any,
                       shape: tuple[int, ...]) -> tuple[int, ...]:
    """What the model sees: the feature vector's shape (D,) with ``features``, else ``shape``."""
    if config.get("features"):
        return (preprocessor.steps[0].n_features_,)
    return shape


def _model_builder(name: str) -> Any:
    if name in ("mlp", "linear"):
        return None
    from ermlab.nn import zoo

    if name not in zoo.MODELS:
        raise ValueError(f"unknown model {name!r}; choose mlp, linear or one of "
                         f"{sorted(zoo.MODELS)}")
    return zoo.MODELS[name]


def build_trainer(config: dict[str, Any], data: Data, callbacks: list[Any]) -> Any:
    """The Trainer of this run, with early stopping, the schedule and ``callbacks``."""
    from ermlab.data import transforms
    from ermlab.training import EarlyStopping, Trainer

    rng = numpy.random.default_rng(config["seed"])
    training = training_part(config)
    n_classes = len(data.class_names)
    input_shape = model_input_shape(config, data.preprocessor, data.image_shape)
    batch = config["batch_size"] or len(data.x_train)  # full batch: every training example
    model = build_model({**config, "batch_size": batch}, input_shape, n_classes, rng)
    if not _is_mlp(config):  # the MLP's estimate came before its parameters were drawn
        training_config.check_memory(
            training_config.model_memory(model, input_shape, batch),
            f"--model {config['model']} at batch size {batch}",
            "use a smaller --batch-size or a smaller model")
    optimizer = training_config.build_optimizer(training, model.parameters())
    callbacks = list(callbacks)
    if config["patience"] is not None:
        callbacks.insert(0, EarlyStopping("val_loss", patience=config["patience"],
                                          min_delta=config["min_delta"]))
    callbacks.extend(schedule_callbacks(config, optimizer))
    augment = None
    if config["augment"]:
        spec = config["augment"]
        parts = spec.split(",") if isinstance(spec, str) else spec
        pca = any(str(part).strip().startswith("pca") for part in parts)
        augment = transforms.parse(config["augment"],  # only PCA colour noise reads the images
                                   data=_images(data.x_train, data) if pca else None)
        if _is_mlp(config) and len(data.image_shape) > 1:
            augment = transforms.AsImages(augment, data.image_shape)
    privacy = _privacy(config)
    if privacy is not None:  # δ < 1/N, a reachable target, σ calibrated: before the directory
        privacy.plan(len(data.x_train), config["epochs"], config["batch_size"])
        config["noise"] = privacy.noise_multiplier
    return Trainer(model, training_config.build_loss(training), optimizer,
                   regularizer=training_config.build_regularizer(training), callbacks=callbacks,
                   rng=rng, top_k=(5,) if n_classes > 5 else (), augment=augment,
                   strategy=build_strategy(config), adversary=_adversary(config, data),
                   privacy=privacy)


def _adversary(config: dict[str, Any], data: Data) -> Any:
    """The ``adversarial`` attack, its ε and bounds in raw units, on preprocessed batches."""
    if config["adversarial"] is None:
        return None
    from ermlab import robustness

    low, high = float(data.inputs.minimum.min()), float(data.inputs.maximum.max())
    attack = robustness.parse(config["adversarial"], bounds=(low, high))
    dtype = numpy.dtype(data.x_train.dtype)
    probe = numpy.random.default_rng(0).uniform(low, high, (2, *data.inputs.shape))
    affine = robustness.AffineInput.of(data.preprocessor, data.inputs.shape, dtype=dtype,
                                       probe=probe.astype(dtype))
    return robustness.RawUnits(attack, affine)


def build_model(config: dict[str, Any], input_shape: tuple[int, ...], n_classes: int,
                rng: numpy.random.Generator) -> Any:
    """The run's network for examples of ``input_shape`` (before preprocessing)."""
    builder = _model_builder(config["model"])
    if builder is None:  # the MLP (or linear model) sees flattened inputs
        n_inputs = int(numpy.prod(input_shape))
        return training_config.build_model(training_part(config), n_inputs, n_classes, rng)
    return builder(num_classes=n_classes, input_shape=tuple(input_shape), rng=rng)


def _images(x: Any, data: Data) -> numpy.ndarray:
    return numpy.asarray(x).reshape((len(x), *data.image_shape))


def schedule_callbacks(config: dict[str, Any], optimizer: Any) -> list[Any]:
    """The callbacks of ``config``'s learning-rate ``schedule`` over ``optimizer``: a
    ``ReduceLROnPlateau`` on the validation loss for ``plateau[:FACTOR[:PATIENCE]]``, a
    ``LearningRateScheduler`` for a closed-form schedule, none for ``none`` (``ermlab
    train``'s, and each trial's of ``ermlab search``)."""
    from ermlab.training import LearningRateScheduler, ReduceLROnPlateau

    schedule = _schedule(config, optimizer)
    if schedule == "plateau":
        factor, patience = _schedule_args(config["schedule"], [0.1, 5])
        return [ReduceLROnPlateau("val_loss", factor=factor, patience=int(patience))]
    return [] if schedule is None else [LearningRateScheduler(*schedule)]


def _schedule_args(spec: str, defaults: list[float]) -> list[float]:
    name, *args = spec.split(":")
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"schedule {spec!r}: arguments must be numbers") from None
    if len(values) > len(defaults):
        raise ValueError(f"schedule {name!r} takes at most {len(defaults)} arguments; got {spec!r}")
    return values + defaults[len(values):]


def schedule_uses_epochs(spec: str | None) -> bool:
    """Whether schedule ``spec`` plans the learning rate over the run's ``epochs``: cosine
    (T_max), and step and multistep without explicit sizes (epochs // 3, epochs // 2)."""
    name, *args = str(spec or "none").split(":")
    if name == "cosine":
        return True
    if name in ("step", "multistep"):
        return not (args and args[0].strip())
    return False


def _schedule(config: dict[str, Any], optimizer: Any) -> Any:
    """(scheduler, interval) for the config's ``schedule`` spec, "plateau", or None."""
    from ermlab.optim import schedules

    spec = str(config["schedule"] or "none")
    name = spec.split(":")[0]
    epochs = config["epochs"]
    if name == "none":
        return None
    if name == "plateau":
        _schedule_args(spec, [0.1, 5])
        return "plateau"
    if name == "cosine":
        (eta_min,) = _schedule_args(spec, [0.0])
        return schedules.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=eta_min), "epoch"
    if name == "step":
        step, gamma = _schedule_args(spec, [max(1, epochs // 3), 0.1])
        return schedules.StepLR(optimizer, step_size=int(step), gamma=gamma), "epoch"
    if name == "multistep":
        milestones, *rest = (spec.split(":")[1:] or [""])
        try:
            points = [int(m) for m in milestones.split("+") if m]
        except ValueError:
            raise ValueError(f"schedule {spec!r}: milestones look like 30+60") from None
        (gamma,) = _schedule_args("multistep:" + ":".join(rest), [0.1]) if rest else [0.1]
        return schedules.MultiStepLR(optimizer, points or [epochs // 2], gamma=gamma), "epoch"
    if name == "exponential":
        (gamma,) = _schedule_args(spec, [0.95])
        return schedules.ExponentialLR(optimizer, gamma=gamma), "epoch"
    if name == "inverse_time":
        decay, constant = _schedule_args(spec, [1e-3, 0])
        return schedules.InverseTimeLR(optimizer, decay, int(constant)), "update"
    if name == "warm_restarts":
        t0, mult = _schedule_args(spec, [10, 1])
        return schedules.CosineAnnealingWarmRestarts(optimizer, int(t0), int(mult)), "epoch"
    raise ValueError(
        f"unknown schedule {spec!r}; choose none, cosine, step:S[:G], multistep:M1+M2[:G], "
        "exponential:G, inverse_time:D[:C], warm_restarts:T0[:TMULT], plateau[:FACTOR[:PATIENCE]]")


# -- the run directory ---------------------------------------------------------------


def save_config(directory: Path, config: dict[str, Any]) -> None:
    from ermlab.training.checkpoint import atomic_write_bytes

    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(directory / CONFIG_FILE, text.encode())


def load_config(directory: Path) -> dict[str, Any]:
    """The configuration saved in a run directory, checked again."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a run directory (no {CONFIG_FILE}); give the directory "
            "`ermlab train --output DIR` wrote")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    return resolve(config, saved=True)


def save_preprocessor(directory: Path, preprocessor: Any, inputs: Inputs | None = None) -> None:
    """``preprocessing.safetensors``: the fitted statistics, and ``inputs`` (what the model
    was trained on) as the arrays ``inputs.minimum``/``inputs.maximum`` and JSON metadata."""
    import safetensors.numpy

    from ermlab.training.checkpoint import atomic_write_bytes

    arrays = {k: numpy.array(v, order="C") for k, v in preprocessor.state_dict().items()}
    metadata = None
    if inputs is not None:
        arrays["inputs.minimum"] = numpy.array(inputs.minimum, order="C")
        arrays["inputs.maximum"] = numpy.array(inputs.maximum, order="C")
        metadata = {"inputs": json.dumps({"class_names": inputs.class_names,
                                          "shape": list(inputs.shape), "dtype": inputs.dtype})}
    atomic_write_bytes(directory / PREPROCESSING, safetensors.numpy.save(arrays, metadata))


def load_preprocessor_state(directory: Path) -> dict[str, numpy.ndarray]:
    import safetensors.numpy

    path = Path(directory) / PREPROCESSING
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run directory is incomplete")
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as error:
        raise ValueError(f"{path} is damaged ({error})") from None


def load_inputs(directory: Path) -> Inputs | None:
    """The ``Inputs`` saved with the preprocessing; None for runs of older ermlab versions."""
    from safetensors import safe_open

    path = Path(directory) / PREPROCESSING
    state = load_preprocessor_state(directory)
    with safe_open(str(path), framework="numpy") as file:
        text = (file.metadata() or {}).get("inputs")
    if text is None or "inputs.minimum" not in state:
        return None
    saved = json.loads(text)
    return Inputs(list(saved["class_names"]), tuple(saved["shape"]), saved["dtype"],
                  state["inputs.minimum"], state["inputs.maximum"])


@dataclass
class Restored:
    """A finished run's model, ready to predict: no training data needed."""

    config: dict[str, Any]
    trainer: Any
    preprocessor: Any
    inputs: Inputs
    checkpoint: Path
    epoch: int


def restore(directory: str | Path, which: str = "best") -> Restored:
    """The model of run ``directory`` with its ``best`` (or ``last``) weights.

    Everything comes from the run directory; runs written before it held the
    ``Inputs`` fall back to loading their dataset once.
    """
    from ermlab.training import Trainer
    from ermlab.training.checkpoint import load_checkpoint

    directory = Path(directory)
    config = load_config(directory)
    inputs = load_inputs(directory)
    preprocessor_state = load_preprocessor_state(directory)
    if inputs is None:
        inputs = prepare_data(config, preprocessor_state).inputs
    preprocessor = _preprocessor(config, inputs.shape).load_state_dict(preprocessor_state)
    rng = numpy.random.default_rng(config["seed"])
    model = build_model(config, model_input_shape(config, preprocessor, inputs.shape),
                        len(inputs.class_names), rng)
    n_classes = len(inputs.class_names)
    trainer = Trainer(model, training_config.build_loss(training_part(config)), None, rng=rng,
                      top_k=(5,) if n_classes > 5 else ())
    path = model_checkpoint(directory, which)
    checkpoint = load_checkpoint(path, model=model)
    return Restored(config, trainer, preprocessor, inputs, path, checkpoint.epoch)


def model_checkpoint(directory: Path, which: str = "best") -> Path:
    """The checkpoint to use: ``best`` (falling back to ``last``) or ``last``."""
    directory = Path(directory)
    for name in ([BEST, LAST] if which == "best" else [LAST]):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} has no checkpoint ({BEST} or {LAST})")


def tested_weights(directory: Path, model: Any) -> tuple[str, int]:
    """Load the weights a finished run is tested with into ``model``: ``best``, else ``last``.

    Returns ``(which, epoch)``, e.g. ``("best", 12)``.
    """
    from ermlab.training.checkpoint import load_checkpoint

    path = model_checkpoint(directory, "best")
    checkpoint = load_checkpoint(path, model=model)
    return ("best" if path.name == BEST else "last"), checkpoint.epoch


# -- starting, reusing and resuming a run directory ----------------------------------------


def default_directory(config: dict[str, Any], root: str | Path = "runs") -> Path:
    """``runs/<data>-<model>-<time>``, a safe name inside ``root`` that no run uses yet.

    ``<data>`` is the dataset's name, or the file's stem for a dataset given
    as a path (``../x.npz`` → ``x``), reduced to letters, digits, ``.``, ``_``, ``-``.
    """
    dataset = str(config["dataset"])
    if _is_file_dataset(dataset):
        dataset = Path(dataset).stem
    elif config.get("data_path") and dataset in ("npz", "npy", "csv"):
        dataset = Path(str(config["data_path"])).stem
    name = "-".join(_safe_name(part) for part in (dataset, str(config["model"])))
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    directory, n = base, 1
    while directory.exists():
        n += 1
        directory = base.with_name(f"{base.name}-{n}")
    return directory


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "data"


def check_reusable(directory: Path) -> None:
    """Refuse ``directory`` for a new run when it holds a valid checkpoint."""
    if resume_point(directory)[0] is None:
        return
    if (directory / CONFIG_FILE).exists():
        raise ValueError(f"{directory} already holds a run; continue it with "
                         f"`ermlab train --resume {directory}` or choose another --output")
    raise ValueError(f"{directory} holds checkpoints but no {CONFIG_FILE} (not a run of "
                     "`ermlab train`); choose another --output")


def resume_point(directory: Path) -> tuple[Path | None, list[str]]:
    """The newest valid checkpoint of ``directory`` (``last`` or ``best``; ``last`` when both
    hold the same epoch), or None; and a note for each damaged one skipped."""
    from ermlab.training.checkpoint import read_checkpoint

    found, notes = [], []
    for rank, name in enumerate((BEST, LAST)):
        path = Path(directory) / name
        if not path.is_file():
            continue
        try:
            found.append((read_checkpoint(path).epoch, rank, path))
        except ValueError as error:  # CheckpointError: truncated, corrupt, edited
            notes.append(f"skipping {path}: {error}")
    return (max(found)[2] if found else None), notes


@dataclass
class Resume:
    """What ``--resume`` will do: the merged configuration and where to continue from."""

    config: dict[str, Any]
    saved: dict[str, Any]
    checkpoint: Path | None
    asked_to_continue: bool
    notes: list[str]


def plan_resume(directory: str | Path, overrides: dict[str, Any]) -> Resume:
    """Check ``overrides`` against what a resume may change; find the checkpoint to load.

    Nothing is written here: a refused resume leaves the directory as it was.
    """
    directory = Path(directory)
    saved = load_config(directory)
    strategy = overrides.get("distributed", saved.get("distributed"))
    changed = [key for key in STRATEGY_KEYS  # the address may change: a cluster holds no state
               if key in overrides and overrides[key] != saved.get(key) and key != "address"]
    if strategy != saved.get("distributed") or changed:
        raise ValueError(f"--resume cannot change {', '.join(changed) or 'distributed'}: the run "
                         f"was trained with distributed={saved.get('distributed')} and its "
                         "checkpoints hold that strategy's state; start a new run instead")
    kinds = {"model": overrides.get("model", saved["model"]),
             "optimizer": str(overrides.get("optimizer", saved["optimizer"])).strip().lower()}
    if any(kinds[key] != saved[key] for key in kinds):  # before merging: their keys differ
        config, changed = saved, [key for key in kinds if kinds[key] != saved[key]]
    else:
        config = resolve({**saved, **overrides})
        changed = sorted(key for key in config if config[key] != saved.get(key))
    optimizer_keys = set(training_config.optimizer_options(saved["optimizer"]))
    fixed = [key for key in changed if key not in RESUMABLE and key not in optimizer_keys]
    if saved.get("dp") and "batch_size" in changed:  # the sampling rate the ε was spent at
        fixed.append("batch_size")
    if fixed:
        raise ValueError(
            f"--resume cannot change {', '.join(fixed)}: they define the model, the data or the "
            f"optimizer; start a new run instead (a resume may change {', '.join(RESUMABLE)} "
            "and the optimizer's hyperparameters such as --lr)")
    checkpoint, notes = resume_point(directory)
    if checkpoint is not None and "epochs" in changed and schedule_uses_epochs(saved["schedule"]):
        raise ValueError(
            f"--resume cannot change epochs ({saved['epochs']} → {config['epochs']}): schedule "
            f"{saved['schedule']!r} plans the learning rate over the run's {saved['epochs']} "
            f"epochs; start a new run with --epochs {config['epochs']} instead (runs whose "
            "schedule does not depend on the epochs — none, plateau, exponential, step:S or "
            "multistep:M1+M2 with explicit sizes — may change them)")
    closed_form = str(saved["schedule"] or "none").split(":")[0] not in ("none", "plateau")
    if "lr" in changed and closed_form:
        raise ValueError(f"--resume cannot change lr: schedule {saved['schedule']!r} sets the "
                         "learning rate every epoch")
    if config is not saved and bool(config["augment"]) != bool(saved["augment"]):
        config["preprocess"] = _kept_preprocess(directory, saved)
    asked = any(key in overrides for key in STOPPING)
    return Resume(config, saved, checkpoint, asked, notes)


def _kept_preprocess(directory: Path, saved: dict[str, Any]) -> str:
    """The preprocessing of a run resumed with augmentation turned on or off: "auto" picks
    ``channel_mean`` for augmented images and ``mean_image`` otherwise, so it is pinned to
    the kind the run was fitted with (its saved statistics are of that kind)."""
    if saved["preprocess"] != "auto" or saved.get("features"):
        return saved["preprocess"]
    inputs = load_inputs(directory) if (directory / PREPROCESSING).is_file() else None
    if inputs is None:
        if not (directory / PREPROCESSING).is_file():  # nothing fitted yet: a new choice
            return saved["preprocess"]
        raise ValueError("--resume cannot turn augmentation on or off for this run (written by "
                         "an older ermlab, its preprocessing kind is not recorded); start a "
                         "new run instead")
    if len(inputs.shape) != 3:
        return saved["preprocess"]
    return "channel_mean" if saved["augment"] else "mean_image"


def continue_training(trainer: Any, plan: Resume) -> str | None:
    """Restore ``plan.checkpoint`` into ``trainer`` and apply the changed settings.

    The optimizer's hyperparameters that the new configuration changes are set
    over the restored state. Returns None when there is training left to do, or
    a sentence saying why the run is already finished.
    """
    fresh = [dict(group) for group in trainer.optimizer.param_groups]
    trainer.resume(plan.checkpoint)
    tidy(plan.checkpoint.parent)
    changed = [key for key in training_config.optimizer_options(plan.config["optimizer"])
               if plan.config.get(key) != plan.saved.get(key)]
    for group, new in zip(trainer.optimizer.param_groups, fresh):
        for key in changed:
            if key in group:
                group[key] = new[key]
        trainer.optimizer.validate(group)
    stopper = trainer.pending_callback_states.get("EarlyStopping")
    if stopper and stopper.get("stopped_epoch"):
        if not plan.asked_to_continue:
            return (f"the run stopped early at epoch {stopper['stopped_epoch']}; give --epochs, "
                    "--patience or --min-delta to train it further")
        stopper.update(wait=0, stopped_epoch=0)
    if trainer.epoch >= plan.config["epochs"]:
        done = trainer.epoch
        budget = ("" if done == plan.config["epochs"]
                  else f", at least the {plan.config['epochs']} of --epochs")
        return (f"the run has done {done} epoch{'s' if done > 1 else ''}{budget}; give --epochs "
                f"above {done} to train on")
    return None


def tidy(directory: Path) -> None:
    """Remove what interrupted writes left in a run directory: temporaries of writers that
    are gone, and those of ermlab versions before 0.2 (``.<run file>.<8 chars>.tmp``)."""
    from ermlab.training.checkpoint import remove_stale_temporaries

    remove_stale_temporaries(directory)
    names = "|".join(re.escape(name) for name in (CONFIG_FILE, PREPROCESSING, *STALE_FILES))
    legacy = re.compile(rf"^\.({names})\.[a-z0-9_]{{8}}\.tmp$")
    for path in Path(directory).iterdir():
        if legacy.match(path.name):
            path.unlink(missing_ok=True)


def start_directory(directory: Path, config: dict[str, Any], data: Data) -> None:
    """Create (or take over) ``directory`` for a run starting from scratch.

    A directory reused after a run that never wrote a checkpoint loses that
    run's leftovers (history, plots, damaged checkpoints, temporaries).
    """
    directory.mkdir(parents=True, exist_ok=True)
    tidy(directory)
    if (directory / CONFIG_FILE).exists():  # a run of ours: its leftovers go
        for name in STALE_FILES:
            (directory / name).unlink(missing_ok=True)
    save_preprocessor(directory, data.preprocessor, data.inputs)
    save_config(directory, config)
