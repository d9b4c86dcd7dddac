"""``ermlab evaluate RUN`` and ``ermlab predict RUN DATA``: use a trained run's model."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy


def add_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="metrics of a run's model on a split")
    evaluate.add_argument("run_dir", metavar="RUN", help="a run directory from `ermlab train`")
    evaluate.add_argument("--split", choices=("test", "validation", "train"), default="test",
                          help="which split to evaluate (default test)")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best",
                          help="best validation loss (default) or the last epoch's weights")
    evaluate.add_argument("--attack", metavar="SPEC",
                          help="also report the robust accuracy under an adversarial attack, "
                               "eps in the raw data's units: fgsm:eps=0.1 or "
                               "pgd:eps=0.1,steps=20[,step_size=A,norm=l2,samples=K]")
    evaluate.add_argument("--attack-examples", dest="attack_examples", type=int, default=None,
                          metavar="N", help="attack only the first N examples (default all)")
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser(
        "predict", help="predict classes for new data",
        description="Predict classes for new data: a CSV of index, label, class, then one "
                    "column per class: p_CLASS, the softmax probabilities, for a cross-entropy "
                    "model; score_CLASS, the raw margins f(x), for a hinge (SVM) model, whose "
                    "scores are not probabilities.")
    predict.add_argument("run_dir", metavar="RUN", help="a run directory from `ermlab train`")
    predict.add_argument("data", metavar="DATA",
                         help=".npy or .npz (key x or x_test) array, or .csv of feature columns "
                              "(UTF-8); images (N, C, H, W), or (N, H, W) for one channel, or "
                              "flattened (N, C·H·W)")
    predict.add_argument("--output", "-o", help="write a CSV here instead of standard output")
    predict.add_argument("--checkpoint", choices=("best", "last"), default="best",
                         help="best validation loss (default) or the last epoch's weights")
    predict.set_defaults(run=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from ermlab import run as runs

    if args.attack is None and args.attack_examples is not None:
        raise ValueError("--attack-examples only limits an --attack; add --attack SPEC (e.g. "
                         "--attack fgsm:eps=0.1) or leave out --attack-examples")
    restored = _restore(args)
    config, trainer = restored.config, restored.trainer
    attack = _attack(args, restored)
    data = runs.prepare_data(config, runs.load_preprocessor_state(Path(args.run_dir)),
                             trained_on=restored.inputs)
    x, y = {"test": (data.x_test, data.y_test), "validation": (data.x_val, data.y_val),
            "train": (data.x_train, data.y_train)}[args.split]
    results = trainer.evaluate(x, y)
    print(f"{Path(str(config['dataset'])).name} {args.split} split, {len(y)} examples, "
          f"{_loaded(args, restored)}: "
          + ", ".join(f"{key} {value:.4f}" for key, value in results.items()))
    if attack is not None:
        _report_attack(attack, args, restored, data, x, y)
    matrix = trainer.confusion_matrix(x, y)
    names = matrix_labels(data.class_names)
    w = len(names[0]) if names else 9
    print("confusion matrix (rows: true class, columns: predicted):")
    print(" " * (w + 1) + " ".join(f"{name:>{w}}" for name in names) + "   recall")
    for i, (name, row) in enumerate(zip(names, matrix)):
        recall = row[i] / max(row.sum(), 1)
        print(f"{name:>{w}} " + " ".join(f"{count:{w}d}" for count in row) + f"   {recall:.3f}")
    return 0


def _restore(args: argparse.Namespace):
    """``run.restore`` of the chosen checkpoint; a damaged one names the other to try."""
    from ermlab import run as runs
    from ermlab.training.checkpoint import CheckpointError

    try:
        return runs.restore(args.run_dir, args.checkpoint)
    except CheckpointError as error:
        if "truncated or corrupt" not in str(error):
            raise
        other = "last" if args.checkpoint == "best" else "best"
        raise ValueError(f"{error}; or use --checkpoint {other} to load the run's {other} "
                         "weights") from None


def _loaded(args: argparse.Namespace, restored) -> str:
    """Which checkpoint was loaded: ``best`` falls back to ``last`` when the run has none."""
    from ermlab import run as runs

    if args.checkpoint == "best" and restored.checkpoint.name != runs.BEST:
        return f"last checkpoint (epoch {restored.epoch}; the run has no {runs.BEST})"
    return f"{args.checkpoint} checkpoint (epoch {restored.epoch})"


def matrix_labels(class_names: list[str], widest: int = 16) -> list[str]:
    """Row and column labels of the confusion matrix, all of one width (9 to ``widest``
    characters): the class names, cut to fit, or, when two cut names would read the same,
    each prefixed with its class number."""
    names = [str(name) for name in class_names]
    width = max(9, min(widest, max(map(len, names), default=0)))
    short = [name[:width] for name in names]
    if len(set(short)) != len(short):
        short = [f"{i} {name}"[:width] for i, name in enumerate(names)]
    return [f"{name:>{width}}" for name in short]


def _attack(args: argparse.Namespace, restored):
    """The ``--attack`` spec parsed with the raw data's range as bounds (None without it)."""
    if args.attack is None:
        return None
    if restored.config.get("features"):
        raise ValueError("--attack attacks the images through the preprocessing, but this run "
                         f"was trained with --features {restored.config['features']}: its model "
                         "sees feature vectors computed once; leave out --attack")
    inputs = restored.inputs
    if args.attack_examples is not None and args.attack_examples < 1:
        raise ValueError(f"--attack-examples must be ≥ 1; got {args.attack_examples}")
    from ermlab import robustness

    return robustness.parse(args.attack, bounds=(float(inputs.minimum.min()),
                                                  float(inputs.maximum.max())))


def _report_attack(attack, args: argparse.Namespace, restored, data, x, y) -> None:
    """Robust accuracy of the run's model (with its preprocessing in front, so that eps is
    in raw units) on the first ``--attack-examples`` examples."""
    from ermlab import robustness

    inputs = restored.inputs
    probe = numpy.random.default_rng(0).uniform(
        float(inputs.minimum.min()), float(inputs.maximum.max()), (2, *inputs.shape))
    affine = robustness.AffineInput.of(data.preprocessor, inputs.shape, dtype=x.dtype,
                                       probe=probe.astype(x.dtype))
    count = len(y) if args.attack_examples is None else min(args.attack_examples, len(y))
    result = robustness.robust_accuracy(restored.trainer.model, x[:count], y[:count],
                                        robustness.RawUnits(attack, affine),
                                        rng=restored.config["seed"])
    print(f"under attack {attack!r} (raw units, inputs in [{inputs.minimum.min():g}, "
          f"{inputs.maximum.max():g}]), {count} examples: accuracy {result['accuracy']:.4f}, "
          f"robust accuracy {result['robust_accuracy']:.4f}")


def read_inputs(path: str) -> numpy.ndarray:
    """Inputs from a .npy, .npz (key ``x`` or ``x_test``) or .csv file (numbers only)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no data file at {file}")
    suffix = file.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _read_array(file)
    if suffix == ".csv":
        return _read_csv(file)
    raise ValueError(f"{file}: use a .npy, .npz or .csv file")


def _read_array(file: Path) -> numpy.ndarray:
    """The array of a .npy file, or of key ``x`` or ``x_test`` of a .npz file; a file numpy
    cannot read is one error naming it."""
    import zipfile

    try:
        if file.suffix.lower() == ".npy":
            return numpy.load(file, allow_pickle=False)
        with numpy.load(file, allow_pickle=False) as archive:
            key = next((key for key in ("x", "x_test") if key in archive), None)
            if key is None:
                raise LookupError(archive.files)
            return archive[key]
    except LookupError as missing:
        raise ValueError(f"{file} has no array named x or x_test (it has "
                         f"{missing.args[0]})") from None
    except ValueError as error:
        if "Object arrays" in str(error):
            raise ValueError(f"{file} holds an array of Python objects, which ermlab never "
                             "loads (no pickle): save an array of numbers, e.g. "
                             "numpy.save(path, x.astype('float32'))") from None
        if "pickled data" in str(error):
            raise ValueError(f"{file} is not a {file.suffix} array file (numpy would have to "
                             "unpickle it, which ermlab never does): save the array with "
                             "numpy.save or numpy.savez") from None
        raise ValueError(f"{file} is not a valid {file.suffix} array file ({error}); save it "
                         "again with numpy.save or numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{file} is not a valid {file.suffix} array file ({error}); save it "
                         "again with numpy.save or numpy.savez") from None


def _read_csv(file: Path) -> numpy.ndarray:
    """Rows of numbers from a UTF-8 .csv file; a first row that is not numbers is a header."""
    try:
        with file.open(encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError as error:
        raise ValueError(f"{file} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
                         f"offset {error.start}): save the CSV as UTF-8") from None
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        short = next(i for i, row in enumerate(rows) if len(row) != len(rows[0]))
        raise ValueError(f"{file}: rows have different numbers of cells ({len(rows[0])} in "
                         f"the first, {len(rows[short])} in data row {short + 1})")
    try:
        return numpy.array([[float(cell) for cell in row] for row in rows])
    except ValueError as error:
        raise ValueError(f"{file}: every cell must be a number ({error})") from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def run_predict(args: argparse.Namespace) -> int:
    """Predict, then write the whole CSV at once: a failure leaves ``--output`` untouched."""
    from ermlab import run as runs
    from ermlab.training.checkpoint import atomic_write_bytes

    if args.output and Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a directory; name a file, e.g. "
                         f"{Path(args.output) / 'predictions.csv'}")
    restored = _restore(args)
    inputs = restored.inputs
    x = read_inputs(args.data)
    shape = inputs.shape
    if x.ndim == 2 and len(shape) > 1 and x.shape[1] == int(numpy.prod(shape)):
        x = x.reshape((len(x), *shape))
    if len(shape) == 3 and shape[0] == 1 and tuple(x.shape[1:]) == tuple(shape[1:]):
        x = x[:, None]  # (N, H, W) images for a one-channel model
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{args.data}: the model takes inputs of shape (N, "
                         f"{', '.join(map(str, shape))}); got {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{args.data} holds no examples")
    if x.dtype.kind not in "iufb":
        raise ValueError(f"{args.data}: inputs must be numbers; got {x.dtype}")
    x = x.astype(inputs.dtype)
    runs.check_finite(x, str(args.data))
    inputs.warn_if_far(x, str(args.data))
    scores = restored.trainer.predict_scores(restored.preprocessor.transform(x))
    runs.check_finite(scores, f"the model's scores for {args.data}")
    columns, values = _class_columns(restored.config, scores)
    labels = scores.argmax(axis=1)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    names = inputs.class_names
    writer.writerow(["index", "label", "class", *(f"{columns}_{n}" for n in names)])
    for i, (label, p) in enumerate(zip(labels, values)):
        writer.writerow([i, int(label), names[label], *(f"{v:.6f}" for v in p)])
    if args.output:
        atomic_write_bytes(args.output, text.getvalue().encode(), durable=False)
    else:
        sys.stdout.write(text.getvalue())
    return 0


def _class_columns(config: dict, scores: numpy.ndarray) -> tuple[str, numpy.ndarray]:
    """("p", softmax probabilities) for a cross-entropy model; ("score", the margins) for a
    hinge model, whose scores estimate no probability (Crammer & Singer 2001)."""
    if config.get("loss", "cross_entropy") != "cross_entropy":
        return "score", scores
    shifted = numpy.exp(scores - scores.max(axis=1, keepdims=True))
    return "p", shifted / shifted.sum(axis=1, keepdims=True)
