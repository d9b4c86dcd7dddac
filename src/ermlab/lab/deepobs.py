"""DeepOBS (Schneider, Balles & Hennig, ICLR 2019) in the lab: its published result files
read as lab runs, and its ``fmnist_2c2d`` set up exactly as DeepOBS 1.1 (TensorFlow) did.

Result files. DeepOBS writes one JSON file per run at

    ROOT/<testproblem>/<optimizer>/<setting>/random_seed__<seed>__<time stamp>.json

(the baselines: github.com/fsschneider/DeepOBS_Baselines) with the keys
``train_losses``, ``test_losses``, ``train_accuracies``, ``test_accuracies``
(E + 1 values: before training, then after every epoch), ``minibatch_train_losses``,
``optimizer`` (TensorFlow's class name), ``testproblem``, ``batch_size``,
``num_epochs``, ``learning_rate``, ``hyperparams``, ``random_seed`` and
``weight_decay``. ``from_deepobs`` maps one to a lab run (``ermlab.lab.results``):

==================================  ==================================================
DeepOBS                             lab run
==================================  ==================================================
GradientDescentOptimizer            optimizer_name ``deepobs-sgd``
MomentumOptimizer (use_nesterov)    ``deepobs-momentum`` (``deepobs-nesterov``)
AdamOptimizer                       ``deepobs-adam``
learning_rate, hyperparams          optimizer_hyperparams ``lr``, ``momentum`` /
                                    ``beta1``, ``beta2``, ``eps`` (ermlab's names)
train_*, test_* curves              the same keys
test_* curves                       also ``valid_*``: DeepOBS 1.1 picks its tuned
                                    setting by the final *test* accuracy, so its test
                                    split is the split its tuning reads
weight_decay null                   0.0
(not recorded)                      ``train_times``, ``wall_time``: NaN
(a non-finite loss)                 ``diverged``
==================================  ==================================================

The optimizer names carry the ``deepobs-`` prefix so that a study and the
baselines summarized or merged together stay apart (the lab groups runs by
problem and optimizer); ``results.load``, ``load_all``, ``merge`` and
``ermlab lab summary|merge`` read DeepOBS files through this mapping, and
``merge`` writes them in the lab's own layout and format.

The problem. ``fmnist_2c2d()`` is DeepOBS 1.1's ``fmnist_2c2d``, which differs from
the lab catalog's entry (``ermlab.lab.problems``) in three ways:

* it trains on all 60,000 training images; its train-eval set is 10,000 of them
  (not held out), and there is no validation split — here the first 10,000
  training images serve as both (the lab's ``valid_*`` are DeepOBS's train-eval);
* weights are drawn from a normal with σ = 0.05 truncated at 2σ (TensorFlow's
  ``truncated_normal_initializer``), biases are 0.05 (the catalog: He / Glorot
  uniform weights, zero biases);
* the test set is all 10,000 test images (DeepOBS: 78 batches of 128 = 9,984).

Left as they are: DeepOBS shuffles through a 20,000-image buffer and drops the
last partial batch (468 steps an epoch; the Trainer: a full permutation, 469
steps); TensorFlow's Adam adds ε̂ to √v before bias correction (ermlab's Adam
after; at ε = 1e-8 this is invisible); TensorFlow's MomentumOptimizer is
v ← μv + g, θ ← θ − γv, which is ermlab's SGD with ``momentum_form="torch"``
(the default), step for step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy

from ermlab.lab import results
from ermlab.lab.problems import catalog
from ermlab.lab.problems.learning import LearningProblem, Split

PREFIX = "deepobs-"
FOLDERS = ("GradientDescentOptimizer", "MomentumOptimizer", "AdamOptimizer")
KEYS = ("optimizer", "testproblem", "learning_rate", "hyperparams", "random_seed",
        "batch_size", "num_epochs", "train_losses", "test_losses", "minibatch_train_losses")
CURVES = ("train_losses", "test_losses", "train_accuracies", "test_accuracies")
HYPERPARAMS = {"momentum": "momentum", "beta1": "beta1", "beta2": "beta2", "epsilon": "eps"}
INIT_STD = 0.05
INIT_BIAS = 0.05


def is_deepobs(record: Any) -> bool:
    """True for the contents of a DeepOBS result file (not a lab run)."""
    return isinstance(record, Mapping) and "format" not in record and "optimizer" in record \
        and "learning_rate" in record


def is_converted(record: Mapping[str, Any]) -> bool:
    """True for a lab run that ``from_deepobs`` made."""
    return record.get("source") == "DeepOBS"


def lab_name(optimizer: str, hyperparams: Mapping[str, Any], origin: str = "DeepOBS run",
             ) -> str:
    """The lab's name for a DeepOBS optimizer: ``deepobs-sgd``, ``-momentum``, ``-nesterov``,
    ``-adam``; ValueError for any other."""
    if optimizer == "GradientDescentOptimizer":
        return PREFIX + "sgd"
    if optimizer == "MomentumOptimizer":
        return PREFIX + ("nesterov" if hyperparams.get("use_nesterov") else "momentum")
    if optimizer == "AdamOptimizer":
        return PREFIX + "adam"
    raise ValueError(f"{origin}: DeepOBS optimizer {optimizer!r} has no lab name; the lab "
                     f"reads {', '.join(FOLDERS)}")


def from_deepobs(record: Mapping[str, Any], origin: str = "DeepOBS run") -> dict[str, Any]:
    """One DeepOBS result (a parsed JSON file) as a lab run record (see the module docstring).

    Raises ValueError naming the flaw for a file that is not a complete DeepOBS run.
    """
    missing = [key for key in KEYS if key not in record]
    if missing:
        raise ValueError(f"{origin}: missing DeepOBS keys {missing}; a DeepOBS result file "
                         f"holds {', '.join(KEYS)}")
    extra = record["hyperparams"] or {}
    if not isinstance(extra, Mapping):
        raise ValueError(f"{origin}: hyperparams must be an object; got {extra!r}")
    name = lab_name(record["optimizer"], extra, origin)
    lr = record["learning_rate"]
    # the tuning run holds its lr in full, the seed reruns as the folder name rounds it
    hyperparams = {"lr": float(f"{lr:.10e}") if isinstance(lr, float) else lr}
    hyperparams.update({HYPERPARAMS[k]: v for k, v in extra.items() if k in HYPERPARAMS})
    epochs = record["num_epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"{origin}: num_epochs must be an integer ≥ 0; got {epochs!r}")
    for key in CURVES:
        values = record.get(key, [])
        if not isinstance(values, list) or (key in record and len(values) != epochs + 1):
            raise ValueError(f"{origin}: {key} must hold num_epochs + 1 = {epochs + 1} values "
                             f"(before training and after every epoch); got "
                             f"{len(values) if isinstance(values, list) else values!r}")
    nan_curve = [math.nan] * (epochs + 1)
    losses = [*record["train_losses"], *record["test_losses"]]
    run = {"format": results.FORMAT, "source": "DeepOBS", "deepobs_optimizer": record["optimizer"],
           "testproblem": record["testproblem"], "optimizer_name": name,
           "optimizer_hyperparams": hyperparams, "random_seed": record["random_seed"],
           "batch_size": record["batch_size"], "weight_decay": record.get("weight_decay") or 0.0,
           "num_epochs": epochs, "train_losses": record["train_losses"],
           "valid_losses": record["test_losses"], "test_losses": record["test_losses"],
           "train_times": nan_curve, "wall_time": math.nan,
           "minibatch_train_losses": record["minibatch_train_losses"],
           "diverged": not all(isinstance(v, (int, float)) and math.isfinite(v)
                               for v in losses),
           "problem": {"kind": "learning", "name": record["testproblem"],
                       "source": "DeepOBS baselines (Schneider et al. 2019)",
                       "batch_size": record["batch_size"], "epochs": epochs}}
    if "train_accuracies" in record and "test_accuracies" in record:
        run.update(train_accuracies=record["train_accuracies"],
                   valid_accuracies=record["test_accuracies"],
                   test_accuracies=record["test_accuracies"])
    return results.validate(run, origin)


# -- DeepOBS 1.1's fmnist_2c2d -----------------------------------------------------------------


def truncated_normal(shape: tuple[int, ...], std: float, rng: numpy.random.Generator,
                     dtype: Any = numpy.float32) -> numpy.ndarray:
    """N(0, σ²) redrawn wherever |x| > 2σ (TensorFlow's ``truncated_normal_initializer``)."""
    sample = rng.standard_normal(shape)
    outside = numpy.abs(sample) > 2
    while outside.any():
        sample[outside] = rng.standard_normal(int(outside.sum()))
        outside = numpy.abs(sample) > 2
    return (sample * std).astype(dtype)


def net_2c2d(problem: Any, input_shape: tuple[int, ...], n_outputs: int,
             rng: numpy.random.Generator) -> Any:
    """The catalog's 2c2d with DeepOBS's initialization: weights N(0, 0.05²) truncated at
    2σ, biases 0.05 (DeepOBS ``_2c2d``)."""
    model = catalog.net_2c2d(problem, input_shape, n_outputs, rng)
    for param in model.parameters():
        if param.regularize:
            param.data[...] = truncated_normal(param.data.shape, INIT_STD, rng, param.data.dtype)
        else:
            param.data[...] = INIT_BIAS
    return model


class DeepOBSProblem(LearningProblem):
    """A learning problem split as DeepOBS 1.1 splits: training on the whole training set
    (or its first ``n_train`` examples), the first ``n_valid`` training examples as the
    train-eval set (here also the validation split), the test set (or its first ``n_test``)."""

    def split(self) -> Split:
        return _deepobs_split(self.data, self.data_path, self.n_train, self.n_valid,
                              self.n_test)


def fmnist_2c2d(data_path: str | None = None, epochs: int = 100, n_train: int | None = None,
                n_test: int | None = None) -> DeepOBSProblem:
    """DeepOBS 1.1's ``fmnist_2c2d``: batch 128, no weight decay, 100 epochs, all 60,000
    training images, DeepOBS's initialization (``net_2c2d``); ``n_train``/``n_test`` shrink
    it (tests)."""
    return DeepOBSProblem(
        name="fmnist_2c2d", data=catalog.idx_images, model=net_2c2d, loss="cross_entropy",
        weight_decay=0.0, batch_size=128, epochs=epochs, n_train=n_train, n_valid=10_000
        if n_train is None else min(10_000, n_train), n_test=n_test, data_path=data_path,
        settings={"model": "DeepOBS 2c2d (conv32-pool-conv64-pool-dense1024-dense10)",
                  "init": "truncated normal σ 0.05 (2σ), biases 0.05",
                  "split": "DeepOBS 1.1: all training images; train-eval = the first 10,000",
                  "source": "DeepOBS fmnist_2c2d"})


@functools.lru_cache(maxsize=2)
def _deepobs_split(data: Any, data_path: str | None, n_train: int | None, n_valid: int,
                   n_test: int | None) -> Split:
    x_train, y_train, x_test, y_test = data(data_path, {})
    train = slice(None) if n_train is None else slice(0, n_train)
    test = slice(None) if n_test is None else slice(0, n_test)
    x_train, y_train = x_train[train], y_train[train]
    if n_valid > len(x_train):
        raise ValueError(f"n_valid = {n_valid} exceeds the {len(x_train)} training examples")
    return Split(x_train, y_train, x_train[:n_valid], y_train[:n_valid], x_test[test],
                 y_test[test])
