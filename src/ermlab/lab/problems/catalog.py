"""The lab's learning problems: their data, models and budgets (see ``learning``'s table).

Data and model builders are module-level functions so that a problem travels
to a worker process by pickling (multiprocessing's spawn start method).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy

from ermlab.lab.problems.learning import LearningProblem

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NQM_DIM = 100
TEACHER_SIZES = (10, 32, 32, 32, 10)


# -- data ------------------------------------------------------------------------------------


def idx_images(data_path: str | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """MNIST-format IDX data as (N, 1, H, W) floats in [0, 1] and integer labels.

    ``data_path``: a folder holding the four IDX files (``train-images-idx3-ubyte``
    etc., gzipped or not) of any MNIST-format set; None: Fashion-MNIST from
    ermlab's cache or the system's data folders (``ermlab.data``).
    """
    if data_path is None:
        from ermlab.data import datasets

        data = datasets.load("fashion-mnist", download=False)
        return data.x_train, data.y_train, data.x_test, data.y_test
    from ermlab.data.idx import read_idx

    folder = Path(data_path).expanduser()
    arrays = []
    for name in IDX_FILES:
        path = next((folder / n for n in (f"{name}.gz", name) if (folder / n).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{folder}: no {name}(.gz); an MNIST-format folder holds "
                                    f"{', '.join(IDX_FILES)}")
        arrays.append(read_idx(path, ndim=3 if "images" in name else 1))
    x_train, y_train, x_test, y_test = arrays
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    dtype = numpy.float32
    return ((x_train[:, None] / dtype(255)).astype(dtype), y_train.astype(numpy.int64),
            (x_test[:, None] / dtype(255)).astype(dtype), y_test.astype(numpy.int64))


def idx_flat(data_path: str | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """``idx_images`` with every image flattened to a vector (784 for 28×28)."""
    x_train, y_train, x_test, y_test = idx_images(data_path, settings)
    return (x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1), y_test)


def nqm_data(data_path: str | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """Noisy quadratic model data: c ~ N(0, H⁻¹), H = diag(1/i), as √(d h/2)·c.

    With the model s = √(d h / 2)·(θ − c) and the mean squared error over the d
    components, an example's loss is ½ (θ − c)ᵀ H (θ − c); a batch of B examples
    has gradient H(θ − c̄), whose noise has covariance H H⁻¹ H / B = H / B.
    """
    rng = numpy.random.default_rng(1)
    h = nqm_curvature()
    scale = numpy.sqrt(NQM_DIM * h / 2)

    def draw(n: int) -> numpy.ndarray:
        return (rng.standard_normal((n, NQM_DIM)) / numpy.sqrt(h) * scale).astype(numpy.float32)

    n_train = int(settings.get("pool", 20_000))
    x_train, x_test = draw(n_train), draw(10_000)
    zeros = numpy.zeros((1, NQM_DIM), numpy.float32)
    return x_train, numpy.repeat(zeros, n_train, 0), x_test, numpy.repeat(zeros, 10_000, 0)


def nqm_curvature() -> numpy.ndarray:
    return 1.0 / numpy.arange(1, NQM_DIM + 1)


def teacher_data(data_path: str | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """Gaussian inputs (10-D) labelled by the argmax of a fixed random 10-32-32-32-10 ReLU net."""
    from ermlab import nn

    rng = numpy.random.default_rng(2)
    teacher = nn.mlp(list(TEACHER_SIZES), rng=rng, dtype=numpy.float32).eval()
    x = rng.standard_normal((20_000, TEACHER_SIZES[0])).astype(numpy.float32)
    y = teacher.forward(x).argmax(axis=1).astype(numpy.int64)
    return x[:15_000], y[:15_000], x[15_000:], y[15_000:]


# -- models ----------------------------------------------------------------------------------


def logistic_regression(problem, input_shape, n_outputs, rng):
    from ermlab import nn

    return nn.mlp([math.prod(input_shape), n_outputs], rng=rng)


def mlp_1000(problem, input_shape, n_outputs, rng):
    from ermlab import nn

    return nn.mlp([math.prod(input_shape), 1000, 1000, n_outputs], dropout=0.5, rng=rng)


def relu4(problem, input_shape, n_outputs, rng):
    from ermlab import nn

    return nn.mlp([math.prod(input_shape), 32, 32, 32, n_outputs], rng=rng)


def net_2c2d(problem, input_shape, n_outputs, rng):
    """DeepOBS's 2c2d: two 5×5 'same' convolutions (32, 64) with 2×2 max-pooling, dense 1024."""
    from ermlab import nn

    channels, height, width = input_shape
    flat = 64 * math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(flat, 1024, weight_init="he_uniform", rng=rng), nn.ReLU(),
        nn.Linear(1024, n_outputs, rng=rng))


def nqm_model(problem, input_shape, n_outputs, rng):
    from ermlab.lab.problems.quadratic import NoisyQuadraticModel

    return NoisyQuadraticModel(numpy.sqrt(NQM_DIM * nqm_curvature() / 2), rng=rng)


def user_mlp(problem, input_shape, n_outputs, rng):
    from ermlab import config

    return config.build_model(problem.settings["model"], math.prod(input_shape), n_outputs, rng)


def user_data(data_path: str | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    from ermlab.data import datasets

    options = {"path": data_path} if data_path else {}
    data = datasets.load(settings["dataset"], **options)
    flat = [a.reshape(len(a), -1) if i % 2 == 0 else a
            for i, a in enumerate((data.x_train, data.y_train, data.x_test, data.y_test))]
    return tuple(flat)


# -- the catalog -----------------------------------------------------------------------------

SMALL_DATA = {"n_train": 4_000, "n_valid": 1_000, "n_test": 2_000}
TINY_DATA = {"n_train": 300, "n_valid": 100, "n_test": 100}

PROBLEMS: dict[str, dict[str, Any]] = {
    "logreg": dict(
        data=idx_flat, model=logistic_regression, loss="cross_entropy", weight_decay=1e-4,
        batch_size=128, epochs=45, settings={"model": "logistic regression 784-10",
                                             "source": "Kingma & Ba 2015, Fig. 1"},
        budgets={"small": {"n_train": 10_000, "n_valid": 2_000, "n_test": 2_000, "epochs": 10},
                 "tiny": {**TINY_DATA, "epochs": 2}}),
    "mlp": dict(
        data=idx_flat, model=mlp_1000, loss="cross_entropy", weight_decay=0.0,
        batch_size=128, epochs=200, settings={"model": "MLP 784-1000-1000-10, ReLU, dropout 0.5",
                                              "source": "Kingma & Ba 2015, Fig. 2"},
        budgets={"small": {**SMALL_DATA, "epochs": 3}, "tiny": {**TINY_DATA, "epochs": 2}}),
    "fmnist_2c2d": dict(
        data=idx_images, model=net_2c2d, loss="cross_entropy", weight_decay=0.0,
        batch_size=128, epochs=100, settings={"model": "DeepOBS 2c2d (conv32-pool-conv64-pool-"
                                                       "dense1024-dense10)",
                                              "source": "DeepOBS fmnist_2c2d"},
        budgets={"small": {"n_train": 2_000, "n_valid": 500, "n_test": 1_000, "epochs": 2},
                 "tiny": {"n_train": 128, "n_valid": 64, "n_test": 64, "epochs": 1}}),
    "noisy_quadratic": dict(
        data=nqm_data, model=nqm_model, loss="mse", weight_decay=0.0, batch_size=128,
        epochs=100, n_valid=10_000, n_train=None,
        settings={"model": f"NQM, d = {NQM_DIM}, h_i = 1/i", "source": "Zhang et al. 2019"},
        budgets={"small": {"n_train": 2_000, "n_valid": 1_000, "n_test": 1_000, "epochs": 20},
                 "tiny": {**TINY_DATA, "epochs": 3}}),
    "relu4": dict(
        data=teacher_data, model=relu4, loss="cross_entropy", weight_decay=0.0, batch_size=32,
        epochs=50, n_valid=3_000,
        settings={"model": "MLP 10-32-32-32-10, ReLU", "source": "the seeds"},
        budgets={"small": {"n_train": 4_000, "n_valid": 1_000, "n_test": 1_000, "epochs": 10},
                 "tiny": {**TINY_DATA, "epochs": 3}}),
}


def learning_problem(name: str, budget: str = "full", data_path: str | None = None,
                     **overrides: Any) -> LearningProblem:
    """The problem ``name`` at ``budget`` (full, small or tiny), with ``overrides``."""
    entry = dict(PROBLEMS[name])
    budgets = entry.pop("budgets")
    if budget != "full":
        entry.update(budgets[budget])
    entry.update({k: v for k, v in overrides.items() if v is not None})
    entry.setdefault("n_valid", 10_000)
    return LearningProblem(name=name, data_path=data_path, **entry)


def user_problem(spec: dict[str, Any], data_path: str | None = None) -> LearningProblem:
    """A problem from a user's description (TOML/JSON): the data set and an MLP config.

        name = "my_problem"
        dataset = "digits"           # a registered data set or a .npz/.csv path
        hidden = [64]                # and any other ermlab.config model keys
        l2 = 1e-4
        batch_size = 32
        epochs = 20
        n_valid = 200                # held out of the training set for tuning
    """
    from ermlab import config

    spec = dict(spec)
    known = {"name", "dataset", "data_path", "n_train", "n_valid", "n_test",
             "hidden", "activation", "weight_init", "dropout", "batch_norm", "loss", "l2",
             "batch_size", "epochs"}
    unknown = sorted(set(spec) - known)
    if unknown or "dataset" not in spec:
        raise ValueError(f"a user problem needs 'dataset' and takes {sorted(known)}; "
                         f"unknown: {unknown}")
    model_keys = {k: spec[k] for k in ("hidden", "activation", "weight_init", "dropout",
                                       "batch_norm", "loss", "batch_size", "epochs") if k in spec}
    full = config.validate(model_keys)
    model = {k: full[k] for k in ("hidden", "activation", "weight_init", "dropout", "batch_norm")}
    model["hidden"] = list(model["hidden"])
    return LearningProblem(
        name=str(spec.get("name", "user")), data=user_data, model=user_mlp, loss=full["loss"],
        weight_decay=float(spec.get("l2", 0.0)), batch_size=full["batch_size"],
        epochs=full["epochs"], n_train=spec.get("n_train"), n_valid=spec.get("n_valid", 1000),
        n_test=spec.get("n_test"), data_path=spec.get("data_path", data_path),
        settings={"dataset": str(spec["dataset"]), "model": model})
