"""A run: one configuration turned into data, a model and a Trainer, recorded in a directory.

The configuration is one flat dict (from command-line flags, a TOML file, or
both). Its training keys are ``ermlab.config``'s vocabulary (``hidden``,
``optimizer``, ``lr``, ``l2``, ``batch_size``, ``epochs`` …); the run adds:

* ``dataset`` (``ermlab.data.load`` name, default ``digits``) and ``data_path``;
* ``model``: ``mlp`` (default) or a model-zoo name (``ermlab.nn.zoo``);
* ``preprocess``: ``standardize`` (default; per feature for an MLP, per channel
  for a CNN), ``mean_image``, ``channel_mean`` or ``none`` — fitted on the
  training split only;
* ``augment``: an ``ermlab.data.transforms.parse`` spec such as ``"crop:2,flip"``;
* ``schedule``: ``none``, ``cosine``, ``step:S[:G]``, ``multistep:M1+M2[:G]``,
  ``exponential:G``, ``inverse_time:D[:C]`` (per update), ``warm_restarts:T0[:TMULT]``,
  ``plateau[:FACTOR[:PATIENCE]]``;
* ``seed`` and ``validation_fraction`` (the stratified hold-out used for early
  stopping and model choice; the test split is only used at the end).

A run directory holds ``config.json`` (this dict), ``history.csv``,
``last.safetensors`` (checkpoint after every epoch, for ``--resume``),
``best.safetensors`` (best validation loss), ``preprocessing.safetensors``,
``metrics.json`` and the ``loss.png`` / ``accuracy.png`` plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ermlab import config as training_config

RUN_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "data_path": None,
    "model": "mlp",
    "preprocess": "standardize",
    "augment": None,
    "schedule": "none",
    "seed": 0,
    "validation_fraction": 0.1,
}
PREPROCESS = ("standardize", "mean_image", "channel_mean", "none")
CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "history.csv", "metrics.json"
LAST, BEST, PREPROCESSING = "last.safetensors", "best.safetensors", "preprocessing.safetensors"


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The full run configuration: defaults filled in, every value checked."""
    full = {**RUN_DEFAULTS, **config}
    full.update(training_config.validate(training_part(full)))
    if full["preprocess"] not in PREPROCESS:
        raise ValueError(f"unknown preprocess {full['preprocess']!r}; choose one of {PREPROCESS}")
    if not 0 < float(full["validation_fraction"]) < 1:
        raise ValueError(
            f"validation_fraction must be in (0, 1); got {full['validation_fraction']}")
    if int(full["seed"]) != full["seed"]:
        raise ValueError(f"seed must be an integer; got {full['seed']!r}")
    full["hidden"] = list(full["hidden"])
    _model_builder(full["model"])
    return full


def training_part(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that ``ermlab.config`` knows (model, loss, optimizer, ...)."""
    return {key: value for key, value in config.items() if key not in RUN_DEFAULTS}


@dataclass
class Data:
    """The three splits, preprocessed, and what the run needs to know about them."""

    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_val: numpy.ndarray
    y_val: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    class_names: list[str]
    preprocessor: Any
    image_shape: tuple[int, ...]


def prepare_data(config: dict[str, Any], preprocessor_state: dict | None = None) -> Data:
    """Load the dataset, split off validation data, fit preprocessing on the training split.

    With ``preprocessor_state`` (from ``preprocessing.safetensors``) the saved
    statistics are used instead of being fitted again.
    """
    from ermlab import data
    from ermlab.data import splits

    options = {"path": config["data_path"]} if config["data_path"] else {}
    dataset = data.load(config["dataset"], **options)
    x_train, y_train, x_val, y_val = splits.train_validation_split(
        dataset.x_train, dataset.y_train, validation=config["validation_fraction"],
        seed=config["seed"])
    image_shape = tuple(dataset.x_train.shape[1:])
    preprocessor = _preprocessor(config, image_shape)
    if preprocessor_state is None:
        preprocessor.fit(x_train)
    else:
        preprocessor.load_state_dict(preprocessor_state)
    return Data(preprocessor.transform(x_train), y_train, preprocessor.transform(x_val), y_val,
                preprocessor.transform(dataset.x_test), dataset.y_test,
                list(dataset.class_names), preprocessor, image_shape)


def _is_mlp(config: dict[str, Any]) -> bool:
    return config["model"] == "mlp"


def _preprocessor(config: dict[str, Any], image_shape: tuple[int, ...]) -> Any:
    from ermlab.data import preprocessing

    steps = []
    is_image = len(image_shape) == 3
    kind = config["preprocess"]
    if kind == "standardize":
        steps.append(preprocessing.Standardize(per="channel" if is_image and not _is_mlp(config)
                                               else "feature"))
    elif kind == "mean_image":
        steps.append(preprocessing.MeanImage())
    elif kind == "channel_mean":
        if not is_image:
            raise ValueError("preprocess 'channel_mean' needs image data (N, C, H, W)")
        steps.append(preprocessing.ChannelMean())
    if _is_mlp(config) and len(image_shape) > 1:
        steps.append(preprocessing.Flatten())
    return preprocessing.Pipeline(steps)


def _model_builder(name: str) -> Any:
    if name == "mlp":
        return None
    from ermlab.nn import zoo

    if name not in zoo.MODELS:
        raise ValueError(f"unknown model {name!r}; choose mlp or one of {sorted(zoo.MODELS)}")
    return zoo.MODELS[name]


def build_trainer(config: dict[str, Any], data: Data, callbacks: list[Any]) -> Any:
    """The Trainer of this run, with early stopping, the schedule and ``callbacks``."""
    from ermlab.data import transforms
    from ermlab.training import EarlyStopping, LearningRateScheduler, ReduceLROnPlateau, Trainer

    rng = numpy.random.default_rng(config["seed"])
    training = training_part(config)
    n_classes = len(data.class_names)
    builder = _model_builder(config["model"])
    if builder is None:
        model = training_config.build_model(training, data.x_train.shape[1], n_classes, rng)
    else:
        model = builder(num_classes=n_classes, input_shape=data.image_shape, rng=rng)
    optimizer = training_config.build_optimizer(training, model.parameters())
    callbacks = list(callbacks)
    if config["patience"] is not None:
        callbacks.insert(0, EarlyStopping("val_loss", patience=config["patience"],
                                          min_delta=config["min_delta"]))
    schedule = _schedule(config, optimizer)
    if schedule == "plateau":
        factor, patience = _schedule_args(config["schedule"], [0.1, 5])
        callbacks.append(ReduceLROnPlateau("val_loss", factor=factor, patience=int(patience)))
    elif schedule is not None:
        callbacks.append(LearningRateScheduler(*schedule))
    augment = None
    if config["augment"]:
        augment = transforms.parse(config["augment"], data=_images(data.x_train, data))
        if _is_mlp(config) and len(data.image_shape) > 1:
            augment = transforms.AsImages(augment, data.image_shape)
    return Trainer(model, training_config.build_loss(training), optimizer,
                   regularizer=training_config.build_regularizer(training), callbacks=callbacks,
                   rng=rng, top_k=(5,) if n_classes > 5 else (), augment=augment)


def _images(x: numpy.ndarray, data: Data) -> numpy.ndarray:
    return x.reshape((len(x), *data.image_shape))


def _schedule_args(spec: str, defaults: list[float]) -> list[float]:
    name, *args = spec.split(":")
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"schedule {spec!r}: arguments must be numbers") from None
    if len(values) > len(defaults):
        raise ValueError(f"schedule {name!r} takes at most {len(defaults)} arguments; got {spec!r}")
    return values + defaults[len(values):]


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
    return resolve(config)


def save_preprocessor(directory: Path, preprocessor: Any) -> None:
    import safetensors.numpy

    from ermlab.training.checkpoint import atomic_write_bytes

    arrays = {k: numpy.array(v, order="C") for k, v in preprocessor.state_dict().items()}
    atomic_write_bytes(directory / PREPROCESSING, safetensors.numpy.save(arrays))


def load_preprocessor_state(directory: Path) -> dict[str, numpy.ndarray]:
    import safetensors.numpy

    path = Path(directory) / PREPROCESSING
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run directory is incomplete")
    try:
        return safetensors.numpy.load_file(str(path))
    except Exception as error:
        raise ValueError(f"{path} is damaged ({error})") from None


def model_checkpoint(directory: Path, which: str = "best") -> Path:
    """The checkpoint to use: ``best`` (falling back to ``last``) or ``last``."""
    directory = Path(directory)
    for name in ([BEST, LAST] if which == "best" else [LAST]):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} has no checkpoint ({BEST} or {LAST})")
