"""Learning problems: data, model, loss, L2, batch size and epoch budget, trained by the Trainer.

Every problem minimizes the regularized empirical risk

    (1/T) Σ_t l(f(x_t; θ), y_t) + λ ‖W‖²₂

with the one ``ermlab.training.Trainer``; the optimizer is the only thing that
varies between the runs of a study. Data are split once, with a fixed seed that
does not depend on the run's seed, into train / validation (held out of the
training set, read by the tuning) / test; every run of a problem sees the same
split. The run's seed draws the initialization, the mini-batch order and the
dropout masks.

=================  ===============================================================  =========
problem            specification                                                    source
=================  ===============================================================  =========
logreg             multinomial logistic regression 784 → 10 on MNIST-format IDX     K&B §6.1
                   data, batch 128, λ = 1e-4, 45 epochs                             (Fig. 1)
mlp                MLP 784-1000-1000-10, ReLU, dropout 0.5 after each hidden        K&B §6.2
                   layer, batch 128, λ = 0, 200 epochs                              (Fig. 2)
fmnist_2c2d        conv 5×5×32 ('same') → ReLU → max-pool 2 → conv 5×5×64 → ReLU    DeepOBS
                   → max-pool 2 → dense 1024 → ReLU → dense 10; batch 128,
                   λ = 0, 100 epochs
noisy_quadratic    ½ Σ_i h_i (θ_i − c_i)², h_i = 1/i (d = 100), c ~ N(0, H⁻¹):      NQM
                   gradient noise covariance H/B; batch 128, 100 epochs
relu4              10 → 32 → 32 → 32 → 10 ReLU net, softmax cross-entropy, on       the seeds
                   Gaussian inputs labelled by a fixed random teacher of the same
                   shape; batch 32, 50 epochs
=================  ===============================================================  =========

K&B: Kingma & Ba, "Adam: A method for stochastic optimization", ICLR 2015. DeepOBS:
Schneider, Balles & Hennig, ICLR 2019 (``fmnist_2c2d``: batch 128, 100 epochs, no
weight decay). NQM: Zhang et al., "Which algorithmic choices matter at which batch
sizes?", NeurIPS 2019.

Where this differs from the papers: K&B decay the step size as α/√t on
logistic regression and do not state λ; here the step size is constant (the
protocol tunes it) and λ = 1e-4. K&B's MLP also drops inputs; here only the
hidden layers. DeepOBS initializes fmnist_2c2d with truncated normals (σ = 0.05,
biases 0.05); here ermlab's defaults (He uniform conv, Glorot uniform dense,
zero biases). DeepOBS's validation set is 10,000 images held out of the
training set, as here at the full budget.

Budgets: ``full`` is the published setting; ``small`` subsamples the data and
cuts the epochs so that 6 optimizers × 3 learning problems fit about 30 minutes
on 2 cores; ``tiny`` runs in seconds (tests). ``n_train``/``epochs`` override.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy

from ermlab.config import CLASSIFICATION_LOSSES
from ermlab.training.callbacks.base import Callback


@dataclass
class Split:
    x_train: Any
    y_train: Any
    x_valid: Any
    y_valid: Any
    x_test: Any
    y_test: Any


@dataclass
class LearningProblem:
    """One fully specified learning problem (see the module docstring).

    Args:
        name: the problem's name in result files.
        data: ``data(data_path, settings) -> (x_train, y_train, x_test, y_test)``, the
            whole data set (a module-level function: runs go to worker processes).
        model: ``model(problem, input_shape, n_outputs, rng) -> Module``.
        loss: ``ermlab.losses`` name.
        weight_decay: λ of λ‖W‖²₂ (``ermlab.regularizers.L2``; 0 for none).
        batch_size, epochs: the published settings (or the budget's).
        n_train, n_valid, n_test: examples used (None: all); the validation
            examples are held out of the training set.
        data_path: a folder with the data set's files (IDX data), or None.
        settings: whatever else specifies the problem, for the result files.
    """

    name: str
    data: Callable[[LearningProblem], tuple[Any, Any, Any, Any]]
    model: Callable[..., Any]
    loss: str
    weight_decay: float
    batch_size: int | None
    epochs: int
    n_train: int | None = None
    n_valid: int = 10_000
    n_test: int | None = None
    data_path: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("epochs", "n_valid", "n_train", "n_test", "batch_size"):
            value = getattr(self, key)
            if (value is None and key in ("n_train", "n_test", "batch_size")) or (
                    isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                continue
            raise ValueError(f"{self.name}: {key} must be an integer ≥ 1"
                             f"{' (or None for all)' if key != 'epochs' else ''}; got {value!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"{self.name}: weight_decay must be ≥ 0; got {self.weight_decay}")

    @property
    def problem_name(self) -> str:
        return self.name

    @property
    def classification(self) -> bool:
        return self.loss in CLASSIFICATION_LOSSES

    def spec(self) -> dict[str, Any]:
        return {"kind": "learning", "name": self.name, "loss": self.loss,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "epochs": self.epochs, "n_train": self.n_train, "n_valid": self.n_valid,
                "n_test": self.n_test, "data_path": self.data_path, **self.settings}

    def split(self) -> Split:
        """The problem's train / validation / test arrays (the same for every run)."""
        return _split(self.name, self.data, self.data_path, self.n_train, self.n_valid,
                      self.n_test, _key(self.settings))

    def train(self, make_optimizer: Callable[[list[Any]], Any], seed: int,
              epochs: int | None = None) -> dict[str, Any]:
        """Train one run with the Trainer; returns its curves (see ``ermlab.lab.results``)."""
        from ermlab import losses, regularizers
        from ermlab.training import Trainer

        epochs = self.epochs if epochs is None else int(epochs)
        data = self.split()
        init_seed, order_seed = numpy.random.SeedSequence(int(seed)).spawn(2)
        n_outputs = int(data.y_train.max()) + 1 if self.classification else \
            data.y_train.reshape(len(data.y_train), -1).shape[1]
        model = self.model(self, data.x_train.shape[1:], n_outputs,
                           numpy.random.default_rng(init_seed))
        optimizer = make_optimizer(model.parameters())
        regularizer = regularizers.L2(self.weight_decay) if self.weight_decay else None
        recorder = _Recorder(data, self.classification)
        trainer = Trainer(model, losses.get(self.loss), optimizer, regularizer, [recorder],
                          rng=numpy.random.default_rng(order_seed))
        start = time.perf_counter()
        with numpy.errstate(over="ignore", invalid="ignore"):  # divergence is recorded instead
            recorder.evaluate(trainer, 0.0)
            trainer.fit(data.x_train, data.y_train, epochs=epochs, batch_size=self.batch_size)
        return {**recorder.curves, "wall_time": time.perf_counter() - start,
                "diverged": recorder.diverged}


class _Recorder(Callback):
    """Per-step losses, and train/valid/test loss (and accuracy) after every epoch.

    The training loss and accuracy are measured, in evaluation mode and without
    the penalty, on the first n_valid training examples (as many as the
    validation split), as DeepOBS evaluates a training subset of test size.
    """

    def __init__(self, data: Split, classification: bool) -> None:
        self.data, self.classification, self.diverged = data, classification, False
        self.curves: dict[str, list[float]] = {key: [] for key in (
            "train_losses", "valid_losses", "test_losses", "minibatch_train_losses",
            "train_times")}
        if classification:
            self.curves.update(train_accuracies=[], valid_accuracies=[], test_accuracies=[])
        self.elapsed = 0.0
        n = len(data.x_valid)
        self.train_probe = (data.x_train[:n], data.y_train[:n])

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.curves["minibatch_train_losses"].append(float(logs["loss"]))

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.elapsed += float(logs["time"])
        self.evaluate(trainer, self.elapsed)
        if not math.isfinite(float(logs["loss"])) or not math.isfinite(
                self.curves["train_losses"][-1]):
            self.diverged = trainer.stop_training = True
            trainer.stop_reason = "diverged: the loss is not finite"

    def evaluate(self, trainer: Any, elapsed: float) -> None:
        self.curves["train_times"].append(elapsed)
        for split, (x, y) in (("train", self.train_probe),
                              ("valid", (self.data.x_valid, self.data.y_valid)),
                              ("test", (self.data.x_test, self.data.y_test))):
            results = trainer.evaluate(x, y, batch_size=512)
            self.curves[f"{split}_losses"].append(results["loss"])
            if self.classification:
                self.curves[f"{split}_accuracies"].append(results["accuracy"])


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _split(name: str, data: Callable, data_path: str | None, n_train: int | None, n_valid: int,
           n_test: int | None, settings_key: str) -> Split:
    """Load (once per process) and split: validation held out of train by a fixed permutation."""
    x_train, y_train, x_test, y_test = data(data_path, json.loads(settings_key))
    if n_valid >= len(x_train):
        raise ValueError(f"{name}: n_valid = {n_valid} leaves no training data "
                         f"({len(x_train)} training examples); use a smaller n_valid")
    order = numpy.random.default_rng(0).permutation(len(x_train))
    valid, rest = order[:n_valid], order[n_valid:]
    rest = numpy.sort(rest[:n_train]) if n_train is not None else numpy.sort(rest)
    test = slice(None) if n_test is None else slice(0, n_test)
    return Split(x_train[rest], y_train[rest], x_train[numpy.sort(valid)],
                 y_train[numpy.sort(valid)], x_test[test], y_test[test])
