"""Data: the dataset registry, toy problems, and batching."""

from ermlab.data.datasets import Dataset, load, names
from ermlab.data.loader import batches

__all__ = ["Dataset", "batches", "load", "names"]
