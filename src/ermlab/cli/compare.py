"""``ermlab compare``: linear classifiers on pixels and on image features vs networks, one table.

    ermlab compare --train-size 10000 --epochs 10 --output runs/compare

trains every method of ``ermlab.features.compare.METHODS`` (linear softmax and
SVM on pixels, on features, an MLP on features and on pixels, LeNet-5) on
Fashion-MNIST (or ``--dataset cifar10 --data-path DIR``, any image dataset),
prints the Markdown table of test accuracy and wall time, and with
``--output DIR`` also writes ``table.md``, ``results.json``, ``templates.png``
(the raw-pixel softmax classifier's weights, one image per class) and
``polar.png`` (the polar-transform demo).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(commands) -> None:
    from ermlab.features.compare import METHODS

    parser = commands.add_parser(
        "compare", help="image features + linear classifiers vs neural networks: one table",
        description="Train linear classifiers (softmax, multiclass SVM) on raw pixels and on "
                    "hand-made image features, an MLP on both and a CNN (LeNet-5), and print "
                    "their test accuracy and wall time.")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="an image dataset of `ermlab datasets` (default fashion-mnist; "
                             "cifar10 with its files in --data-path)")
    parser.add_argument("--data-path", dest="data_path", default=None,
                        help="read the dataset's files from this directory")
    parser.add_argument("--features", default="hog:4:2,hsv-hist",
                        help="feature pipeline, e.g. hog,hsv-hist:10 or equalize,hog:4:2,bow:64 "
                             "(default hog:4:2,hsv-hist: 4×4-pixel cells suit 28×28 images; "
                             "steps: hog, hsv-hist, quantize, bow, equalize, pixels)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    parser.add_argument("--train-size", dest="train_size", type=int, default=None,
                        help="subsample the training set to N images (stratified; default all)")
    parser.add_argument("--test-size", dest="test_size", type=int, default=None,
                        help="subsample the test set to N images (default all)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="most epochs per method (default 20; early stopping)")
    parser.add_argument("--patience", type=int, default=3,
                        help="early-stopping patience on the validation loss (default 3)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=128,
                        help="mini-batch size (default 128)")
    parser.add_argument("--hidden", default="256", help="MLP hidden widths (default 256)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's step size (default 1e-3)")
    parser.add_argument("--l2", type=float, default=1e-4, help="L2 penalty λ (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subsampling, the split, the initializations, the "
                             "shuffling and the learned features (default 0)")
    parser.add_argument("--output", "-o", metavar="DIR",
                        help="also write table.md, results.json, templates.png and polar.png")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ermlab.config import validate
    from ermlab.features import compare as comparison

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    hidden = validate({"hidden": args.hidden})["hidden"]
    for flag in ("epochs", "patience", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be ≥ 1; got {getattr(args, flag)}")
    output = Path(args.output) if args.output else None
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    try:
        results = comparison.compare(
            args.dataset, args.data_path, args.features, methods, args.train_size,
            args.test_size, args.epochs, args.patience, args.batch_size, hidden, args.lr,
            args.l2, args.seed, report=lambda line: print(line, flush=True),
            on_model=_on_model(sizes, output))
    except ImportError as error:  # one line: how to install scikit-image
        raise ValueError(str(error)) from None
    title = (f"{args.dataset}: {_size(sizes, 'train', args.train_size)} training images, "
             f"{_size(sizes, 'test', args.test_size)} test images, seed {args.seed}")
    text = comparison.table(results, title)
    print(text, end="")
    if output is not None:
        from ermlab.features.polar import polar_demo
        from ermlab.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(output / "table.md", text.encode(), durable=False)
        atomic_write_bytes(output / "results.json", (json.dumps(
            comparison.as_json(results), indent=2) + "\n").encode(), durable=False)
        demo = polar_demo(output / "polar.png", seed=args.seed)
        print(f"polar demo: linear classifier on circles {100 * demo.accuracy_cartesian:.1f} % "
              f"in (x₁, x₂), {100 * demo.accuracy_polar:.1f} % in (r, θ)")
        print(f"written: {output}/table.md, results.json, polar.png"
              + (", templates.png" if "pixels-softmax" in methods else ""))
    return 0


def _size(sizes: dict[str, int], split: str, asked: int | None) -> str:
    """How many images of ``split`` the methods used (--train-size and --test-size larger
    than the dataset take all of it), or what was asked when no method ran."""
    return str(sizes.get(split, asked or "all"))


def _on_model(sizes: dict[str, int], output: Path | None):
    """Note the sizes of the split each method saw; with ``output``, draw the templates."""
    draw = None if output is None else _templates(output)

    def seen(method, trainer, split) -> None:
        sizes.update(train=len(split.y_train) + len(split.y_val), test=len(split.y_test))
        if draw is not None:
            draw(method, trainer, split)

    return seen


def _templates(output: Path):
    def draw(method, trainer, split) -> None:
        if method == "pixels-softmax":
            from ermlab.features.templates import linear_weight, save_templates

            save_templates(linear_weight(trainer.model), split.x_train.shape[1:],
                           output / "templates.png", split.class_names)

    return draw
