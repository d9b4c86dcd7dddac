"""Where the layers' Numba kernels (``_norm_kernels``, ``_relu_kernels``, ``_winograd``,
``_conv_kernels``, ``_pool_kernels``, ``_outer_kernels`` through ``_products``) run, and
their lanes.

A layer runs its compiled kernels only on C-contiguous NumPy float32/float64 arrays of
one dtype, with Numba importable (``pip install "ermlab[fast]"``) and ``ERMLAB_FUSED``
not ``0`` (read at each call); otherwise — CuPy arrays, other layouts or dtypes — it runs
its NumPy path. Kernel modules are imported on first use.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy

from ermlab.threads import default_threads, sample_lanes

FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
# name → the imported kernel module, or False where the import failed (no Numba)
_loaded: dict[str, Any] = {}


# ``ERMLAB_FUSED`` and ``0`` as ``os.environ`` keeps them (see ``turned_off``); None off
# CPython's ``os._Environ``
_OFF = ((os.environ.encodekey("ERMLAB_FUSED"), os.environ.encodevalue("0"))
        if hasattr(os.environ, "encodekey") and hasattr(os.environ, "encodevalue") else None)


def turned_off() -> bool:
    """Whether ``ERMLAB_FUSED=0`` turns the compiled kernels off, read at each call (a test
    may set it for itself). ``os.environ.get`` encodes the key and decodes the value at
    each call: 0.9 µs, about eight times in a small MLP's training step (~180 µs); the
    mapping behind ``os.environ`` (CPython's ``os._Environ._data``, which every change
    made through ``os.environ`` updates) answers the encoded key in 0.03 µs."""
    data = getattr(os.environ, "_data", None)
    if _OFF is not None and data is not None:
        return data.get(_OFF[0]) == _OFF[1]
    return os.environ.get("ERMLAB_FUSED", "1") == "0"


def kernels(name: str, *arrays: Any) -> Any:
    """The kernel module ``ermlab.nn.<name>`` where it can take ``arrays`` (see the
    module docstring); None otherwise."""
    if turned_off():
        return None
    dtype = arrays[0].dtype
    if dtype not in FLOATS or not all(
            type(a) is numpy.ndarray and a.dtype == dtype and a.flags.c_contiguous
            for a in arrays):
        return None
    module = _loaded.get(name)
    if module is None:
        try:
            module = importlib.import_module(f"ermlab.nn.{name}")
        except ImportError:
            module = False
        _loaded[name] = module
    return module or None


def lanes(n: int, nbytes: int, threads: int | None, lane_min_bytes: int) -> list[tuple[int, int]]:
    """Ranges [lo, hi) of ``n`` independent items (channels, elements) holding ``nbytes``,
    one per lane: ``threads`` (None: ``ERMLAB_NUM_THREADS`` or the CPU count) at most,
    each of at least ``lane_min_bytes``."""
    if nbytes < 2 * lane_min_bytes:  # one lane's worth: no thread count to look up
        return [(0, n)]
    threads = threads or default_threads()
    if threads == 1:
        return [(0, n)]
    return sample_lanes(n, threads, nbytes // lane_min_bytes)
