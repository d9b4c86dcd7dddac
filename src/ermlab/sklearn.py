"""scikit-learn estimators over the ermlab engine: ``MLPClassifier`` and ``MLPRegressor``.

They follow scikit-learn's conventions — ``__init__`` stores hyperparameters,
``fit`` returns ``self``, fitted state ends in ``_`` — so they work in
``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` and pass
``check_estimator``. Hyperparameter names are those of
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
  other option of that optimizer. ``learning_rate`` schedules are callbacks:
  pass them in ``callbacks``.
* Early stopping monitors the validation *loss* (scikit-learn: the validation
  score) and restores the best epoch's weights; without ``early_stopping`` the
  training loss is monitored, as in scikit-learn, and the best epoch kept too.
* Trained weights are float32; ``predict`` on float64 input casts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ermlab import config as configs

SKLEARN_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid"}
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
        learning_rate_init: float = 1e-3,
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
        self.learning_rate_init = learning_rate_init
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
        hidden = self.hidden_layer_sizes
        config = {
            "hidden": [hidden] if isinstance(hidden, int) else list(hidden),
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
        from ermlab.training import EarlyStopping

        config = self._config(len(x))
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1); "
                             f"got {self.validation_fraction}")
        seeds = numpy.random.SeedSequence(
            check_random_state(self.random_state).randint(numpy.iinfo(numpy.int32).max))
        init_rng, fit_rng = (numpy.random.default_rng(s) for s in seeds.spawn(2))
        weight = _check_sample_weight(sample_weight, x, dtype=numpy.float32)
        validation_data = None
        if self.early_stopping:
            split = train_test_split(x, target, weight, test_size=self.validation_fraction,
                                     stratify=stratify,
                                     random_state=int(seeds.generate_state(1)[0] % 2**31))
            x, x_val, target, y_val, weight, _ = split
            validation_data = (x_val, y_val)
        monitor = "val_loss" if self.early_stopping else "loss"
        stopper = EarlyStopping(monitor=monitor, patience=config["patience"],
                                min_delta=config["min_delta"])
        trainer = configs.build(config, x.shape[1], n_outputs, rng=init_rng,
                                callbacks=[stopper, *(self.callbacks or ())])
        history = trainer.fit(x, target, epochs=config["epochs"],
                              batch_size=config["batch_size"], validation_data=validation_data,
                              sample_weight=None if sample_weight is None else weight,
                              rng=fit_rng)
        self.model_ = trainer.model
        self.history_ = {key: list(values) for key, values in history.items()}
        self.loss_curve_ = self.history_["loss"]
        self.n_iter_ = int(trainer.epoch)
        self.best_loss_ = stopper.best
        if self.early_stopping:
            self.validation_loss_curve_ = self.history_["val_loss"]
        return self

    def _scores(self, X: Any) -> numpy.ndarray:
        check_is_fitted(self, "model_")
        x = validate_data(self, X, reset=False, dtype=(numpy.float32, numpy.float64))
        x = x.astype(numpy.float32, copy=False)
        self.model_.eval()
        chunks = [self.model_.forward(x[i:i + 1024]) for i in range(0, len(x), 1024)]
        return numpy.concatenate([numpy.asarray(chunk) for chunk in chunks])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer-perceptron classifier trained by ermlab (softmax cross-entropy).

    Example:
        >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
        >>> clf.fit(X_train, y_train).score(X_test, y_test)

    Fitted attributes: ``classes_``, ``n_features_in_``, ``model_`` (the
    ``ermlab.nn`` module), ``loss_curve_`` (training loss per epoch, regularized),
    ``history_`` (every logged metric), ``n_iter_`` (epochs run), ``best_loss_``.
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
        stratify = target if self.early_stopping and _stratifiable(target) else None
        return self._fit(X.astype(numpy.float32, copy=False), target, len(self.classes_),
                         sample_weight, stratify)

    def predict_proba(self, X: Any) -> numpy.ndarray:
        """softmax(scores): p_c = e^{s_c − m} / Σ_k e^{s_k − m}, m = max_k s_k (float64)."""
        scores = self._scores(X).astype(numpy.float64)
        scores -= scores.max(axis=1, keepdims=True)
        numpy.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    def predict_log_proba(self, X: Any) -> numpy.ndarray:
        return numpy.log(self.predict_proba(X))

    def predict(self, X: Any) -> numpy.ndarray:
        labels = self._scores(X).argmax(axis=1)
        return self.classes_[labels]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer-perceptron regressor trained by ermlab (mean squared error).

    One output per target column; ``predict`` returns shape (n,) for a 1-D ``y``.
    Scale the targets (e.g. ``TransformedTargetRegressor`` with ``StandardScaler``)
    when they are far from unit size. Fitted attributes as ``MLPClassifier``'s,
    with ``n_outputs_`` instead of ``classes_``.
    """

    _loss = "mse"

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        X, y = validate_data(self, X, y, dtype=(numpy.float32, numpy.float64),
                             multi_output=True, y_numeric=True)
        target = numpy.asarray(y, dtype=numpy.float32)
        self.n_outputs_ = 1 if target.ndim == 1 else int(target.shape[1])
        if target.ndim == 1:
            target = target.reshape(-1, 1)
        self._y_1d = numpy.asarray(y).ndim == 1
        return self._fit(X.astype(numpy.float32, copy=False), target, self.n_outputs_,
                         sample_weight, None)

    def predict(self, X: Any) -> numpy.ndarray:
        scores = self._scores(X).astype(numpy.float64)
        return scores.ravel() if self._y_1d else scores


def _stratifiable(target: numpy.ndarray) -> bool:
    """Stratified splits need at least two samples of every class."""
    return int(numpy.bincount(target).min()) >= 2
