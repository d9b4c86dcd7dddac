"""The ``ermlab`` command.

    ermlab train       train an MLP (default: digits, offline) and report test metrics
    ermlab gradcheck   check every built-in module, loss and regularizer by finite differences

Errors are one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy

from ermlab.training.callbacks import Callback

EXIT_USAGE = 2


def _parse_hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden takes comma-separated layer widths like 512,256; got {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"--hidden widths must be positive; got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ermlab", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train an MLP and report test metrics")
    train.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    train.add_argument("--hidden", type=_parse_hidden, default=[128],
                       help="hidden layer widths, e.g. 512,256 (default: 128)")
    train.add_argument("--activation", default="relu")
    train.add_argument("--optimizer", default="adam", help="optimizer name (default: adam)")
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (default: the optimizer's; 0.1 for sgd)")
    train.add_argument("--momentum", type=float, default=0.9, help="for sgd (default 0.9)")
    train.add_argument("--epochs", type=int, default=100)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--l2", type=float, default=0.0, help="λ of the L2 penalty")
    train.add_argument("--l1", type=float, default=0.0, help="λ of the L1 penalty")
    train.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    train.add_argument("--validation-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(run=cmd_train)

    check = commands.add_parser("gradcheck", help="finite-difference check of every component")
    check.add_argument("--tolerance", type=float, default=1e-6)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(run=cmd_gradcheck)
    return parser


def _optimizer(name: str, params, args: argparse.Namespace):
    from ermlab import optim

    classes = {
        cls.__name__.lower(): cls
        for cls in vars(optim).values()
        if isinstance(cls, type) and issubclass(cls, optim.Optimizer) and cls is not optim.Optimizer
    }
    if name.lower() not in classes:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(sorted(classes))}")
    options = {}
    if args.lr is not None:
        options["lr"] = args.lr
    if name.lower() == "sgd":
        options.setdefault("lr", 0.1)
        options["momentum"] = args.momentum
    return classes[name.lower()](params, **options)


def _regularizer(args: argparse.Namespace):
    from ermlab import regularizers

    if args.l1 and args.l2:
        return regularizers.ElasticNet(args.l1, args.l2 / args.l1)
    if args.l2:
        return regularizers.L2(args.l2)
    if args.l1:
        return regularizers.L1(args.l1)
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from sklearn.model_selection import train_test_split

    from ermlab import data, losses, nn
    from ermlab.training import EarlyStopping, Trainer

    if not 0 < args.validation_fraction < 1:
        raise ValueError(f"--validation-fraction must be in (0, 1); got {args.validation_fraction}")
    dataset = data.load(args.dataset)
    x_train, x_val, y_train, y_val = train_test_split(
        dataset.x_train.reshape(len(dataset.x_train), -1), dataset.y_train,
        test_size=args.validation_fraction, stratify=dataset.y_train, random_state=args.seed)
    rng = numpy.random.default_rng(args.seed)
    sizes = [x_train.shape[1], *args.hidden, dataset.num_classes]
    model = nn.mlp(sizes, activation=args.activation, rng=rng)
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(),
                      _optimizer(args.optimizer, model.parameters(), args),
                      regularizer=_regularizer(args),
                      callbacks=[EarlyStopping("val_loss", patience=args.patience), _Printer()])
    print(f"{dataset!r}\nmodel: {'-'.join(map(str, sizes))} MLP, {args.activation}, "
          f"{model.num_parameters():,} parameters; optimizer {trainer.optimizer!r}")
    start = time.perf_counter()
    trainer.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                validation_data=(x_val, y_val), rng=rng)
    test = trainer.evaluate(dataset.x_test.reshape(len(dataset.x_test), -1), dataset.y_test)
    print(f"trained {trainer.epoch} epochs in {time.perf_counter() - start:.1f} s; "
          f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.2%}")
    return 0


class _Printer(Callback):
    def on_epoch_end(self, trainer, logs):
        print(f"epoch {logs['epoch']:3d}  loss {logs['loss']:.4f}  "
              f"val_loss {logs['val_loss']:.4f}  val_accuracy {logs['val_accuracy']:.2%}",
              flush=True)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from ermlab import gradcheck_suite

    results = gradcheck_suite.run(seed=args.seed)
    width = max(len(name) for _, name, _ in results)
    print(f"{'kind':<12} {'component':<{width}}  {'max rel. error':>14}  where")
    failures = 0
    for kind, name, result in results:
        ok = result.passed(args.tolerance)
        failures += not ok
        print(f"{kind:<12} {name:<{width}}  {result.max_rel_error:14.2e}  {result.where}"
              f"{'' if ok else '   FAIL'}")
    print(f"{len(results) - failures} passed, {failures} failed "
          f"(tolerance {args.tolerance:g}, float64, centred differences)")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        if args.debug:
            raise
        print(f"ermlab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
