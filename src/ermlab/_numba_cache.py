"""Numba's cache of a kernel module that compiles in functions of another module.

Numba keys a cached kernel by its own source file only (its modification time and
size). A kernel that calls or inlines a Numba function of another module
(``_relu_kernels.masked``, inlined into the batch norm's, Winograd's, direct's and the
bias sums' kernels; ``_spin.publish`` in the optimizers') holds a copy of that function
as it was when the kernel was compiled, and the cache keeps serving that copy after the
other module changes: an editable install updated by ``git pull``, where only the other
file changed, ran the old ReLU mask in the fused kernels and the new one in the NumPy
path. ``drop_stale(module_file, *dependencies)``, called by the kernel module before it
defines its kernels, deletes the module's cache files that are older than any of the
dependencies' sources, so those kernels compile again. A fresh install has no cache, and
an installed wheel writes every source anew, so only source trees meet this.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dirs(module_file: str) -> list[Path]:
    """Where Numba keeps the cache of ``module_file``'s kernels: ``__pycache__`` beside
    the source and, with ``NUMBA_CACHE_DIR``, that tree's mirror of the source's folder."""
    source = Path(module_file).resolve()
    dirs = [source.parent / "__pycache__"]
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        dirs.append(Path(root) / source.parent.relative_to(source.parent.anchor))
    return dirs


def drop_stale(module_file: str, *dependencies: str) -> int:
    """Delete the Numba cache files (``.nbi``, ``.nbc``) of ``module_file``'s kernels that
    are older than any of ``dependencies`` (source files whose Numba functions the kernels
    compile in); the number deleted. Files another process removes first, or that cannot
    be removed, are left to Numba (which then compiles, or loads what is there)."""
    try:
        newest = max(os.stat(path).st_mtime for path in dependencies)
    except (OSError, ValueError):
        return 0
    prefix = Path(module_file).stem + "."
    tag = f".py{sys.version_info.major}{sys.version_info.minor}"
    dropped = 0
    for folder in cache_dirs(module_file):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not (name.startswith(prefix) and tag in name
                    and name.endswith((".nbi", ".nbc"))):
                continue
            try:
                if entry.stat().st_mtime < newest:
                    os.unlink(entry.path)
                    dropped += 1
            except OSError:
                continue
    return dropped
