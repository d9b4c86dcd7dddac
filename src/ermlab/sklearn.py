"""scikit-learn estimators over the ermlab engine: ``MLPClassifier`` and ``MLPRegressor``.

They follow scikit-learn's conventions — ``__init__`` stores hyperparameters,
``fit`` returns ``self``, fitted state ends in ``_`` — so they work in
``Pipeline``, ``GridSearchCV`` and ``cross_val_score``, and pass every
``check_estimator`` check but one: ``check_sample_weight_equivalence_on_dense_data``,
which wants a fit with integer sample weights and one on repeated rows to agree
to 1e-7 relative, where float32 training gives ~1e-6. scikit-learn (≥ 1.6) lets
only the caller declare an expected failure, so ``EXPECTED_FAILED_CHECKS`` holds it:
``check_estimator(MLPClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS)``.
Hyperparameter names are those of
``sklearn.neural_network.MLPClassifier`` where the concept is the same, mapped
onto an ``ermlab.config`` dict (model, loss, optimizer, regularizer) and a
``Trainer`` with an ``EarlyStopping`` callback.

The model is an MLP of ``hidden_layer_sizes`` with ``activation`` (scikit-learn's
names "identity", "logistic", "tanh", "relu" and every ``ermlab.nn.ACTIVATIONS``
name) trained on float32 copies of the inputs. The classifier minimizes the
softmax cross-entropy over ``len(classes_)`` outputs (two for a binary problem,
where scikit-learn uses one logistic unit); the regressor the mean squared error,
one output per target column.

Where this differs from scikit-learn:

* ``alpha`` is λ of the L2 penalty λ Σ‖W‖² added to the *mean* loss (ermlab's
  ``L2``); scikit-learn adds (alpha/2) Σ‖W‖² / n_batch, so its alpha is 2·n_batch
  times ours for the same penalty. ``l1`` (λ‖W‖₁), ``max_norm`` and ``dropout``
  are ermlab's additions.
* ``solver`` is any first-order ``ermlab.optim`` optimizer by name ("sgd",
  "adam", "adamw", "nadam", "rmsprop", "adagrad", ...); "lbfgs" is refused (the
  Trainer drives mini-batch optimizers only). ``optimizer_params`` passes any
  other option of that optimizer. ``learning_rate`` ("constant"; "invscaling";
  "adaptive": instead of stopping after ``n_iter_no_change`` epochs without a
  ``tol`` improvement, divide the rate by 5, and stop once it is ≤ 1e-6) applies
  to every solver, not only "sgd"; any other callback
  (``ermlab.training``: schedules, checkpoints, a progress bar) goes in ``callbacks``.
  A diverging run (non-finite loss) raises ``DivergenceError``, a ValueError.
* Early stopping monitors the validation *loss* (scikit-learn: the validation
  score) and restores the best epoch's weights; without ``early_stopping`` the
  training loss is monitored, as in scikit-learn, and the best epoch kept too.
* Training runs in float32 (inputs are cast; values beyond float32's range are
  refused, not turned into inf). As scikit-learn's, ``fit`` warns
  (``ConvergenceWarning``) when ``max_iter`` epochs ran without the stopping
  criterion being met, and the regressor ravels a column-vector ``y`` (with a
  ``DataConversionWarning``). Predictions run on a float64
  copy of the trained weights, so they do not depend on how rows are batched
  (float32 matrix products round differently for different batch shapes).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ermlab import config as configs
from ermlab.training.callbacks.base import Callback, check_callbacks

SKLEARN_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid"}
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "training runs in float32: integer sample weights and repeated rows agree to ~1e-6 "
        "relative (float32 sums in another order), the check demands 1e-7",
}
ADAM_LIKE = ("adam", "adamw", "adamax", "nadam")


class _BaseMLP(BaseEstimator):
    """Shared hyperparameters, ``fit`` and the forward pass of the two estimators."""

    _loss = "cross_entropy"

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        l1: float = 0.0,
        max_norm: float | None = None,
        dropout: float = 0.0,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 1e-3,
        power_t: float = 0.5,
        max_iter: int = 200,
        random_state: Any = None,
        tol: float = 1e-4,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        optimizer_params: dict[str, Any] | None = None,
        callbacks: Sequence[Any] | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.l1 = l1
        self.max_norm = max_norm
        self.dropout = dropout
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.optimizer_params = optimizer_params
        self.callbacks = callbacks

    # -- hyperparameters → ermlab ------------------------------------------------

    def _config(self, n_samples: int) -> dict[str, Any]:
        """The ``ermlab.config`` dict these hyperparameters describe."""
        solver = str(self.solver).lower()
        if solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported: the Trainer drives mini-batch "
                             "optimizers; use solver='adam' or 'sgd'")
        batch_size = self.batch_size
        if isinstance(batch_size, str):
            if batch_size != "auto":
                raise ValueError(f"batch_size must be a positive integer or 'auto'; "
                                 f"got {batch_size!r}")
            batch_size = min(200, n_samples)
        config = {
            "hidden": _layer_sizes(self.hidden_layer_sizes),
            "activation": SKLEARN_ACTIVATIONS.get(self.activation, self.activation),
            "loss": self._loss, "optimizer": solver, "lr": self.learning_rate_init,
            "l2": self.alpha, "l1": self.l1, "max_norm": self.max_norm, "dropout": self.dropout,
            "batch_size": batch_size, "epochs": self.max_iter,
            "patience": self.n_iter_no_change, "min_delta": self.tol,
        }
        if solver == "sgd":
            config["momentum"] = self.momentum
            config["nesterov"] = bool(self.nesterovs_momentum and self.momentum > 0)
        elif solver in ADAM_LIKE:
            config["betas"] = (self.beta_1, self.beta_2)
            config["eps"] = self.epsilon
        config.update(self.optimizer_params or {})
        return configs.validate(config)

    # -- fitting -----------------------------------------------------------------

    def _fit(self, x: numpy.ndarray, target: numpy.ndarray, n_outputs: int,
             sample_weight: Any, stratify: numpy.ndarray | None) -> _BaseMLP:
        from ermlab.training import DivergenceGuard, EarlyStopping

        config = self._config(len(x))
        user_callbacks = check_callbacks(self.callbacks or (), "callbacks")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1); "
                             f"got {self.validation_fraction}")
        seeds = numpy.random.SeedSequence(
            check_random_state(self.random_state).randint(numpy.iinfo(numpy.int32).max))
        init_rng, fit_rng = (numpy.random.default_rng(s) for s in seeds.spawn(2))
        weight = _float32(_check_sample_weight(sample_weight, x, dtype=numpy.float64),
                          "sample_weight")
        validation_data = None
        if self.early_stopping:
            split = train_test_split(x, target, weight, test_size=self.validation_fraction,
                                     stratify=stratify,
                                     random_state=int(seeds.generate_state(1)[0] % 2**31))
            x, x_val, target, y_val, weight, _ = split
            validation_data = (x_val, y_val)
        monitor = "val_loss" if self.early_stopping else "loss"
        adaptive = self.learning_rate == "adaptive"
        stopper = EarlyStopping(monitor=monitor, min_delta=config["min_delta"],
                                patience=config["epochs"] if adaptive else config["patience"])
        callbacks = [DivergenceGuard(raise_error=True), stopper,
                     *self._schedule(monitor, config["patience"]), *user_callbacks]
        trainer = configs.build(config, x.shape[1], n_outputs, rng=init_rng,
                                callbacks=callbacks)
        history = trainer.fit(x, target, epochs=config["epochs"],
                              batch_size=config["batch_size"], validation_data=validation_data,
                              sample_weight=None if sample_weight is None else weight,
                              rng=fit_rng)
        self.config_ = config
        self.n_outputs_ = int(n_outputs)
        self.model_ = trainer.model
        self.history_ = {key: list(values) for key, values in history.items()}
        self.loss_curve_ = self.history_["loss"]
        self.n_iter_ = int(trainer.epoch)
        self.best_loss_ = stopper.best
        if self.early_stopping:
            self.validation_loss_curve_ = self.history_["val_loss"]
        if trainer.stop_reason is None and self.n_iter_ == config["epochs"]:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.n_iter_}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=3)
        return self

    def _schedule(self, monitor: str, patience: int) -> list[Any]:
        """``learning_rate``: "constant", "invscaling" or "adaptive" (scikit-learn's), with
        ``patience``: ``n_iter_no_change`` as validated by ``ermlab.config`` (an ``int``)."""
        from ermlab.training import ReduceLROnPlateau

        if self.learning_rate == "constant":
            return []
        if self.learning_rate == "invscaling":
            return [InverseScaling(self.power_t)]
        if self.learning_rate == "adaptive":
            plateau = ReduceLROnPlateau(monitor, factor=0.2, patience=patience,
                                        threshold=self.tol, threshold_mode="abs")
            return [plateau, StopBelowLR(1e-6)]
        raise ValueError(f"learning_rate must be 'constant', 'invscaling' or 'adaptive'; "
                         f"got {self.learning_rate!r}")

    def _scores(self, X: Any) -> numpy.ndarray:
        check_is_fitted(self, "model_")
        x = validate_data(self, X, reset=False, dtype=(numpy.float32, numpy.float64))
        model = configs.build_model(self.config_, self.n_features_in_, self.n_outputs_, rng=0,
                                    dtype=numpy.float64)
        model.load_state_dict(self.model_.state_dict())
        model.eval()
        x = x.astype(numpy.float64, copy=False)
        chunks = [model.forward(x[i:i + 1024]) for i in range(0, len(x), 1024)]
        return numpy.concatenate([numpy.asarray(chunk) for chunk in chunks])


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer-perceptron classifier trained by ermlab (softmax cross-entropy).

    Example:
        >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
        >>> clf.fit(X_train, y_train).score(X_test, y_test)

    Fitted attributes: ``classes_``, ``n_features_in_``, ``model_`` (the
    ``ermlab.nn`` module), ``loss_curve_`` (training loss per epoch, regularized),
    ``history_`` (every logged metric), ``n_iter_`` (epochs run), ``best_loss_``,
    ``n_outputs_`` (output units) and ``config_`` (the ``ermlab.config`` dict).
    See the module docstring for how the hyperparameters map and differ.
    """

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        X, y = validate_data(self, X, y, dtype=(numpy.float32, numpy.float64))
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"MLPClassifier needs at least 2 classes in y; got 1 class: "
                             f"{self.classes_[0]!r}")
        target = encoder.transform(y).astype(numpy.int64)
        stratify = target if _stratifiable(target, self.validation_fraction) else None
        return self._fit(_float32(X, "X"), target, len(self.classes_), sample_weight, stratify)

    def predict_proba(self, X: Any) -> numpy.ndarray:
        """softmax(scores): p_c = e^{s_c − m} / Σ_k e^{s_k − m}, m = max_k s_k (float64)."""
        scores = self._scores(X).astype(numpy.float64)
        scores -= scores.max(axis=1, keepdims=True)
        numpy.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    def predict_log_proba(self, X: Any) -> numpy.ndarray:
        """log softmax(scores): log p_c = (s_c − m) − log1p(Σ_{k≠j} e^{s_k − m}),  m = s_j = max s.

        Both terms are ≤ 0: finite where p_c underflows (log of ``predict_proba``
        gives −inf for s_c − m < −745), and the most probable class keeps its
        log p ≈ −Σ_{k≠j} e^{s_k − m} to a few ulps (log(1 + r) rounds it to 0).
        """
        scores = self._scores(X).astype(numpy.float64)
        rows, best = numpy.arange(len(scores)), scores.argmax(axis=1)
        scores -= scores[rows, best][:, None]
        others = numpy.exp(scores)
        others[rows, best] = 0
        scores -= numpy.log1p(others.sum(axis=1))[:, None]
        return scores

    def predict(self, X: Any) -> numpy.ndarray:
        labels = self._scores(X).argmax(axis=1)
        return self.classes_[labels]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer-perceptron regressor trained by ermlab (mean squared error).

    One output per target column; ``predict`` returns shape (n,) for a 1-D ``y``.
    Scale the targets (e.g. ``TransformedTargetRegressor`` with ``StandardScaler``)
    when they are far from unit size. Fitted attributes as ``MLPClassifier``'s,
    without ``classes_``; ``n_outputs_`` is the number of target columns.
    """

    _loss = "mse"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        X, y = validate_data(self, X, y, dtype=(numpy.float32, numpy.float64),
                             multi_output=True, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:  # as scikit-learn's MLPRegressor: ravel, and warn
            y = column_or_1d(y, warn=True)
        target = _float32(y, "y")
        self._y_1d = target.ndim == 1
        if self._y_1d:
            target = target.reshape(-1, 1)
        return self._fit(_float32(X, "X"), target, target.shape[1], sample_weight, None)

    def predict(self, X: Any) -> numpy.ndarray:
        scores = self._scores(X).astype(numpy.float64)
        return scores.ravel() if self._y_1d else scores

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class InverseScaling(Callback):
    """scikit-learn's ``learning_rate="invscaling"``: after each epoch

        α = α₀ / (t + 1)^power_t,     t = training examples seen so far

    (``on_train_begin`` notes α₀ of every parameter group)."""

    def __init__(self, power_t: float = 0.5) -> None:
        self.power_t = power_t

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.initial = [group["lr"] for group in trainer.optimizer.param_groups]
        self.seen = 0

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.seen += int(logs["size"])

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        for group, lr in zip(trainer.optimizer.param_groups, self.initial):
            group["lr"] = lr / (self.seen + 1) ** self.power_t


class StopBelowLR(Callback):
    """Stop the run once the learning rate (of the first group) is ≤ ``min_lr``."""

    def __init__(self, min_lr: float = 1e-6) -> None:
        self.min_lr = min_lr

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        lr = trainer.optimizer.param_groups[0]["lr"]
        if lr <= self.min_lr:
            trainer.stop_training = True
            trainer.stop_reason = f"learning rate {lr:.3g} ≤ {self.min_lr:g}"


def _layer_sizes(value: Any) -> list[Any]:
    """``hidden_layer_sizes`` as a list: an integer (any ``numbers.Integral``: ``numpy.int64``
    from a parameter grid) is one layer; integers in a sequence or array become ``int``.
    Anything else is left for ``ermlab.config`` to refuse."""
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    is_int = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
    if is_int(value) or not isinstance(value, Sequence) or isinstance(value, str):
        value = [value]
    return [int(v) if is_int(v) else v for v in value]


def _float32(array: numpy.ndarray, name: str) -> numpy.ndarray:
    """``array`` as float32 (training's dtype), refusing values beyond float32's range
    (|v| > 3.4e38), which the conversion turns into inf."""
    with numpy.errstate(over="ignore"):
        converted = numpy.asarray(array).astype(numpy.float32, copy=False)
    if not numpy.isfinite(converted).all():
        where = numpy.unravel_index(int(numpy.argmax(~numpy.isfinite(converted))),
                                    converted.shape)
        index = tuple(int(i) for i in where)
        raise ValueError(
            f"{name} has a value beyond float32's range (±"
            f"{numpy.finfo(numpy.float32).max:.4g}): {float(array[where]):g} at index "
            f"{index[0] if len(index) == 1 else index}, which overflows to inf when converted "
            f"to float32 for training; rescale {name} (e.g. StandardScaler)")
    return converted


def _stratifiable(target: numpy.ndarray, fraction: float) -> bool:
    """Whether a stratified split is possible: two samples of every class, and as many
    validation (and training) samples as classes; otherwise the split is only shuffled."""
    if not 0 < fraction < 1:
        return False
    n, classes = len(target), int(target.max()) + 1
    n_val = math.ceil(fraction * n)
    return int(numpy.bincount(target).min()) >= 2 and min(n_val, n - n_val) >= classes
