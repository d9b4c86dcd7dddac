"""The table of the seeds' slide "Image features vs neural networks", on your data.

Every method is an ermlab model trained by the one Trainer (Adam, mini-batches,
early stopping on a stratified validation split whose best weights are kept),
and tested on the test split:

=================  ==============================  =====================================
method             inputs                          model and loss
=================  ==============================  =====================================
pixels-softmax     pixels − mean training image    Linear, softmax cross-entropy
pixels-svm         pixels − mean training image    Linear, multiclass hinge (Weston-Watkins)
features-softmax   features, standardized          Linear, softmax cross-entropy
features-svm       features, standardized          Linear, multiclass hinge
features-ova-svm   features, standardized          Linear, one-vs-all hinge (C binary SVMs)
features-mlp       features, standardized          MLP (``hidden``), softmax cross-entropy
pixels-mlp         pixels − mean training image    MLP (``hidden``), softmax cross-entropy
cnn                images − mean training image    LeNet-5, softmax cross-entropy
=================  ==============================  =====================================

The feature pipeline (default ``hog,hsv-hist``; see ``ermlab.features.parse``)
is fitted on the training split only and extracted once; its time counts in
each features row. Accuracy is the test accuracy of the best-validation
weights; time is wall-clock seconds (feature extraction + training).

Measured on Fashion-MNIST (``ermlab compare``, defaults: features
``hog:4:2,hsv-hist`` = 1,306 values, Adam 10⁻³, L2 10⁻⁴, batch 128, patience 3,
at most 10 epochs; 2 shared cores under a load average of 15–22 from other
jobs, so the times are several times an idle machine's). All 60,000 training
images (54,000 + 6,000 validation), 10,000 test:

    pixels-softmax 84.1 % (416 s), pixels-svm 83.9 % (420 s),
    features-softmax 88.2 % (331 s, of which 71 s features for 70,000 images),
    features-svm 87.9 % (327 s)

``--train-size 10000`` (9,000 + 1,000 validation), all 10,000 test images:

    pixels-softmax 82.5 % (51 s), pixels-svm 82.4 % (42 s),
    features-softmax 86.0 % (72 s, 25 s features), features-svm 85.4 % (70 s),
    features-mlp 86.6 % (174 s), pixels-mlp 85.4 % (159 s), cnn (LeNet-5) 85.4 % (1,283 s)

As in the cs231n CIFAR-10 exercises (linear on pixels ≈ 38–40 %, HoG + hue
histogram + linear SVM ≈ 44–46 %), the features lift a linear classifier by a
few points (here 4); a network on the features does better again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy

METHODS: dict[str, tuple[str, str, str]] = {  # name: (inputs, model, loss)
    "pixels-softmax": ("pixels", "linear", "cross_entropy"),
    "pixels-svm": ("pixels", "linear", "hinge"),
    "features-softmax": ("features", "linear", "cross_entropy"),
    "features-svm": ("features", "linear", "hinge"),
    "features-ova-svm": ("features", "linear", "ova_hinge"),
    "features-mlp": ("features", "mlp", "cross_entropy"),
    "pixels-mlp": ("pixels", "mlp", "cross_entropy"),
    "cnn": ("images", "lenet5", "cross_entropy"),
}


@dataclass
class Result:
    """One row of the table."""

    method: str
    inputs: str
    model: str
    loss: str
    test_accuracy: float
    extract_seconds: float
    train_seconds: float
    epochs: int
    parameters: int

    @property
    def seconds(self) -> float:
        return self.extract_seconds + self.train_seconds


@dataclass
class Split:
    x_train: numpy.ndarray
    y_train: numpy.ndarray
    x_val: numpy.ndarray
    y_val: numpy.ndarray
    x_test: numpy.ndarray
    y_test: numpy.ndarray
    class_names: list[str]


def compare(dataset: str = "fashion-mnist", data_path: str | None = None,
            features: str = "hog,hsv-hist", methods: Sequence[str] = tuple(METHODS),
            train_size: int | None = None, test_size: int | None = None, epochs: int = 20,
            patience: int = 3, batch_size: int = 128, hidden: Sequence[int] = (256,),
            lr: float = 1e-3, l2: float = 1e-4, seed: int = 0,
            report: Callable[[str], Any] = lambda line: None,
            on_model: Callable[[str, Any, Split], Any] | None = None) -> list[Result]:
    """Train and test every method of ``methods`` on ``dataset``; one ``Result`` each.

    ``train_size``/``test_size`` subsample the training and test sets (stratified,
    seeded) so the table takes minutes; ``report`` gets a line per step;
    ``on_model(method, trainer, split)`` sees each trained model (e.g. to draw
    the templates of ``pixels-softmax``).
    """
    from ermlab.features.pipeline import parse

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"compare: unknown method(s) {unknown}; choose among "
                         f"{', '.join(METHODS)}")
    pipeline = parse(features, seed=seed)  # a bad spec fails before any data is read
    split = load_split(dataset, data_path, train_size, test_size, seed)
    report(f"{dataset}: {len(split.x_train)} training, {len(split.x_val)} validation, "
           f"{len(split.x_test)} test images of shape {split.x_train.shape[1:]}")
    inputs_of: dict[str, tuple[tuple[numpy.ndarray, ...], float]] = {}
    if any(METHODS[m][0] == "features" for m in methods):  # a bad pipeline fails first
        inputs_of["features"] = _inputs("features", split, pipeline, report)
    results = []
    for method in methods:
        kind, model, loss = METHODS[method]
        if kind not in inputs_of:
            inputs_of[kind] = _inputs(kind, split, pipeline, report)
        (x_train, x_val, x_test), extract = inputs_of[kind]
        trainer, seconds = _train(model, loss, x_train, split.y_train, x_val, split.y_val,
                                  len(split.class_names), epochs, patience, batch_size, hidden,
                                  lr, l2, seed)
        accuracy = float(trainer.evaluate(x_test, split.y_test)["accuracy"])
        name = f"mlp {','.join(map(str, hidden))}" if model == "mlp" else model
        result = Result(method, features if kind == "features" else kind, name, loss, accuracy,
                        extract, seconds, trainer.epoch, trainer.model.num_parameters())
        report(f"{method}: test accuracy {100 * accuracy:.1f} %, {result.seconds:.1f} s "
               f"({trainer.epoch} epochs)")
        results.append(result)
        if on_model is not None:
            on_model(method, trainer, split)
    return results


def load_split(dataset: str, data_path: str | None, train_size: int | None,
               test_size: int | None, seed: int, validation: float = 0.1) -> Split:
    """The dataset's images, subsampled (stratified) and split into train/validation/test."""
    from ermlab import data
    from ermlab.features.images import as_images

    loaded = data.load(dataset, **({"path": data_path} if data_path else {}))
    if numpy.ndim(loaded.x_train) == 2:
        raise ValueError(f"compare: {dataset}: got rows of shape {loaded.x_train.shape[1:]} "
                         "(table data, not images); every compare method (mean image, image "
                         "features, LeNet-5) needs images (N, H, W) or (N, C, H, W): reshape "
                         f"the rows to images first, or use `ermlab train --dataset {dataset}` "
                         "for table data")
    if numpy.ndim(loaded.x_train) != 4:
        as_images(loaded.x_train[:1], f"compare: {dataset}")  # one line: not images
    x, y = _subsample(loaded.x_train, loaded.y_train, train_size, seed, "train_size")
    x_test, y_test = _subsample(loaded.x_test, loaded.y_test, test_size, seed, "test_size")
    x_train, x_val, y_train, y_val = _stratified(x, y, validation, seed)
    return Split(x_train, y_train, x_val, y_val, x_test, y_test, list(loaded.class_names))


def _subsample(x: numpy.ndarray, y: numpy.ndarray, size: int | None, seed: int,
               what: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    if size is None or size >= len(y):
        return numpy.asarray(x), numpy.asarray(y)
    if size < 2 * len(numpy.unique(y)):
        raise ValueError(f"compare: {what} {size} is too small: give at least two examples "
                         f"per class ({2 * len(numpy.unique(y))})")
    kept, _, y_kept, _ = _stratified(x, y, 1 - size / len(y), seed)
    return kept, y_kept


def _stratified(x, y, fraction, seed):
    from sklearn.model_selection import train_test_split

    return train_test_split(numpy.asarray(x), numpy.asarray(y), test_size=fraction,
                            stratify=y, random_state=seed)


def _inputs(kind: str, split: Split, pipeline: Any,
            report: Callable[[str], Any]) -> tuple[tuple[numpy.ndarray, ...], float]:
    """(train, validation, test) inputs of ``kind`` and the seconds the features took."""
    from ermlab.data import preprocessing

    xs = (split.x_train, split.x_val, split.x_test)
    if kind == "features":
        start = time.perf_counter()
        xs = (pipeline.fit_transform(xs[0]), pipeline.transform(xs[1]),
              pipeline.transform(xs[2]))
        seconds = time.perf_counter() - start
        n = sum(len(x) for x in xs)
        report(f"features {pipeline.describe()}: {seconds:.1f} s for {n} images "
               f"({n / seconds:.0f} images/s)")
        steps = [preprocessing.Standardize("feature")]
    else:
        seconds = 0.0
        steps = [preprocessing.MeanImage()] + ([preprocessing.Flatten()] if kind == "pixels"
                                               else [])
    prepare = preprocessing.Pipeline(steps).fit(xs[0])
    return tuple(prepare.transform(x) for x in xs), seconds


def _train(model: str, loss: str, x_train, y_train, x_val, y_val, n_classes: int, epochs: int,
           patience: int, batch_size: int, hidden: Sequence[int], lr: float, l2: float,
           seed: int) -> tuple[Any, float]:
    """A Trainer of ``model`` fitted with early stopping; and its wall time in seconds."""
    from ermlab import config as training_config
    from ermlab.nn import zoo
    from ermlab.training import EarlyStopping, Trainer

    rng = numpy.random.default_rng(seed)
    settings = {"hidden": list(hidden) if model == "mlp" else [], "loss": loss, "lr": lr,
                "l2": l2, "batch_size": batch_size, "optimizer": "adam"}
    if model == "linear":  # a convex problem: start at W = 0, so the templates show only
        settings["weight_init"] = "zeros"  # what was learned
    if model == "lenet5":
        network = zoo.lenet5(num_classes=n_classes, input_shape=x_train.shape[1:], rng=rng)
    else:
        network = training_config.build_model(settings, x_train.shape[1], n_classes, rng)
    trainer = Trainer(network, training_config.build_loss(settings),
                      training_config.build_optimizer(settings, network.parameters()),
                      regularizer=training_config.build_regularizer(settings),
                      callbacks=[EarlyStopping("val_loss", patience=patience)], rng=rng)
    start = time.perf_counter()
    trainer.fit(x_train, y_train, epochs=epochs, batch_size=batch_size,
                validation_data=(x_val, y_val))
    return trainer, time.perf_counter() - start


def table(results: Sequence[Result], title: str = "") -> str:
    """The results as a Markdown table."""
    lines = ([f"**{title}**", ""] if title else []) + [
        "| method | inputs | model | loss | test accuracy | time (s) | of which features (s) "
        "| epochs | parameters |",
        "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.method} | {r.inputs} | {r.model} | {r.loss} | "
                     f"{100 * r.test_accuracy:.1f} % | {r.seconds:.1f} | "
                     f"{r.extract_seconds:.1f} | {r.epochs} | {r.parameters:,} |")
    return "\n".join(lines) + "\n"


def as_json(results: Sequence[Result]) -> list[dict[str, Any]]:
    return [{**asdict(r), "seconds": round(r.seconds, 3)} for r in results]
