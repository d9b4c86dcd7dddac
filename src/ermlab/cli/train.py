"""``ermlab train``: train a network from flags and/or a TOML file, recording a run directory.

Precedence: explicit flags > ``--set KEY=VALUE`` > ``--config FILE.toml`` > defaults
(``ermlab.run``).
``--resume RUN`` continues a run from its newest checkpoint, bit for bit, and may change
the settings listed in ``ermlab.run`` (epochs, patience, lr, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ermlab.config import CLASSIFICATION_LOSSES, DEFAULTS
from ermlab.training.callbacks import Callback
from ermlab.training.callbacks.progress_bar import epoch_summary

# flag → config key, for the flags that map one to one.
FLAGS = {
    "dataset": str, "data_path": str, "model": str, "hidden": str, "activation": str,
    "loss": str, "optimizer": str, "lr": float, "momentum": float, "weight_decay": float,
    "schedule": str, "epochs": int, "l1": float, "l2": float, "max_norm": float,
    "dropout": float, "preprocess": str, "augment": str, "seed": int,
    "validation_fraction": float, "adversarial": str, "features": str,
}
# flags of differentially private training (``ermlab.run.PRIVACY_KEYS``), one to one.
PRIVACY_FLAGS = {"clip": float, "noise": float, "target_epsilon": float, "delta": float}
# flags of distributed training (``ermlab.run.STRATEGIES``), one to one with config keys.
STRATEGY_FLAGS = {
    "workers": int, "backend": str, "address": str, "n_fetch": int, "n_push": int,
    "local_lr": float, "shards": int, "delay": int, "tau": int, "alpha": float,
    "easgd_momentum": float,
}


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a network and write a run directory",
        description="Train a network (default: an MLP with Adam and early stopping on digits) "
                    "and write config, history, checkpoints, metrics and plots to a run "
                    "directory.")
    parser.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    for flag, kind in FLAGS.items():
        parser.add_argument("--" + flag.replace("_", "-"), type=kind, default=None,
                            dest=flag, help=_HELP.get(flag))
    parser.add_argument("--batch-size", dest="batch_size", default=None,
                        help="mini-batch size; 1 = per-example SGD, 'full' = the full batch")
    parser.add_argument("--patience", default=None,
                        help="early-stopping patience in epochs ('none' to switch it off)")
    parser.add_argument("--batch-norm", dest="batch_norm", action="store_const", const=True,
                        default=None, help="batch normalization before every hidden activation")
    parser.add_argument("--no-verify", dest="verify", action="store_const", const=False,
                        default=None,
                        help="use dataset files whose checksums do not match the official "
                             "release (with a warning), e.g. your own copy in --data-path")
    group = parser.add_argument_group(
        "distributed training", "a strategy of ermlab.distributed in the Trainer; other options "
        "as --set KEY=VALUE, e.g. --set asynchronous=false (EASGD's synchronous rounds)")
    group.add_argument("--distributed", choices=("hogwild", "sync", "downpour", "easgd"),
                       default=None, help=_HELP["distributed"])
    for flag, kind in STRATEGY_FLAGS.items():
        choices = ("inprocess", "ray") if flag == "backend" else None
        group.add_argument("--" + flag.replace("_", "-"), type=kind, default=None, dest=flag,
                           choices=choices, metavar=None if choices else flag.upper(),
                           help=_HELP[flag])
    private = parser.add_argument_group(
        "differential privacy", "DP-SGD (Abadi et al. 2016): Poisson batches, per-example "
        "clipping, Gaussian noise; (ε, δ) per epoch in history.csv (pip install "
        "\"ermlab[privacy]\")")
    private.add_argument("--dp", dest="dp", action="store_const", const=True, default=None,
                         help=_HELP["dp"])
    for flag, kind in PRIVACY_FLAGS.items():
        private.add_argument("--" + flag.replace("_", "-"), type=kind, default=None, dest=flag,
                             metavar=flag.upper(), help=_HELP[flag])
    private.add_argument("--accountant", choices=("rdp", "pld"), default=None,
                         help=_HELP["accountant"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config key, e.g. --set betas=[0.9,0.99] (TOML values, "
                             "or null); over --config, under a key's own flag (--set epochs=5 "
                             "--epochs 9 trains 9)")
    parser.add_argument("--output", "-o", metavar="DIR", help="run directory (default: runs/…)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in directory RUN")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    parser.set_defaults(run=run)


_HELP = {
    "dataset": "dataset name (default digits), a .npz/.csv file, or a folder of .npy files "
               "named like the .npz keys (x_train.npy, y_train.npy [, x_test.npy, y_test.npy] "
               "or x.npy, y.npy [, class_names.npy]); .npy files and uncompressed .npz "
               "(numpy.savez) are memory-mapped, not read, so they may be larger than memory; "
               "see `ermlab datasets`",
    "data_path": "read the dataset from this directory or file instead of the cache "
                 "(e.g. a folder with the MNIST files, .gz or not)",
    "model": "mlp (default), linear (one Linear layer: softmax regression, or a multiclass "
             "SVM with --loss hinge, one-vs-all SVMs with --loss ova_hinge) or a model-zoo "
             "name such as lenet5, resnet20",
    "features": "image features computed before a linear model or MLP, fitted on the training "
                "split and saved with the run, e.g. hog,hsv-hist:10 or equalize,hog:4:2,bow:64 "
                "(steps: hog[:CELL[:BLOCK]], hsv-hist[:BINS], quantize[:COLOURS], "
                "bow[:WORDS[:PATCH]], equalize, pixels; see ermlab.features)",
    "hidden": "MLP hidden widths, e.g. 512,256 (default 128); '' for no hidden layer",
    "activation": "hidden activation: relu (default), tanh, sigmoid, leaky_relu, elu, ...",
    "loss": "cross_entropy (default), hinge (multiclass SVM) or ova_hinge (one-vs-all SVMs)",
    "optimizer": "sgd, adam (default), adamw, nadam, rmsprop, adagrad, adadelta, adamax, ..., "
                 "delaytolerantadagrad (for --distributed downpour's server)",
    "lr": "learning rate (default: the optimizer's; 0.1 for sgd)",
    "momentum": "momentum coefficient of sgd or rmsprop (default 0)",
    "weight_decay": "the optimizer's weight decay (coupled L2 in sgd/adam, decoupled in adamw)",
    "schedule": "none, cosine, step:S[:G], multistep:M1+M2[:G], exponential:G, "
                "inverse_time:D[:C], warm_restarts:T0[:TMULT], plateau[:FACTOR[:PATIENCE]]",
    "epochs": "most epochs to train (default 100; early stopping may end sooner)",
    "l1": "λ of the L1 penalty λ‖W‖₁ on the weights (default 0)",
    "l2": "λ of the L2 penalty λ‖W‖²₂ on the weights (default 0)",
    "max_norm": "max-norm constraint: rescale each unit's incoming weights to norm ≤ C",
    "dropout": "drop probability after every hidden activation, in [0, 1) (default 0)",
    "preprocess": "auto (default: images in [0, 1] minus the mean training image, or the "
                  "per-channel mean with --augment; tables standardized per feature), "
                  "standardize, mean_image, channel_mean or none",
    "augment": "augmentation spec for image data, e.g. crop:2,flip,rotate:10",
    "seed": "random seed of the split, the initialization and the shuffling (default 0)",
    "validation_fraction": "fraction of the training set held out for early stopping and "
                           "model choice, in (0, 1) (default 0.1)",
    "adversarial": "adversarial training (Madry et al.) against an attack, eps in the raw "
                   "data's units: pgd:eps=0.1,steps=7 or fgsm:eps=0.1",
    "distributed": "train with a parallel/distributed SGD strategy: hogwild (worker processes "
                   "on shared memory, plain SGD), sync (synchronous data parallel), downpour "
                   "(asynchronous parameter server; its optimizer defaults to adagrad), easgd "
                   "(elastic averaging)",
    "workers": "number of workers N ≥ 1 of --distributed (default 2)",
    "backend": "inprocess (default: sync/downpour/easgd workers take turns in this process, "
               "hogwild's are processes on this machine) or ray (sync, downpour and easgd, "
               "shards too, on Ray actors; pip install \"ermlab[distributed]\")",
    "address": "a Ray cluster to join, e.g. HEAD:6379 or auto after `ray start --head` "
               "(implies --backend ray; default RAY_ADDRESS, else a local Ray)",
    "n_fetch": "downpour: a worker pulls the parameters every N_FETCH of its steps (default 1)",
    "n_push": "downpour: a worker pushes its accrued gradient every N_PUSH steps (default 1)",
    "local_lr": "downpour: step size of a worker's local steps between fetches (default 0)",
    "shards": "downpour, easgd: parameter servers the parameters are split over (default 1)",
    "delay": "downpour, easgd: simulated staleness k ≥ 0 of the parameters a worker reads "
             "(default 0)",
    "tau": "easgd: worker steps between elastic moves τ ≥ 1 (default 1)",
    "alpha": "easgd: elasticity α in (0, 1) (default 0.9/workers)",
    "easgd_momentum": "easgd: Nesterov momentum δ in [0, 1) of the workers (EAMSGD; default 0)",
    "dp": "train with DP-SGD (no batch norm; --batch-size is the expected Poisson batch)",
    "clip": "--dp: clip norm C of each example's gradient (default 1.0)",
    "noise": "--dp: noise multiplier σ, noise std σC on the clipped sum (default: calibrated "
             "to spend --target-epsilon in --epochs)",
    "target_epsilon": "--dp: privacy budget ε; the run stops before an epoch that would exceed "
                      "it",
    "delta": "--dp: δ of (ε, δ)-DP, below 1/N (default 1e-5)",
    "accountant": "--dp: rdp (default) or pld (tighter, slower)",
}


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given: ``--config``, overridden by ``--set``, overridden by flags."""
    config = _read_config_file(args.config) if args.config else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE; got {item!r}")
        config[key.strip()] = _value(value)
    for key, word in WORDS.items():  # as the flags take them: in a file or --set too
        if isinstance(config.get(key), str) and config[key].strip().lower() == word:
            config[key] = None
    flags = [*FLAGS, "batch_norm", "verify", "distributed", *STRATEGY_FLAGS, "dp",
             *PRIVACY_FLAGS, "accountant"]
    config.update({flag: getattr(args, flag) for flag in flags if getattr(args, flag) is not None})
    if args.batch_size is not None:
        config["batch_size"] = _integer_or_word("--batch-size", args.batch_size, "full")
    if args.patience is not None:
        config["patience"] = _integer_or_word("--patience", args.patience, "none")
    return config


# config keys whose None is written as a word: on the command line, in a file, in --set
WORDS = {"batch_size": "full", "patience": "none"}


def _integer_or_word(flag: str, text: str, word: str) -> int | None:
    if text.strip().lower() == word:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag} takes an integer or {word}; got {text!r}") from None


def _value(text: str) -> Any:
    """A --set value: a TOML value (as in a --config file: 0.01, 1e-3, "tanh", 'tanh',
    [0.9, 0.99], true, inf), JSON's null (None), or else the text itself."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)  # null, and JSON's NaN and Infinity
    except json.JSONDecodeError:
        return text


def _read_config_file(path: str) -> dict[str, Any]:
    """``--config``: a TOML file, or a run's ``config.json`` (JSON), as a flat dict."""
    if str(path).endswith(".json"):
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {path} not found (or not a file)")
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise ValueError(f"{path} holds a JSON {type(document).__name__}, not an object "
                             "of config keys")
        return document
    return _read_toml(path)


def read_toml_document(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} not found (or not a file)")
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None


def _read_toml(path: str) -> dict[str, Any]:
    """The keys of a TOML config file, its ``[sections]`` flattened (they only group keys):
    a key set twice (in two sections, or in one and at the top), or a table where a value
    goes, is an error naming it."""
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, value in read_toml_document(path).items():
        section = key if isinstance(value, dict) else None
        for name, item in (value.items() if section else [(key, value)]):
            place = f"{name} in [{section}]" if section else name
            if isinstance(item, dict) or (section and section in DEFAULTS):
                table = place if isinstance(item, dict) else section
                raise ValueError(f"{path}: {table} is a table; a config key takes a number, "
                                 "a string, a boolean or a list (sections group keys, one "
                                 "level deep)")
            if name in flat:
                raise ValueError(f"{path}: {name} is set twice ({where[name]} and {place}); "
                                 "keep one")
            flat[name], where[name] = item, place
    return flat


def check_data(config: dict[str, Any], data: Any) -> None:
    """Refuse data the run cannot learn from (one class, a CNN or augmentation on tables).

    Warns (``warnings.warn``; the command prints one line) about test classes
    never trained on and images outside [0, 1] under the default preprocessing.
    """
    import warnings

    import numpy

    if len(data.image_shape) != 3 and config["model"] not in ("mlp", "linear"):
        fix = ("add a channel axis to one-channel images (x[:, None]: (N, 1, H, W)) or use "
               "--model mlp" if len(data.image_shape) == 2 else "use --model mlp")
        raise ValueError(f"--model {config['model']} needs image data (N, C, H, W); "
                         f"{config['dataset']} has rows of shape {data.image_shape}: {fix}")
    low, high = float(data.inputs.minimum.min()), float(data.inputs.maximum.max())
    if len(data.image_shape) == 3 and config["preprocess"] == "auto" and (low < 0 or high > 1):
        warnings.warn(f"{config['dataset']} images range over [{low:g}, {high:g}]; the "
                      "default preprocessing subtracts the mean image and expects pixels in "
                      "[0, 1]: divide them by 255, or use --preprocess standardize",
                      stacklevel=2)
    if len(data.image_shape) != 3 and config["augment"]:
        raise ValueError(f"--augment needs image data (N, C, H, W); {config['dataset']} has "
                         f"rows of shape {data.image_shape}: leave out --augment")
    if config["loss"] not in CLASSIFICATION_LOSSES:
        return
    seen = numpy.unique(data.y_train)
    if len(seen) < 2:
        raise ValueError(
            f"the training split of {config['dataset']} holds only class "
            f"{data.class_names[seen[0]] if len(seen) else '(none)'} ({len(data.y_train)} "
            "examples): a classifier needs examples of at least 2 classes")
    unseen = sorted(set(numpy.unique(data.y_test).tolist()) - set(seen.tolist()))
    if unseen:
        names = ", ".join(data.class_names[c] for c in unseen)
        warnings.warn(f"test class(es) {names} never occur in the training split; the model "
                      "cannot learn them, so their test examples count as errors", stacklevel=2)


class _EpochPrinter(Callback):
    """One line per epoch, for logs and pipes (the tqdm bar draws on terminals)."""

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        print(epoch_summary(logs), flush=True)


class _HistoryWriter(Callback):
    """Rewrite ``history.csv`` from the trainer's full history after every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        write_history_csv(trainer.history, self.path)


def write_history_csv(history: dict[str, list[Any]], path: Path) -> None:
    from ermlab.training.checkpoint import atomic_write_bytes

    keys = list(history)
    rows = [",".join(keys)]
    for i in range(max((len(v) for v in history.values()), default=0)):
        rows.append(",".join(str(history[k][i]) if i < len(history[k]) else "" for k in keys))
    atomic_write_bytes(path, ("\n".join(rows) + "\n").encode(), durable=False)


def _output_directory(args: argparse.Namespace, config: dict[str, Any]) -> Path:
    from ermlab import run as runs

    if args.output is not None and not args.output.strip():
        raise ValueError("--output needs a directory name; leave it out for runs/<name>")
    directory = Path(args.output) if args.output else runs.default_directory(config)
    runs.check_reusable(directory)
    return directory


def _check_cluster(config: dict[str, Any]) -> None:
    """The Ray cluster of --address / RAY_ADDRESS must answer before anything starts."""
    if config.get("backend") == "ray":
        from ermlab.distributed.address import check_address

        check_address(config.get("address"))


def run(args: argparse.Namespace) -> int:
    from ermlab import run as runs
    from ermlab.training import DivergenceGuard, ModelCheckpoint, ProgressBar

    say = (lambda *a, **k: None) if args.quiet else print
    plan = None
    if args.resume:
        directory = Path(args.resume)
        if args.output is not None and Path(args.output).resolve() != directory.resolve():
            raise ValueError(f"--resume continues the run in its own directory {directory}; "
                             f"leave out --output {args.output}")
        plan = runs.plan_resume(directory, _config_from_args(args))
        for note in plan.notes:
            runs.warn(note)
        config = plan.config
        _check_cluster(config)
        state = runs.load_preprocessor_state(directory) if plan.checkpoint else None
        inputs = runs.load_inputs(directory) if plan.checkpoint else None
        data = runs.prepare_data(config, state, trained_on=inputs)
    else:
        config = runs.resolve(_config_from_args(args))
        _check_cluster(config)
        directory = _output_directory(args, config)
        data = runs.prepare_data(config)
        check_data(config, data)
    printer = [] if args.quiet else [ProgressBar() if sys.stdout.isatty() else _EpochPrinter()]
    callbacks = [DivergenceGuard(raise_error=True), _HistoryWriter(directory / runs.HISTORY_FILE),
                 ModelCheckpoint(directory, monitor="val_loss"), *printer]
    trainer = runs.build_trainer(config, data, callbacks)
    finished = None
    # Only a run that could be built gets a directory (no half-written runs on bad settings);
    # a resume rewrites config.json only once its checkpoint is restored.
    if plan is not None and plan.checkpoint is not None:
        finished = runs.continue_training(trainer, plan)
        runs.save_config(directory, config)
        write_history_csv(trainer.history, directory / runs.HISTORY_FILE)
        say(f"resuming {directory} after epoch {trainer.epoch} ({plan.checkpoint.name})")
    else:
        if plan is not None:
            say(f"{directory} has no checkpoint yet: starting it again from scratch")
        runs.start_directory(directory, config, data)
    remaining = config["epochs"] - trainer.epoch
    say(f"{config['dataset']}: {len(data.x_train)} training, {len(data.x_val)} validation, "
        f"{len(data.x_test)} test examples, {len(data.class_names)} classes")
    if config["features"]:
        say(f"features: {data.preprocessor.steps[0].describe()}")
    say(f"model: {config['model']} {list(config['hidden']) if config['model'] == 'mlp' else ''}"
        f" {trainer.model.num_parameters():,} parameters; optimizer {trainer.optimizer!r}")
    start = time.perf_counter()
    if finished:
        say(f"nothing to train: {finished}")
    elif remaining > 0:
        trainer.fit(data.x_train, data.y_train, epochs=remaining,
                    batch_size=config["batch_size"], validation_data=(data.x_val, data.y_val))
    return _finish(trainer, data, directory, config, time.perf_counter() - start, say)


def _finish(trainer, data, directory: Path, config, seconds: float, say) -> int:
    from ermlab import run as runs
    from ermlab.training.checkpoint import atomic_write_bytes
    from ermlab.training.plots import plot_history

    which, tested_epoch = runs.tested_weights(directory, trainer.model)
    test = trainer.evaluate(data.x_test, data.y_test)
    metrics = {"epochs": trainer.epoch, "seconds": round(seconds, 3),
               "stop_reason": trainer.stop_reason,
               "tested_weights": which, "tested_epoch": tested_epoch,
               **{f"test_{key}": value for key, value in test.items()}}
    if trainer.privacy is not None:  # the privacy spent by the whole run
        metrics.update(epsilon=trainer.privacy.epsilon(trainer.step),
                       delta=trainer.privacy.delta)
    atomic_write_bytes(directory / runs.METRICS_FILE,
                       (json.dumps(metrics, indent=2) + "\n").encode())
    plot_history(trainer.history, directory, best_epoch=tested_epoch if which == "best" else None)
    if config["model"] == "linear" and not config["features"] and len(data.image_shape) in (2, 3):
        from ermlab.features.templates import linear_weight, save_templates

        save_templates(linear_weight(trainer.model), data.image_shape,
                       directory / "templates.png", data.class_names)
    say(f"run directory: {directory}")
    if trainer.stop_reason:
        say(f"stopped: {trainer.stop_reason}")
    results = ", ".join(f"test {key} {value:.4f}" for key, value in test.items())
    print(f"trained {trainer.epoch} epochs in {seconds:.1f} s; tested {which} (epoch "
          f"{tested_epoch}): {results}")
    return 0
