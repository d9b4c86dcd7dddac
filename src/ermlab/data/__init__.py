"""Data: the dataset registry, downloads and parsers, user files, preprocessing, splits, batching.

    load(name, **options) -> Dataset     names()      datasets_info()      download(name)
    load_arrays(x, y) / load("my.npz") / load("npy_folder/") / load("my.csv", label="y")
    Rows(x, index, dtype, transform): rows read on demand (splits without copies)
    preprocessing: MeanImage, ChannelMean, Standardize, Flatten, Pipeline (fit on train only)
    splits: train_val_test_split, train_validation_split, kfold_indices
    batches(n, batch_size, shuffle, rng), curriculum_batches(difficulty, ...)
"""

from ermlab.data.dataset import Dataset
from ermlab.data.datasets import LOADERS, datasets_info, load, names
from ermlab.data.loader import batches, curriculum_batches, curriculum_order
from ermlab.data.preprocessing import ChannelMean, Flatten, MeanImage, Pipeline, Standardize
from ermlab.data.rows import Rows
from ermlab.data.sources import ChecksumError, DownloadError, cache_dir, download
from ermlab.data.splits import kfold_indices, train_val_test_split, train_validation_split
from ermlab.data.user import load_arrays, load_csv, load_npy, load_npz

SUBMODULES = ("transforms",)  # imported the first time it is used: ermlab.data.transforms


def __getattr__(name: str):
    if name in SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LOADERS", "ChannelMean", "ChecksumError", "Dataset", "DownloadError", "Flatten",
    "MeanImage", "Pipeline", "Rows", "Standardize", "batches", "cache_dir", "curriculum_batches",
    "curriculum_order", "datasets_info", "download", "kfold_indices", "load", "load_arrays",
    "load_csv", "load_npy", "load_npz", "names", "train_val_test_split", "train_validation_split",
]
