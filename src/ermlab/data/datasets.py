"""The dataset registry: ``load(name)`` returns train and test arrays with their metadata.

=================  ==========================================================  ============
name               what                                                        x_train
=================  ==========================================================  ============
digits             scikit-learn's 8×8 digits (offline default)                 (1347, 64)
fashion-mnist      Zalando's article images (Xiao et al. 2017)                 (60000, 1, 28, 28)
mnist              handwritten digits (LeCun et al. 1998)                      (60000, 1, 28, 28)
cifar10            32×32 colour images, binary version (Krizhevsky 2009)       (50000, 3, 32, 32)
two_spirals, …     toy 2-D problems (``ermlab.data.toy``)                      (750, 2)
npz, npy, csv      your files: ``load("npz", path=…)`` or ``load("my.csv")``   —
=================  ==========================================================  ============

``npy`` is a folder of ``.npy`` files (``x_train.npy``, ``y_train.npy``, … as
the keys of a ``.npz``); ``load("folder/")`` reads one too. ``npz`` and ``npy``
take ``mmap_mode="r"`` to memory-map the arrays instead of reading them
(``ermlab.data.user``).

Images are floats in [0, 1] (pixel / 255) of the default dtype, NCHW. Flatten
them for an MLP with ``ermlab.data.preprocessing.Flatten``. The downloadable
sets take ``path=DIR`` (read the official files from a directory, nothing is
downloaded; ``--data-path DIR`` on the command line), ``download=False``,
``verify=False`` (use files whose checksums differ, with a warning;
``--no-verify``) and ``mirror=URL``; see ``ermlab.data.sources`` for where
files are looked for and which names and compressions are accepted.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy

from ermlab.backend import resolve_dtype
from ermlab.data import cifar, sources, toy, user
from ermlab.data.dataset import Dataset
from ermlab.data.idx import parse_idx

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _digits(test_fraction: float = 0.25, seed: int = 0, dtype: Any = None) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, pixel values 0–16).

    ships with scikit-learn, so it loads with no network. There is no official
    split: a stratified split with a fixed seed is used, the same every time.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(resolve_dtype(dtype))
    y = bunch.target.astype(numpy.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return Dataset("digits", x_train, y_train, x_test, y_test,
                   [str(d) for d in range(10)], "8×8 handwritten digits, scaled to [0, 1]")


def _toy(name: str):
    def loader(n: int = 1000, seed: int = 0, dtype: Any = None, **kwargs: Any) -> Dataset:
        x, y = toy.TOY_PROBLEMS[name](n=n, rng=seed, dtype=dtype, **kwargs)
        cut = (3 * len(y)) // 4
        classes = [str(c) for c in range(int(y.max()) + 1)]
        return Dataset(name, x[:cut], y[:cut], x[cut:], y[cut:], classes, f"toy 2-D: {name}")

    return loader


def _idx_dataset(name: str, class_names: list[str]):
    def loader(path: Any = None, download: bool = True, verify: bool = True,
               mirror: str | None = None, dtype: Any = None) -> Dataset:
        files = sources.read_files(name, path, download, verify, mirror)
        arrays = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = parse_idx(files[f"{prefix}-images-idx3-ubyte.gz"], f"{prefix} images", 3)
            labels = parse_idx(files[f"{prefix}-labels-idx1-ubyte.gz"], f"{prefix} labels", 1)
            if len(images) != len(labels):
                raise ValueError(f"{name}: {len(images)} {split} images but {len(labels)} labels")
            arrays[split] = (_scaled(images[:, None], dtype),
                             user.check_labels(labels, f"{name} {split} labels"))
        _check_range(name, arrays, len(class_names))
        return Dataset(name, *arrays["train"], *arrays["test"], list(class_names),
                       DESCRIPTIONS[name])

    return loader


def _cifar10(path: Any = None, download: bool = True, verify: bool = True,
             mirror: str | None = None, dtype: Any = None) -> Dataset:
    """CIFAR-10, binary version: 50,000 + 10,000 images (3, 32, 32) in 10 classes."""
    if path is not None and not sources.available("cifar10", path):
        missing = cifar.missing_batches(path)
        if missing:
            raise FileNotFoundError(
                f"cifar10: {path} holds neither cifar-10-binary.tar.gz nor the extracted batch "
                f"files (missing: {', '.join(missing)}); put the archive there, or leave out path "
                "(command line: --data-path) to download it")
        if verify:
            raise FileNotFoundError(
                f"cifar10: cifar-10-binary.tar.gz not found in {path}; extracted .bin files "
                f"have no published checksums: read them unchecked: {sources.UNVERIFIED}")
        x_train, y_train, x_test, y_test, names = cifar.read_cifar10(path)
    else:
        archive = "cifar-10-binary.tar.gz"
        raw = sources.read_files("cifar10", path, download, verify, mirror)[archive]
        x_train, y_train, x_test, y_test, names = cifar.from_members(
            cifar.archive_members(raw, archive), archive)
    return Dataset("cifar10", _scaled(x_train, dtype), y_train, _scaled(x_test, dtype), y_test,
                   names, DESCRIPTIONS["cifar10"])


def _user_file(kind: str):
    def loader(path: Any = None, **options: Any) -> Dataset:
        if path is None:
            example = "folder" if kind == "npy" else f"data.{kind}"
            raise ValueError(f"load({kind!r}) needs path=FILE, e.g. load({kind!r}, "
                             f"path='{example}') (command line: --dataset {example})")
        return USER_LOADERS[kind](path, **options)

    return loader


USER_LOADERS = {"npz": user.load_npz, "npy": user.load_npy, "csv": user.load_csv}
# Loaders that memory-map (``mmap_mode``) rather than read.
MAPPABLE = ("npz", "npy")


DESCRIPTIONS = {
    "digits": "scikit-learn's 8×8 handwritten digits, scaled to [0, 1] (offline)",
    "fashion-mnist": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), 28×28 grey, scaled to [0, 1]",
    "mnist": "MNIST (LeCun, Bottou, Bengio & Haffner 1998), 28×28 grey, scaled to [0, 1]",
    "cifar10": "CIFAR-10 (Krizhevsky 2009), binary version, 32×32 RGB, scaled to [0, 1]",
}

LOADERS = {
    "digits": _digits,
    "fashion-mnist": _idx_dataset("fashion-mnist", FASHION_MNIST_CLASSES),
    "mnist": _idx_dataset("mnist", [str(d) for d in range(10)]),
    "cifar10": _cifar10,
    "npz": _user_file("npz"),
    "npy": _user_file("npy"),
    "csv": _user_file("csv"),
    **{name: _toy(name) for name in toy.TOY_PROBLEMS},
}


def names() -> list[str]:
    """The names ``load`` accepts (a path to a ``.npz``/``.csv`` file or a folder of ``.npy``
    files works too)."""
    return sorted(LOADERS)


def loader_name(name: Any) -> str | None:
    """The ``LOADERS`` key that ``load(name)`` uses (``"npz"`` for ``"my.npz"``, ``"npy"``
    for a folder), or None for an unknown name."""
    if name in LOADERS:
        return str(name)
    if not str(name).strip():
        return None
    path = Path(str(name)).expanduser()
    if path.suffix.lower() in (".npz", ".csv"):
        return path.suffix.lower()[1:]
    return "npy" if path.is_dir() else None


def load(name: str, **options: Any) -> Dataset:
    """Load a dataset by name (see ``names()``), from a ``.npz``/``.csv`` file path or from a
    folder of ``.npy`` files."""
    if not isinstance(name, (str, os.PathLike)):
        raise ValueError(f"a dataset is named by a string such as 'digits' or 'my.npz'; got "
                         f"{name!r}")
    if name in LOADERS:
        _check_options(name, options)
        return LOADERS[name](**options)
    kind = loader_name(name)
    if kind is not None:
        return LOADERS[kind](path=name, **options)
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(names())}, a path to "
                     "a .npz or .csv file, or a folder of .npy files (x_train.npy, y_train.npy, "
                     "…)")


# Options of a loader as the command line spells them.
_FLAGS = {"path": "--data-path", "verify": "--no-verify"}


def _check_options(name: str, options: dict[str, Any]) -> None:
    """A clear error for an option the dataset's loader does not take (e.g. a path for digits)."""
    parameters = inspect.signature(LOADERS[name]).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in options:
        if key not in parameters and (key in _FLAGS or not open_ended):
            takers = [n for n in names() if key in inspect.signature(LOADERS[n]).parameters]
            flag = f" (command line: {_FLAGS[key]})" if key in _FLAGS else ""
            hint = (f"the datasets that do: {', '.join(takers)}" if takers else
                    f"it takes {', '.join(parameters) or 'no options'}")
            raise ValueError(f"dataset {name!r} takes no {key}={flag}; {hint}")


def datasets_info() -> dict[str, Any]:
    """What ``ermlab datasets`` prints: the cache folder and, per dataset, where it comes from.

    Returns ``{"cache": str, "datasets": [{"name", "kind", "available", "location",
    "description"}]}``; ``kind`` is ``bundled``, ``toy``, ``download`` or ``file``.
    ``available`` means every file is present (checksums are checked on load);
    it is ``None`` for the ``npz``/``csv`` file loaders.
    """
    entries = []
    for name in names():
        entry = {"name": name, "kind": "bundled", "available": True, "location": None,
                 "description": DESCRIPTIONS.get(name, "")}
        if name in sources.SOURCES:
            found = sources.find(name)
            folders = {str(p.parent) for p in found.values() if p is not None}
            entry.update(kind="download", available=None not in found.values(),
                         location=", ".join(sorted(folders)) or None)
        elif name in toy.TOY_PROBLEMS:
            entry.update(kind="toy", description=f"toy 2-D problem: {name}")
        elif name == "npy":
            entry.update(kind="file", available=None,
                         description="your folder of .npy files (x_train.npy, y_train.npy, … "
                                     "or x.npy, y.npy): --dataset FOLDER (Python: "
                                     "load('FOLDER'))")
        elif name in ("npz", "csv"):
            entry.update(kind="file", available=None,
                         description=f"your .{name} file: --dataset FILE.{name} "
                                     f"(Python: load('FILE.{name}'))")
        entries.append(entry)
    return {"cache": str(sources.cache_dir()), "datasets": entries}


def _scaled(images: numpy.ndarray, dtype: Any) -> numpy.ndarray:
    dtype = resolve_dtype(dtype)
    return images.astype(dtype) / dtype.type(255)


def _check_range(name: str, arrays: dict, num_classes: int) -> None:
    for split, (_, labels) in arrays.items():
        bad = numpy.flatnonzero(labels >= num_classes)
        if bad.size:
            raise ValueError(f"{name} {split} labels must be in [0, {num_classes}); got "
                             f"{labels[bad[0]]} at index {bad[0]}")
