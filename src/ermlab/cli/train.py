"""``ermlab train``: train a network from flags and/or a TOML file, recording a run directory.

Precedence: explicit flags > ``--config FILE.toml`` > defaults (``ermlab.run``).
``--resume RUN`` continues a run from its last checkpoint, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ermlab.training.callbacks import Callback

# flag → config key, for the flags that map one to one.
FLAGS = {
    "dataset": str, "data_path": str, "model": str, "hidden": str, "activation": str,
    "loss": str, "optimizer": str, "lr": float, "momentum": float, "weight_decay": float,
    "schedule": str, "epochs": int, "l1": float, "l2": float, "max_norm": float,
    "dropout": float, "preprocess": str, "augment": str, "seed": int,
    "validation_fraction": float,
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config key, e.g. --set betas=[0.9,0.99] (JSON values)")
    parser.add_argument("--output", "-o", metavar="DIR", help="run directory (default: runs/…)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in directory RUN")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    parser.set_defaults(run=run)


_HELP = {
    "dataset": "dataset name (default digits); see `ermlab datasets`",
    "data_path": "read the dataset from this directory or file instead of the cache",
    "model": "mlp (default) or a model-zoo name such as lenet5, resnet20",
    "hidden": "MLP hidden widths, e.g. 512,256 (default 128)",
    "optimizer": "sgd, adam (default), adamw, nadam, rmsprop, adagrad, adadelta, adamax, ...",
    "lr": "learning rate (default: the optimizer's)",
    "schedule": "none, cosine, step:S[:G], multistep:M1+M2[:G], exponential:G, "
                "inverse_time:D[:C], warm_restarts:T0[:TMULT], plateau[:FACTOR[:PATIENCE]]",
    "l1": "λ of the L1 penalty", "l2": "λ of the L2 penalty",
    "preprocess": "standardize (default), mean_image, channel_mean or none",
    "augment": "augmentation spec, e.g. crop:2,flip,rotate:10",
}


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    config = _read_toml(args.config) if args.config else {}
    flags = [*FLAGS, "batch_norm"]
    config.update({flag: getattr(args, flag) for flag in flags if getattr(args, flag) is not None})
    if args.batch_size is not None:
        config["batch_size"] = None if args.batch_size == "full" else _integer(
            "--batch-size", args.batch_size)
    if args.patience is not None:
        config["patience"] = None if args.patience == "none" else _integer(
            "--patience", args.patience)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE; got {item!r}")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[key.strip()] = value
    return config


def _integer(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag} takes an integer; got {text!r}") from None


def read_toml_document(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None


def _read_toml(path: str) -> dict[str, Any]:
    flat = {}
    for key, value in read_toml_document(path).items():  # [sections] are flattened
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


class _EpochPrinter(Callback):
    """One line per epoch, for logs and pipes (the tqdm bar draws on terminals)."""

    def on_epoch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        parts = [f"epoch {logs['epoch']:3d}", f"loss {logs['loss']:.4f}"]
        parts += [f"{key} {value:.4f}" for key, value in logs.items() if key.startswith("val_")]
        print("  ".join(parts), flush=True)


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
    if args.output:
        directory = Path(args.output)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = Path("runs") / f"{config['dataset']}-{config['model']}-{stamp}"
    from ermlab import run as runs

    if (directory / runs.CONFIG_FILE).exists():
        raise ValueError(f"{directory} already holds a run; continue it with "
                         f"`ermlab train --resume {directory}` or choose another --output")
    return directory


def run(args: argparse.Namespace) -> int:
    from ermlab import run as runs
    from ermlab.training import DivergenceGuard, ModelCheckpoint, ProgressBar

    say = (lambda *a, **k: None) if args.quiet else print
    if args.resume:
        directory = Path(args.resume)
        config = runs.load_config(directory)
        overrides = _config_from_args(args)
        unsupported = sorted(set(overrides) - {"epochs"})
        if unsupported:
            raise ValueError(f"--resume continues the saved configuration; only --epochs can "
                             f"change (got {', '.join(unsupported)})")
        config = runs.resolve({**config, **overrides})
        data = runs.prepare_data(config, runs.load_preprocessor_state(directory))
    else:
        config = runs.resolve(_config_from_args(args))
        directory = _output_directory(args, config)
        data = runs.prepare_data(config)
    printer = [] if args.quiet else [ProgressBar() if sys.stdout.isatty() else _EpochPrinter()]
    callbacks = [DivergenceGuard(raise_error=True), _HistoryWriter(directory / runs.HISTORY_FILE),
                 ModelCheckpoint(directory, monitor="val_loss"), *printer]
    trainer = runs.build_trainer(config, data, callbacks)
    # Only a run that could be built gets a directory (no half-written runs on bad settings).
    if not args.resume:
        directory.mkdir(parents=True, exist_ok=True)
        runs.save_preprocessor(directory, data.preprocessor)
    runs.save_config(directory, config)
    if args.resume:
        trainer.resume(directory / runs.LAST)
        say(f"resuming {directory} after epoch {trainer.epoch}")
    remaining = config["epochs"] - trainer.epoch
    say(f"{config['dataset']}: {len(data.x_train)} training, {len(data.x_val)} validation, "
        f"{len(data.x_test)} test examples, {len(data.class_names)} classes")
    say(f"model: {config['model']} {list(config['hidden']) if config['model'] == 'mlp' else ''}"
        f" {trainer.model.num_parameters():,} parameters; optimizer {trainer.optimizer!r}")
    start = time.perf_counter()
    if remaining > 0:
        trainer.fit(data.x_train, data.y_train, epochs=remaining,
                    batch_size=config["batch_size"], validation_data=(data.x_val, data.y_val))
    return _finish(trainer, data, directory, config, time.perf_counter() - start, say)


def _finish(trainer, data, directory: Path, config, seconds: float, say) -> int:
    from ermlab import run as runs
    from ermlab.training.checkpoint import atomic_write_bytes, load_checkpoint
    from ermlab.training.plots import plot_history

    load_checkpoint(runs.model_checkpoint(directory, "best"), model=trainer.model)
    test = trainer.evaluate(data.x_test, data.y_test)
    metrics = {"epochs": trainer.epoch, "seconds": round(seconds, 3),
               "stop_reason": trainer.stop_reason,
               **{f"test_{key}": value for key, value in test.items()}}
    atomic_write_bytes(directory / runs.METRICS_FILE,
                       (json.dumps(metrics, indent=2) + "\n").encode())
    plot_history(trainer.history, directory)
    say(f"run directory: {directory}")
    if trainer.stop_reason:
        say(f"stopped: {trainer.stop_reason}")
    print(f"trained {trainer.epoch} epochs in {seconds:.1f} s; "
          + ", ".join(f"test {key} {value:.4f}" for key, value in test.items()))
    return 0
