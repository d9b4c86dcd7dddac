"""Freed memory kept for the next training step: glibc's malloc thresholds (Linux).

glibc's malloc serves a request above ``M_MMAP_THRESHOLD`` with a fresh ``mmap``, given
back to the kernel when it is freed, and gives back the free memory at the top of its heap
once there is more than ``M_TRIM_THRESHOLD`` of it. Both start at 128 KiB and slide up as
large blocks are freed: the first to the largest block freed, at most 32 MiB on 64-bit
systems, the second to twice the first. A training step allocates and frees the same large
arrays every step, and at the end of backward most of them are free at once, more than the
trim threshold had slid to: the heap went back to the kernel, and the next step's arrays
were faulted in again page by page (NumPy asks for transparent huge pages for arrays of
4 MiB and more: 2 MiB to zero at each of those faults). Measured (AMD EPYC Zen 5 VM,
2 threads, batch 128, ``benchmarks/page_faults.py``: 4 processes each, alternating,
medians): LeNet-5 572 page faults a step, 0.3 with these thresholds, its step
7.14 → 6.09 ms (0.85×) and the kernel's time in it 1.74 → 0.24 ms; the small VGG 1813
faults a step, 0 with them, 85.98 → 79.34 ms (0.92×), the kernel's 11.5 → 0.8 ms;
ResNet-20, which faulted 87 times a step, 54 with them, the same (1.01×). The peak
resident memory of a training run did not change (``benchmarks/memory.py``: the small VGG
at batches 64/128/256 859/925/1056 MiB either way).

``configure()`` sets ``M_MMAP_THRESHOLD`` where glibc's sliding would take it at most,
32 MiB, and ``M_TRIM_THRESHOLD`` to 256 MiB, once a process, when ``ermlab.nn`` is first
imported, where all of these hold:

- the process runs on glibc (Linux; musl, macOS and Windows have allocators of their own);
- ``ERMLAB_MALLOC`` is not ``0``;
- the user set none of glibc's own malloc settings (``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``, or a
  ``glibc.malloc.`` tunable in ``GLIBC_TUNABLES``): theirs stand.

Arrays above 32 MiB still come from ``mmap`` at every step, as glibc would have it: the
64-channel 32×32 planes of the CIFAR ResNet-18 at batch 128 (33.5 MB; 2181 faults a step
either way, 13–23 ms of system time in 1.1 s steps) and the small VGG's first planes at
batch 256 (227 faults a step). Where that matters, glibc's own variables take larger
thresholds, which ermlab then leaves as they are: with ``MALLOC_MMAP_THRESHOLD_=134217728
MALLOC_TRIM_THRESHOLD_=268435456`` (128 and 256 MiB) ResNet-18 faulted 182 times a step
and the small VGG at batch 256 once, at the price of up to 256 MiB of freed memory kept.

The trim threshold was 64 MiB, twice the mmap threshold as glibc's sliding sets it, until
containers let each layer's cache go once bprop has passed it (``ermlab.nn.module``): a
step then ends with its whole cache free at once, more than 64 MiB, and the heap went back
to the kernel after every step again (the small VGG at batch 128: 3641–3871 faults a step,
21–27 ms of system time, 144–171 ms steps against 135–137 with glibc's own sliding
thresholds; with a trim threshold of 256 MiB 0.2–0.5 faults, 107–116 ms).

It is a setting of the process, not of ermlab alone: up to 256 MiB free at the top of each
of malloc's heaps stays with the process instead of going back to the kernel, arrays up to
32 MiB come from the heap from the first one on, and, as glibc documents, setting either
threshold stops both from sliding.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 8 * MMAP_THRESHOLD  # a step's whole cache, freed at its end (see above)
# glibc's environment variables and tunables for malloc: set by the user, they stand
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>

_configured: bool | None = None  # None: not asked yet


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether ermlab should set the thresholds, given the process's ``environ`` (see the
    module docstring)."""
    value = environ.get("ERMLAB_MALLOC", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"ERMLAB_MALLOC={environ['ERMLAB_MALLOC']!r}: use 0 (leave glibc's "
                         "malloc thresholds as they are) or 1 (the default: keep up to "
                         "256 MiB of freed memory for the next step)")
    if value == "0":
        return False
    if any(name in environ for name in GLIBC_SETTINGS):
        return False
    return "glibc.malloc." not in environ.get("GLIBC_TUNABLES", "")


def _glibc() -> ctypes.CDLL | None:
    """The C library the process runs on where it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


def configure() -> bool:
    """Set glibc's malloc thresholds once a process where ``wanted`` says so and the
    process runs on glibc; whether they are set (by this call or an earlier one)."""
    global _configured
    if _configured is None:
        _configured = False
        libc = _glibc() if wanted(os.environ) else None
        if libc is not None:
            _configured = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                           and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _configured
