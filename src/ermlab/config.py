"""Run configurations: a flat dict of hyperparameters turned into ermlab objects.

One vocabulary serves model selection (``ermlab.selection``), the scikit-learn
estimators (``ermlab.sklearn``) and the command line (flags or TOML):

    config = {"hidden": [128, 64], "activation": "relu", "optimizer": "sgd",
              "lr": 0.1, "momentum": 0.9, "l2": 1e-4, "batch_size": 32,
              "epochs": 100, "patience": 10}
    trainer = build(config, n_inputs=64, n_outputs=10, rng=0)
    trainer.fit(x, y, epochs=config["epochs"], batch_size=config["batch_size"], ...)

Keys (``DEFAULTS`` holds the defaults):

* model — ``hidden`` (widths of the hidden layers; ``[]`` is a linear model; an
  int or ``"512,256"`` also work), ``activation`` (``ermlab.nn.ACTIVATIONS``),
  ``weight_init`` (None: He for ReLU-like, Glorot otherwise), ``dropout`` (drop
  probability p of an ``ermlab.nn.Dropout`` after every hidden activation),
  ``batch_norm`` (a ``BatchNorm1d`` before every hidden activation);
* loss — ``loss``: ``cross_entropy``, ``hinge`` (Weston-Watkins multiclass SVM) or
  ``ova_hinge`` (one-vs-all SVMs) (classification, integer
  labels), ``mse`` or ``bce_with_logits`` (real or 0/1 targets);
* optimizer — ``optimizer`` (a first-order ``ermlab.optim`` class, lower case:
  sgd, adam, adamw, nadam, rmsprop, ...), ``lr`` (None: the optimizer's own
  default, 0.1 where it has none, e.g. sgd), and any keyword of that
  optimizer's constructor (``momentum``, ``nesterov``, ``betas``, ``eps``, ...);
* regularizer — ``l1``, ``l2`` (λ of λ‖W‖₁ and λ‖W‖²₂, weights only; see
  ``ermlab.regularizers``), ``max_norm`` (None or c of the max-norm constraint);
* training — ``batch_size`` (None: the full batch), ``epochs``, ``patience``
  and ``min_delta`` of early stopping on the validation loss (``patience=None``
  switches it off).

Full-batch optimizers (L-BFGS, BFGS, Newton) need a closure the Trainer does
not drive, so they are not offered here.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ermlab.backend import as_generator

DEFAULTS: dict[str, Any] = {
    "hidden": (128,),
    "activation": "relu",
    "weight_init": None,
    "dropout": 0.0,
    "batch_norm": False,
    "loss": "cross_entropy",
    "optimizer": "adam",
    "lr": None,
    "l1": 0.0,
    "l2": 0.0,
    "max_norm": None,
    "batch_size": 32,
    "epochs": 100,
    "patience": 10,
    "min_delta": 0.0,
}

CLASSIFICATION_LOSSES = ("cross_entropy", "hinge", "ova_hinge")
REGRESSION_LOSSES = ("mse", "bce_with_logits")
FALLBACK_LR = 0.1


def optimizers() -> dict[str, type]:
    """The first-order optimizers of ``ermlab.optim`` by lower-case class name, and
    ``delaytolerantadagrad`` (``ermlab.distributed``: McMahan & Streeter's AdaGrad for a
    Downpour server; plain AdaGrad without a distributed strategy)."""
    from ermlab import optim
    from ermlab.distributed.delay_tolerant import DelayTolerantAdagrad
    from ermlab.optim.full_batch import FullBatchOptimizer

    found = {
        cls.__name__.lower(): cls
        for cls in vars(optim).values()
        if isinstance(cls, type) and issubclass(cls, optim.Optimizer)
        and cls is not optim.Optimizer and not issubclass(cls, FullBatchOptimizer)
    }
    found["delaytolerantadagrad"] = DelayTolerantAdagrad
    return found


def optimizer_options(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments (besides ``params``) of optimizer ``name``'s constructor."""
    signature = inspect.signature(optimizer_class(name).__init__)
    return {key: p for key, p in signature.parameters.items() if key not in ("self", "params")}


def optimizer_class(name: str) -> type:
    available = optimizers()
    key = str(name).strip().lower()
    if key not in available:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {', '.join(sorted(available))} "
            "(full-batch L-BFGS, BFGS and Newton need a closure the Trainer does not drive)"
        )
    return available[key]


def is_classification(config: Mapping[str, Any]) -> bool:
    """True when the config's loss takes integer class labels."""
    return validate(config)["loss"] in CLASSIFICATION_LOSSES


def validate(config: Mapping[str, Any], also_known: Sequence[str] = ()) -> dict[str, Any]:
    """``config`` merged over ``DEFAULTS``, normalized, after checking every key and value.

    ``also_known``: keys the caller handles itself (``ermlab.run``'s), named in
    the error for an unknown key.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"a config is a dict of hyperparameters; got {type(config).__name__}")
    full = {**DEFAULTS, **config}
    full["optimizer"] = str(full["optimizer"]).strip().lower()
    options = optimizer_options(full["optimizer"])
    unknown = sorted(set(full) - set(DEFAULTS) - set(options))
    if unknown:
        _foreign_options(full["optimizer"], unknown)
        import difflib

        known = sorted({*DEFAULTS, *also_known, *options})
        guesses = {key: difflib.get_close_matches(key.replace("-", "_"), known, n=1)
                   for key in unknown}
        meant = "; ".join(f"{key!r}: did you mean {guess[0]!r}?"
                          for key, guess in guesses.items() if guess)
        raise ValueError(
            f"unknown config key(s) {unknown}{' (' + meant + ')' if meant else ''}; known: "
            f"{sorted({*DEFAULTS, *also_known})} and "
            f"the options of optimizer {full['optimizer']!r}: {sorted(set(options) - {'lr'})}"
        )
    for key in set(full) & set(options) - {"lr"}:
        _option(full["optimizer"], key, full[key], options[key].annotation)
    full["hidden"] = _hidden(full["hidden"])
    if isinstance(full["activation"], str):  # as the optimizer and loss names: any case
        full["activation"] = full["activation"].strip().lower()
    full["loss"] = str(full["loss"]).strip().lower().replace("-", "_")
    if full["loss"] not in CLASSIFICATION_LOSSES + REGRESSION_LOSSES:
        raise ValueError(
            f"unknown loss {full['loss']!r}; choose one of "
            f"{', '.join(CLASSIFICATION_LOSSES + REGRESSION_LOSSES)}"
        )
    for key in ("l1", "l2", "dropout", "min_delta"):
        _number(full, key, low=0.0)
    if not isinstance(full["batch_norm"], bool):
        raise ValueError(f"config 'batch_norm' is true or false; got {full['batch_norm']!r}")
    if not full["dropout"] < 1:
        raise ValueError(f"config 'dropout' must be in [0, 1); got {full['dropout']}")
    if full["max_norm"] is not None:
        _number(full, "max_norm", low=0.0, strict=True)
    if full["lr"] is not None:
        _number(full, "lr", low=0.0, strict=True)
    _integer(full, "epochs", low=1)
    for key in ("batch_size", "patience"):
        if full[key] is not None:
            _integer(full, key, low=1 if key == "batch_size" else 0)
    return full


def _foreign_options(optimizer: str, unknown: Sequence[str]) -> None:
    """A clear error when every unknown key is an option of some other optimizer, e.g.
    ``momentum`` with Adam: it names the optimizers that take it."""
    owners = {key: [name for name in sorted(optimizers()) if key in optimizer_options(name)]
              for key in unknown}
    if not unknown or not all(owners.values()):
        return
    key = unknown[0]
    example = "sgd" if "sgd" in owners[key] else owners[key][0]
    raise ValueError(f"{key!r} is an option of optimizer {', '.join(owners[key])}, not of "
                     f"{optimizer!r}: choose one of those (e.g. --optimizer {example}, "
                     f"optimizer = \"{example}\") or leave {key!r} out")


def build_model(
    config: Mapping[str, Any], n_inputs: int, n_outputs: int, rng: Any = None, dtype: Any = None
) -> Any:
    """An MLP n_inputs → hidden… → n_outputs (scores); see ``ermlab.nn.mlp``."""
    from ermlab import nn

    config = validate(config)
    rng = as_generator(rng)
    sizes = [int(n_inputs), *config["hidden"], int(n_outputs)]
    check_memory(mlp_memory(sizes, config["batch_size"], dtype), "this MLP")
    return nn.mlp(sizes, activation=config["activation"], weight_init=config["weight_init"],
                  batch_norm=config["batch_norm"], dropout=config["dropout"], rng=rng, dtype=dtype)


def mlp_memory(sizes: Sequence[int], batch_size: int | None, dtype: Any = None) -> int:
    """Bytes an MLP of layer ``sizes`` needs to train, estimated before anything is allocated.

        P = Σ_l (n_l + 1)·n_{l+1}                       parameters (weights and biases)
        bytes ≈ s·(4·P + 2·B·Σ_l n_l) + 8·max_l n_l·n_{l+1}

    with s the item size of ``dtype``: the parameters, their gradients and up to
    two optimizer slots per parameter (Adam's m and v), a batch of B examples'
    activations (outputs and caches), and the float64 draw that initializes the
    largest weight matrix. ``batch_size=None`` (the full batch) counts B = 1:
    the number of examples is not known here.
    """
    from ermlab.backend import resolve_dtype

    itemsize = resolve_dtype(dtype).itemsize
    layers = list(zip(sizes[:-1], sizes[1:]))
    parameters = sum((fan_in + 1) * fan_out for fan_in, fan_out in layers)
    activations = 2 * (batch_size or 1) * sum(sizes)
    return itemsize * (4 * parameters + activations) + 8 * max(a * b for a, b in layers)


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def model_memory(model: Any, input_shape: Sequence[int], batch_size: int) -> int:
    """Bytes a built ``model`` needs to train on batches of ``batch_size`` examples of
    ``input_shape``, estimated from one example (``ermlab.nn.summary``: a forward pass of a
    single example of zeros) before any batch is allocated:

        bytes ≈ s·(4·P + B·A)

    with s the parameters' item size, P the parameters (their values, gradients and up to
    two optimizer slots each, Adam's m and v) and A the values one example keeps for the
    backward pass (``stored_activations``: the input and every layer's output but in-place
    activations and views). Measured peaks of training (float32, Adam, NumPy, 1×28×28 and
    3×32×32 images) grow by 0.8× (ResNet-20, ResNet-50), 1.0× (GoogLeNet) and 2× (LeNet-5)
    of s·A per example: a refused run would have needed most of the machine's memory at
    least, and one that fits comfortably is not refused. The model runs in evaluation
    mode, so no random number is drawn and training is unchanged.
    """
    from ermlab.nn.summary import summary

    table = summary(model, input_shape)
    return table.dtype.itemsize * (4 * table.total_params
                                   + int(batch_size) * table.stored_activations)


def check_memory(needed: int, what: str,
                 fix: str = "use fewer or narrower hidden layers or a smaller batch size") -> None:
    """A clear error, before allocating, when ``needed`` bytes exceed the machine's memory;
    ``fix`` says what to do."""
    total = machine_memory()
    if total is not None and needed > total:
        raise ValueError(f"{what} needs about {_bytes(needed)} to train but this machine has "
                         f"{_bytes(total)} of memory; {fix}")


def _bytes(n: float) -> str:
    units = ("bytes", "KB", "MB", "GB", "TB", "PB")
    power = 0
    while n >= 1000 and power < len(units) - 1:
        n, power = n / 1000, power + 1
    return f"{n:.0f} bytes" if power == 0 else f"{n:.1f} {units[power]}"


def build_loss(config: Mapping[str, Any]) -> Any:
    from ermlab import losses

    return losses.get(validate(config)["loss"])


def build_optimizer(config: Mapping[str, Any], params: Sequence[Any]) -> Any:
    """The optimizer named in ``config`` over ``params``, with the config's options for it."""
    config = validate(config)
    options = optimizer_options(config["optimizer"])
    kwargs = {key: _tuple(config[key]) for key in options if key in config and key != "lr"}
    if config["lr"] is not None:
        kwargs["lr"] = float(config["lr"])
    elif options["lr"].default is inspect.Parameter.empty:
        kwargs["lr"] = FALLBACK_LR
    return optimizer_class(config["optimizer"])(params, **kwargs)


def build_regularizer(config: Mapping[str, Any]) -> Any:
    """L1(l1) + L2(l2) + MaxNorm(max_norm), keeping only the terms that are switched on."""
    from ermlab import regularizers

    config = validate(config)
    terms = []
    if config["l1"]:
        terms.append(regularizers.L1(config["l1"]))
    if config["l2"]:
        terms.append(regularizers.L2(config["l2"]))
    if config["max_norm"] is not None:
        terms.append(regularizers.MaxNorm(config["max_norm"]))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else regularizers.Compose(*terms)


def build(
    config: Mapping[str, Any],
    n_inputs: int,
    n_outputs: int,
    rng: Any = None,
    early_stopping: bool = False,
    callbacks: Sequence[Any] = (),
    dtype: Any = None,
) -> Any:
    """A ``Trainer`` wiring the model, loss, optimizer and regularizer of ``config``.

    With ``early_stopping`` (and ``patience`` not None) an ``EarlyStopping`` on
    ``val_loss`` comes first among the callbacks; pass ``validation_data`` to
    ``fit`` then. ``dtype``: of the parameters (default: the default dtype).
    """
    from ermlab.training import EarlyStopping, Trainer

    config = validate(config)
    model = build_model(config, n_inputs, n_outputs, rng, dtype)
    callbacks = list(callbacks)
    if early_stopping and config["patience"] is not None:
        stopper = EarlyStopping(monitor="val_loss", patience=config["patience"],
                                min_delta=config["min_delta"])
        callbacks.insert(0, stopper)
    return Trainer(model, build_loss(config), build_optimizer(config, model.parameters()),
                   regularizer=build_regularizer(config), callbacks=callbacks)


def _hidden(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # "" is no hidden layer; an empty part ("16,,8") is refused
        parts = [part for part in value.split(",")] if value.strip() else []
        parts = [None if not part.strip() else part for part in parts]
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, Sequence):
        parts = list(value)
    else:
        parts = [None]
    try:
        sizes = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        sizes = (0,)
    if any(size < 1 for size in sizes) or any(isinstance(p, (bool, float)) for p in parts):
        raise ValueError(
            f"config 'hidden' lists positive layer widths, e.g. [512, 256] or '512,256' "
            f"([] for no hidden layer); got {value!r}"
        )
    return sizes


_OPTION_KINDS = {  # annotation of an optimizer option → (check, what the user should give)
    "float": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    "int": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
            "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "None": (lambda v: v is None, "null (None)"),
    "tuple": (lambda v: isinstance(v, (list, tuple)) and all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v), "a list of numbers"),
}


def _option(optimizer: str, key: str, value: Any, annotation: Any) -> None:
    """Check an optimizer option's type against the constructor's annotation, e.g. ``float``.

    The optimizer checks the range itself; this turns ``eps="x"`` into a clear
    error instead of a comparison failing inside the constructor.
    """
    kinds = [kind.strip().split("[")[0] for kind in str(annotation).split("|")]
    known = [_OPTION_KINDS[kind] for kind in kinds if kind in _OPTION_KINDS]
    if known and not any(check(value) for check, _ in known):
        wanted = " or ".join(what for _, what in known)
        raise ValueError(f"config {key!r} (an option of optimizer {optimizer!r}) must be "
                         f"{wanted}; got {value!r}")


def _number(config: dict[str, Any], key: str, low: float, strict: bool = False) -> None:
    value = config[key]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        bound = f"> {low:g}" if strict else f"≥ {low:g}"
        raise ValueError(f"config {key!r} must be a finite number {bound}; got {value!r}")
    config[key] = float(value)


def _integer(config: dict[str, Any], key: str, low: int) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"config {key!r} must be an integer ≥ {low}; got {value!r}")
    config[key] = int(value)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
