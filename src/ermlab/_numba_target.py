"""The vector width Numba compiles ermlab's kernels for: 512 bits on Intel server cores.

LLVM tunes every AVX-512 processor to prefer 256-bit vectors (its ``prefer-256-bit``
feature, set for Skylake-X through Granite Rapids and for AMD's Zen 4 and 5 alike), so
Numba's loops use ymm registers and half the width of the processor's fused multiply-adds.
On an Intel Xeon VM (Emerald Rapids, 2 cores, LLVM 22 through llvmlite) the same kernels
compiled without that preference ran the convolutions 15–25 % faster (batch 128, fwd/bwd
ms: 16→16 channels on 32×32, direct, 8.24/15.21 → 6.93/12.24; 32→32 on 16×16, Winograd,
6.40/13.83 → 5.26/10.72; 64→64 on 8×8, 5.19/11.20 → 3.95/9.66) and whole steps against
PyTorch went ResNet-20 1.21 → 1.09×, LeNet-5 1.17 → 1.06×, the small VGG 0.88 → 0.91×.

``configure()`` therefore turns the preference off — Numba's ``CPU_FEATURES`` becomes
the host's own features followed by ``-prefer-256-bit``, exactly what
``NUMBA_CPU_FEATURES`` set by hand would do — where all of these hold:

- ``ERMLAB_WIDE_VECTORS`` is not ``0``. ``1`` takes 512 bits on any processor with
  AVX-512F (try it on Zen 4, Ice Lake or Skylake-X, where it was not measured, or where
  the wide units lower the clock); unset or ``auto``, only on the Intel server cores that
  run 512-bit vectors without a lower clock: those LLVM names (``WIDE_CPUS``; only
  Emerald Rapids was measured, Sapphire and Granite Rapids share its design) and any
  processor with AMX (``+amx-tile``), which only those cores have. A VM may show its
  processor as another model: LLVM named a 2-core Xeon VM with AMX ``rocketlake`` (a
  desktop core), and there 512 bits took 4–10 % off whole steps (``benchmarks/cnn.py``,
  batch 128, two alternating runs each, ms: ResNet-20 255/251 → 229/241, the small VGG
  110/112 → 101/108; its 16→16 direct convolution on 32×32, forward + backward,
  12.2 → 10.8).
- the user set neither ``NUMBA_CPU_FEATURES`` nor ``NUMBA_CPU_NAME`` (theirs stands).

AMD's Zen 5 runs 512-bit vectors on full-width units, yet ``ERMLAB_WIDE_VECTORS=1``
measured even there (a 2-vCPU VM, ``benchmarks/cnn.py``, two alternating runs each, ms a
step, Numba's choice → 512 bits: ResNet-20 150.4/159.9 → 152.4/156.7, the small VGG
72.1/72.8 → 70.0/73.1, LeNet-5 4.7/4.9 → 4.6/5.3), so it keeps Numba's choice.

It is a setting of the process, not of ermlab alone: Numba reads it when it first
compiles anything, so it reaches every Numba function compiled in this process, and has
no effect where Numba compiled something before ermlab's first kernel module was imported.
Compiled kernels in Numba's cache are keyed by the features, so switching recompiles
rather than loading code built for the other width. Each kernel module imports this one
before it defines a kernel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# LLVM's names of the Intel server cores that run 512-bit vectors at full clock (a host
# with AMX is taken for one of them whatever its name)
WIDE_CPUS = frozenset({"sapphirerapids", "emeraldrapids", "graniterapids"})


def wide_features(cpu_name: str, features: str, environ: Mapping[str, str]) -> str | None:
    """The features Numba should compile for, given the host's LLVM ``cpu_name`` and its
    ``features`` string (``+avx512f,-avx512fp16,…``), or None to leave Numba's own choice
    (see the module docstring for when)."""
    if "NUMBA_CPU_FEATURES" in environ or "NUMBA_CPU_NAME" in environ:
        return None
    wanted = environ.get("ERMLAB_WIDE_VECTORS", "auto").strip().lower()
    if wanted not in ("0", "1", "auto", ""):
        raise ValueError(f"ERMLAB_WIDE_VECTORS={environ['ERMLAB_WIDE_VECTORS']!r}: "
                         "use 0 (Numba's choice), 1 (512-bit vectors wherever AVX-512F "
                         "is) or auto (512-bit on the Intel server cores in WIDE_CPUS)")
    flags = features.split(",")
    if wanted == "0" or "+avx512f" not in flags or "-prefer-256-bit" in flags:
        return None
    if wanted != "1" and cpu_name not in WIDE_CPUS and "+amx-tile" not in flags:
        return None
    return ",".join([f for f in flags if f and f != "+prefer-256-bit"] + ["-prefer-256-bit"])


def configure() -> str | None:
    """Set Numba's ``CPU_FEATURES`` for this host where ``wide_features`` says so; the
    features set, or None where Numba's own choice stands."""
    from llvmlite.binding import get_host_cpu_name
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    if config.CPU_FEATURES is not None or config.CPU_NAME is not None:
        return None
    features = wide_features(get_host_cpu_name(), get_host_cpu_features(), os.environ)
    if features is not None:
        config.CPU_FEATURES = features
    return features


CONFIGURED = configure()
