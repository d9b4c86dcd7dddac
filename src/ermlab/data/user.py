"""Your own data as a ``Dataset``: arrays, ``.npz`` archives, ``.npy`` folders, ``.csv`` tables.

* ``load_arrays(x, y)`` — any arrays; pass ``x_test, y_test`` too, or a
  stratified ``test_fraction`` is held out (seeded). ``x`` is not copied when
  it already has the dtype asked for.
* ``load_npz(path)`` — keys ``x_train, y_train`` (with ``x_test, y_test``
  optional) or ``x, y``; an optional ``class_names`` string array. Read with
  ``allow_pickle=False``: object arrays are refused.
* ``load_npy(folder)`` — the same arrays as ``.npy`` files in a folder
  (``x_train.npy``, ``y_train.npy``, … or ``x.npy``, ``y.npy``, and
  ``class_names.npy``): an unzipped ``.npz``, as ``numpy.save`` writes them.

With ``mmap_mode="r"`` (or ``"c"``) ``load_npz`` and ``load_npy`` copy
nothing: ``.npy`` files and the uncompressed members of a ``.npz`` (what
``numpy.savez`` writes; ``savez_compressed`` members are read into memory) are
memory-mapped, read-only, so data larger than memory can be used; a dtype
cast then happens as rows are read and a held-out test split is a lazy
``ermlab.data.rows.Rows`` view (``load_arrays(..., copy=False)``). ``ermlab
train`` loads files this way.
* ``load_csv(path, label=...)`` — one example a row, numeric features; the
  label column by name or index (default: the column named ``label`` if the
  header has one, else the last column). A header is detected when the first
  row holds a cell that is not a number (or say ``header=True/False``). The
  file is read as UTF-8, a leading byte-order mark skipped (``utf-8-sig``, as
  Excel's "CSV UTF-8" writes it); it needs a feature column besides the labels.

``ermlab.data.load`` dispatches here for a path ending in ``.npz``/``.csv``
(``load("my.csv", label="y")``) or for the names ``"npz"``/``"csv"`` with
``path=`` (``load("npz", path="my.npz")``). Labels must be integers ≥ 0 (class
indices); integral floats such as ``3.0`` are accepted.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy

from ermlab.backend import resolve_dtype
from ermlab.data.dataset import Dataset
from ermlab.data.rows import Rows
from ermlab.data.splits import train_val_test_split

MMAP_MODES = (None, "r", "c")
# The arrays of a .npz archive or a .npy folder, by name.
KEY_SETS = (("x_train", "y_train", "x_test", "y_test"), ("x", "y"))


def check_labels(y: Any, what: str = "labels") -> numpy.ndarray:
    """``y`` as int64 class indices, or a ValueError naming the first bad label."""
    y = numpy.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one class index per example); got shape {y.shape}")
    if y.dtype.kind == "f":
        # beyond 2⁶², the conversion to int64 below would wrap around
        bad = numpy.flatnonzero(~numpy.isfinite(y) | (y != numpy.round(y))
                                | (numpy.abs(y) >= 2.0**62))
        if bad.size:
            raise ValueError(f"{what} must be integers (class indices); got {y[bad[0]]} at "
                             f"index {bad[0]}")
    elif y.dtype.kind not in "iub":
        first = y.flat[0] if y.size else None
        raise ValueError(f"{what} must be integers (class indices); got {y.dtype} values such "
                         f"as {first!r}: map class names to 0, 1, … first")
    elif y.dtype.kind == "u":  # uint64 beyond 2⁶³ − 1 would wrap around in int64
        bad = numpy.flatnonzero(y > numpy.iinfo(numpy.int64).max)
        if bad.size:
            raise ValueError(f"{what} must be class indices below 2⁶³; got {y[bad[0]]} at "
                             f"index {bad[0]}")
    y = y.astype(numpy.int64)
    negative = numpy.flatnonzero(y < 0)
    if negative.size:
        raise ValueError(f"{what} must be integers ≥ 0; got {y[negative[0]]} at index "
                         f"{negative[0]}")
    return y


def load_arrays(
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    test_fraction: float = 0.25,
    seed: Any = 0,
    stratify: bool = True,
    class_names: list[str] | None = None,
    name: str = "arrays",
    description: str = "",
    dtype: Any = None,
    copy: bool = True,
) -> Dataset:
    """A ``Dataset`` from arrays ``x`` (N, features…) and integer labels ``y`` (N,).

    Without ``x_test, y_test``, a shuffled, stratified ``test_fraction`` of
    ``(x, y)`` becomes the test split (``test_fraction=0`` keeps none).
    ``copy=False`` never copies ``x`` (e.g. a memory map): a cast to ``dtype``
    happens as rows are read, and held-out splits are ``Rows`` views of ``x``.
    """
    if (x_test is None) != (y_test is None):
        raise ValueError("pass both x_test and y_test, or neither")
    x_train, y_train = _checked(x, y, "", dtype, copy)
    if x_test is None:
        split = train_val_test_split(y_train, 0.0, test_fraction, seed, stratify)
        rows = (lambda index: x_train[index]) if copy else (lambda index: Rows(x_train, index))
        x_train, y_train, x_test, y_test = (rows(split.train), y_train[split.train],
                                            rows(split.test), y_train[split.test])
    else:
        x_test, y_test = _checked(x_test, y_test, "_test", dtype, copy)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"x_test examples have shape {x_test.shape[1:]}; x examples "
                             f"{x_train.shape[1:]}")
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if class_names is None:
        class_names = [str(c) for c in range(top + 1)]
    elif top >= len(class_names):
        raise ValueError(f"labels must be in [0, {len(class_names)}) for {len(class_names)} "
                         f"class names; got {top}")
    return Dataset(name, x_train, y_train, x_test, y_test, list(class_names), description)


def load_npz(path: str | os.PathLike, mmap_mode: str | None = None, **options: Any) -> Dataset:
    """A ``Dataset`` from a ``.npz`` archive (see the module doc for the keys and
    ``mmap_mode``)."""
    path = _existing(path, ".npz")
    _check_mmap_mode(mmap_mode)
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            names = {key: key + ".npy" if key + ".npy" in archive.zip.namelist() else key
                     for key in archive.files}
            arrays = {key: _member(path, archive, names[key], key, mmap_mode)
                      for key in archive.files if key in (*KEY_SETS[0], *KEY_SETS[1])}
            if "class_names" in archive.files:
                arrays["class_names"] = archive["class_names"]
            found = list(archive.files)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz archive of plain arrays ({error})") from None
    return _from_arrays(arrays, path, "keys", found, mmap_mode, options)


def load_npy(path: str | os.PathLike, mmap_mode: str | None = None, **options: Any) -> Dataset:
    """A ``Dataset`` from a folder of ``.npy`` files named like the keys of a ``.npz``
    (see the module doc; ``mmap_mode="r"`` memory-maps them)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"folder of .npy files not found: {path}")
    _check_mmap_mode(mmap_mode)
    arrays = {}
    for key in (*dict.fromkeys(KEY_SETS[0] + KEY_SETS[1]), "class_names"):
        file = path / f"{key}.npy"
        if not file.is_file():
            continue
        try:
            arrays[key] = numpy.load(file, allow_pickle=False,
                                     mmap_mode=None if key == "class_names" else mmap_mode)
        except (ValueError, OSError) as error:
            raise ValueError(f"{file}: not a readable .npy file of a plain array ({error})")\
                from None
    found = [file.name for file in sorted(path.glob("*.npy"))]
    return _from_arrays(arrays, path, "files (.npy)", found, mmap_mode, options)


def _from_arrays(arrays: dict[str, Any], path: Path, what: str, found: list[str],
                 mmap_mode: str | None, options: dict[str, Any]) -> Dataset:
    if "class_names" in arrays:
        options.setdefault("class_names", [str(c) for c in arrays.pop("class_names")])
    options.setdefault("name", path.stem)
    options.setdefault("description", f"arrays from {path}")
    options.setdefault("copy", mmap_mode is None)
    if {"x_train", "y_train"} <= arrays.keys():
        parts = [arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test")]
    elif {"x", "y"} <= arrays.keys():
        parts = [arrays["x"], arrays["y"]]
    else:
        raise ValueError(f"{path}: expected {what} x_train, y_train (and x_test, y_test) or x, "
                         f"y; found {', '.join(sorted(found)) or 'none'}")
    return load_arrays(*parts, **options)


def _check_mmap_mode(mmap_mode: Any) -> None:
    if mmap_mode not in MMAP_MODES:
        raise ValueError(f"mmap_mode must be None, 'r' or 'c' (the data files are never "
                         f"written); got {mmap_mode!r}")


def _member(path: Path, archive: Any, name: str, key: str, mmap_mode: str | None) -> Any:
    """Array ``key`` of an open ``.npz``: memory-mapped when asked and stored uncompressed
    (``numpy.savez``), else read."""
    if mmap_mode is not None:
        mapped = _mapped_member(path, archive.zip.getinfo(name), mmap_mode)
        if mapped is not None:
            return mapped
    return archive[key]


def _mapped_member(path: Path, info: zipfile.ZipInfo, mmap_mode: str) -> Any:
    """A memory map of an uncompressed ``.npy`` member, or None when it cannot be mapped
    (compressed, an unusual header, empty)."""
    from numpy.lib import format as npy

    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        local = file.read(30)  # the local file header: its name and extra fields vary
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        file.seek(info.header_offset + 30 + name_length + extra_length)
        version = npy.read_magic(file)
        readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        if version not in readers:
            return None
        shape, fortran_order, dtype = readers[version](file)
        offset = file.tell()
    if dtype.hasobject:
        raise ValueError(f"member {info.filename} holds Python objects (pickles), refused")
    if not numpy.prod(shape, dtype=numpy.int64):
        return None
    return numpy.memmap(path, dtype=dtype, mode=mmap_mode, offset=offset, shape=shape,
                        order="F" if fortran_order else "C")


def load_csv(
    path: str | os.PathLike,
    label: int | str | None = None,
    header: bool | None = None,
    delimiter: str = ",",
    **options: Any,
) -> Dataset:
    """A ``Dataset`` from a ``.csv`` table: numeric features and an integer label column."""
    path = _existing(path, ".csv")
    handle = io.StringIO(_utf8_text(path), newline="")
    rows = [(line, row) for line, row in enumerate(csv.reader(handle, delimiter=delimiter), 1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: the file is empty")
    if header is None:  # a cell that is not a number; an empty cell is a missing value
        header = any(cell.strip() and not _is_number(cell) for cell in rows[0][1])
    columns = [c.strip() for c in rows[0][1]] if header else None
    rows = rows[1:] if header else rows
    if not rows:
        raise ValueError(f"{path}: no data rows after the header")
    width = len(rows[0][1])
    target = _label_column(label, columns, width, path)
    names = columns or [str(i) for i in range(width)]
    if width < 2:
        raise ValueError(f"{path}: the only column, {names[target]!r}, is the label column; a "
                         "table needs at least one feature column besides the labels")
    features, labels = [], []
    for line, row in rows:
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} fields; expected {width}")
        labels.append(_label(row[target], path, line))
        features.append([_number(cell, path, line, names[i])
                         for i, cell in enumerate(row) if i != target])
    options.setdefault("name", path.stem)
    options.setdefault("description", f"table {path}, label column {names[target]!r}")
    return load_arrays(numpy.array(features, dtype=numpy.float64).reshape(len(rows), -1),
                       numpy.array(labels, dtype=numpy.int64), **options)


def _checked(x: Any, y: Any, suffix: str, dtype: Any, copy: bool = True) -> tuple[Any, Any]:
    x = numpy.asarray(x)
    if x.dtype.kind not in "iufb":
        raise ValueError(f"x{suffix} must be numeric; got {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x{suffix} must be (N, features…); got shape {x.shape}: "
                         "use x.reshape(-1, 1) for a single feature")
    if 0 in x.shape[1:]:
        raise ValueError(f"x{suffix} examples have no features (shape {x.shape}); each "
                         "example needs at least one value")
    y = check_labels(y, f"y{suffix}")
    if len(x) != len(y):
        raise ValueError(f"x{suffix} and y{suffix} have different lengths: {len(x)} and {len(y)}")
    dtype = resolve_dtype(dtype)
    if x.dtype == dtype:  # no copy of what already has the dtype
        return x, y
    return (x.astype(dtype) if copy else Rows(x, dtype=dtype)), y


def _utf8_text(path: Path) -> str:
    """The file decoded as UTF-8, less a leading byte-order mark (codec ``utf-8-sig``, as
    Excel's "CSV UTF-8" and pandas' ``encoding="utf-8-sig"`` write it)."""
    raw = path.read_bytes()
    try:  # decoded whole, so an error's position is the byte offset in the file
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}: not UTF-8 text: byte {error.start} (line {line}) is "
            f"0x{raw[error.start]:02X}; save the file as UTF-8 (in Excel: \"CSV UTF-8\"; in "
            "pandas: to_csv(..., encoding=\"utf-8\"))") from None


def _existing(path: str | os.PathLike, suffix: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{suffix} file not found: {path}")
    return path


def _label_column(label: int | str | None, columns: list[str] | None, width: int, path) -> int:
    if label is None:
        return columns.index("label") if columns and "label" in columns else width - 1
    if isinstance(label, str):
        if columns is None:
            raise ValueError(f"{path}: label={label!r} names a column but the file has no "
                             "header; pass the column index instead, e.g. label=0")
        if label not in columns:
            raise ValueError(f"{path}: no column {label!r}; columns are {', '.join(columns)}")
        return columns.index(label)
    if not -width <= label < width:
        raise ValueError(f"{path}: label column {label} out of range for {width} columns")
    return label % width


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(cell: str, path, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}: line {line}, column {column!r}: {cell!r} is not a number")\
            from None


def _label(cell: str, path, line: int) -> int:
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not value.is_integer() or value < 0:
        raise ValueError(f"{path}: line {line}: labels must be integers ≥ 0 (class indices); "
                         f"got {cell.strip()!r}: map class names to 0, 1, … first")
    return int(value)
