"""Checkpoints: a run's whole state in one safetensors file, written atomically.

A checkpoint holds the model weights, the optimizer's state (per-parameter
buffers and hyperparameters), learning-rate schedules, the Trainer's shuffling
RNG and the generators of stochastic layers (dropout), the epoch and update
counters, the history, and the state of stateful callbacks (early stopping's
best weights and patience count, ...). Resuming from it continues the run bit
for bit.

The format is one ``.safetensors`` file: every array goes into the safetensors
tensors, everything else is a JSON document in the safetensors header metadata
(key ``"state"``), where each array appears as ``{"__array__": key}``. One file
makes the write atomic: it is written to a temporary file in the same
directory, flushed and fsynced, renamed over the target with ``os.replace``,
and the directory is fsynced. A write that fails midway leaves the previous
checkpoint untouched; a half-written file never has the target's name. A
SHA-256 digest of the arrays *and* of the metadata (format, version and the
JSON state) catches corrupted or edited bytes that the safetensors header
alone cannot: an edited epoch is refused like a flipped weight. (The digest
detects damage; it is not a signature.) Version-1 files, written before the
digest covered the JSON state, are still read; only their arrays are checked.

Temporary files are named ``.<target>.<pid>.<random>.ermlab-tmp``: a writer
killed between creating one and renaming it leaves it behind, and the next
write into the same directory removes those whose process is gone (files of
that pattern only). ``remove_stale_temporaries`` does it for a whole
directory. Files are created with the permissions ``open()`` would give them
(0o666 minus the umask), not the 0o600 of ``tempfile.mkstemp``.

Loading never unpickles: safetensors arrays and JSON only. JSON cannot say
"tuple", "integer key" or "NumPy scalar", so those are tagged
(``{"__tuple__": [...]}``, ``{"__items__": [[key, value], ...]}``,
``{"__scalar__": dtype, "value": v}``) and come back exactly as saved; an
optimizer's ``state_dict()`` round-trips unchanged.

Where frameworks differ: ``torch.save`` pickles (and ``torch.load`` unpickles,
which can run code); Keras writes HDF5 or a zip of JSON + weights. Neither is
atomic by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import safetensors.numpy

from ermlab.backend import to_numpy

FORMAT = "ermlab.checkpoint"
VERSION = 2
READABLE_VERSIONS = ("1", "2")
DEFAULT_NAME = "checkpoint.safetensors"
TEMPORARY_SUFFIX = ".ermlab-tmp"
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[^.]+"
                        + re.escape(TEMPORARY_SUFFIX) + "$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: corrupt, truncated, or not for this model."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds (arrays as NumPy arrays)."""

    path: Path
    epoch: int = 0
    step: int = 0
    history: dict[str, list[Any]] = field(default_factory=dict)
    model: dict[str, numpy.ndarray] | None = None
    optimizer: dict[str, Any] | None = None
    optimizer_class: str | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    generators: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] | None = None


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/checkpoint.safetensors`` when ``path`` is a directory."""
    path = Path(path)
    return path / DEFAULT_NAME if path.is_dir() else path


# -- saving -------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    trainer: Any = None,
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    rng: Any = None,
    epoch: int | None = None,
    step: int | None = None,
    history: dict[str, list[Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` (a file, or a directory for its default name).

    Either pass a ``trainer`` (its model, optimizer, RNG, epoch, step, history
    and callback states are saved) or the pieces; keyword pieces override the
    trainer's. ``extra`` is any JSON-able dict (e.g. the run's config).
    Returns the file written.
    """
    model = model if model is not None else getattr(trainer, "model", None)
    optimizer = optimizer if optimizer is not None else getattr(trainer, "optimizer", None)
    rng = rng if rng is not None else getattr(trainer, "rng", None)
    tree: dict[str, Any] = {
        "epoch": int(epoch if epoch is not None else getattr(trainer, "epoch", 0)),
        "step": int(step if step is not None else getattr(trainer, "step", 0)),
        "history": history if history is not None else getattr(trainer, "history", {}),
        "model": None if model is None else model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "optimizer_class": None if optimizer is None else type(optimizer).__name__,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": None if rng is None else rng.bit_generator.state,
        "generators": {} if model is None else {
            name: generator.bit_generator.state
            for name, generator in model_generators(model).items()},
        "callbacks": {} if trainer is None else trainer.callback_states(),
        "extra": extra or {},
    }
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None:  # ermlab.distributed: the server's counters, the workers' state
        tree["strategy"] = {"class": type(strategy).__name__, "state": strategy.state_dict()}
    document, arrays = _encode(tree, "")
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(document)}
    metadata["sha256"] = _digest(arrays, metadata)
    target = checkpoint_path(path)
    atomic_write_bytes(target, safetensors.numpy.save(arrays, metadata=metadata))
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` all at once: the old file stays intact if anything fails.

    Temporary file in the same directory → write, flush, fsync → ``os.replace``
    → fsync the directory (so the rename itself survives a power cut).
    ``durable=False`` skips both fsyncs (still atomic for readers, ~10 ms
    cheaper; for logs that the next epoch rewrites anyway). Temporaries that
    killed writers left for this target are removed first; the file gets the
    permissions ``open(path, "w")`` would give it (0o666 & ~umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                     suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            _write(file, data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        _fsync_directory(path.parent)


def remove_stale_temporaries(directory: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the temporaries of ``atomic_write_bytes`` whose writing process is gone.

    Only files named ``.<target>.<pid>.<random>.ermlab-tmp`` are touched (any
    target when ``target`` is None), and only when no process ``pid`` runs: a
    write in progress, here or in another process, keeps its file. Returns
    the files removed.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            match = _TEMPORARY.match(entry.name)
            if match is None or (target is not None and match["target"] != target):
                continue
            if _process_exists(int(match["pid"])):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # someone else's process (or an absurd pid: not a process)
    except OSError:  # platforms without signal 0 semantics: keep the file
        return True
    return True


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def _write(file: Any, data: bytes) -> None:
    file.write(data)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or filesystem allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- loading ------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file; raise ``CheckpointError`` if it is damaged."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    metadata = _metadata(path, data)
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise _damaged(path, f"its arrays cannot be read ({error})") from None
    covered = None if metadata["version"] == "1" else metadata
    if _digest(arrays, covered) != metadata.get("sha256"):
        what = "arrays" if covered is None else "arrays and JSON state"
        raise _damaged(path, f"its {what} do not match the SHA-256 digest saved with them")
    try:
        tree = _decode(json.loads(metadata["state"]), arrays)
    except (KeyError, ValueError, TypeError) as error:
        raise _damaged(path, f"its JSON state is invalid ({error})") from None
    known = set(Checkpoint.__dataclass_fields__) - {"path"}
    return Checkpoint(path=path, **{k: v for k, v in tree.items() if k in known})


def load_checkpoint(
    path: str | os.PathLike,
    trainer: Any = None,
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    rng: Any = None,
) -> Checkpoint:
    """Read a checkpoint and restore it into the objects given; return its contents.

    With a ``trainer``: model, optimizer, RNG state, epoch, step and history
    are restored at once; callback states are handed to the trainer, which
    gives them to its callbacks when the next ``fit`` starts (after
    ``on_train_begin``, which would otherwise reset them). Everything is
    validated before anything is changed: a missing part, a different
    optimizer class, missing or unexpected weights or a shape mismatch raise
    ``CheckpointError`` naming the file and leave the objects untouched.
    """
    checkpoint = read_checkpoint(path)
    model = model if model is not None else getattr(trainer, "model", None)
    optimizer = optimizer if optimizer is not None else getattr(trainer, "optimizer", None)
    rng = rng if rng is not None else getattr(trainer, "rng", None)
    _validate(checkpoint, model, optimizer, scheduler, rng)
    strategy = getattr(trainer, "strategy", None)
    _validate_strategy(checkpoint, strategy)
    try:
        if strategy is not None:
            strategy.load_state_dict(checkpoint.strategy["state"])
        if model is not None:
            model.load_state_dict(checkpoint.model)
        if optimizer is not None:
            optimizer.load_state_dict(checkpoint.optimizer)
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint.scheduler)
        if rng is not None:
            rng.bit_generator.state = checkpoint.rng
        if model is not None:
            for name, generator in model_generators(model).items():
                if name in checkpoint.generators:
                    generator.bit_generator.state = checkpoint.generators[name]
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit this run: {error}") from None
    if trainer is not None:
        trainer.epoch, trainer.step = checkpoint.epoch, checkpoint.step
        trainer.history = {k: list(v) for k, v in checkpoint.history.items()}
        trainer.pending_callback_states = dict(checkpoint.callbacks)
    return checkpoint


def model_generators(model: Any) -> dict[str, numpy.random.Generator]:
    """The generators the stochastic layers of ``model`` draw from, by module name.

    A layer built without ``rng`` draws from the module-wide generator of
    ``ermlab.backend``, whose state is then saved and restored too: a resumed
    run draws the same dropout masks as an uninterrupted one.
    """
    found = {}
    for name, module in model.named_modules():
        generator = getattr(module, "generator", None) if hasattr(module, "set_generator") else None
        if isinstance(generator, numpy.random.Generator):
            found[name or "."] = generator
    return found


def _validate_strategy(checkpoint: Checkpoint, strategy: Any) -> None:
    """A trainer with a distributed strategy resumes only a run of the same strategy."""
    if strategy is None:
        return
    where = f"checkpoint {checkpoint.path}"
    saved = None if checkpoint.strategy is None else checkpoint.strategy["class"]
    current = None if strategy is None else type(strategy).__name__
    if saved != current:
        raise CheckpointError(f"{where} was saved with strategy {saved}; this run uses "
                              f"{current} (build the Trainer with the saved run's strategy)")


def _validate(checkpoint: Checkpoint, model: Any, optimizer: Any, scheduler: Any,
              rng: Any) -> None:
    where = f"checkpoint {checkpoint.path}"
    for name, target in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler),
                         ("rng", rng)):
        if target is not None and getattr(checkpoint, name) is None:
            raise CheckpointError(f"{where} has no {name} state; it cannot restore this run's "
                                  f"{name} (was it saved without one?)")
    if optimizer is not None and checkpoint.optimizer_class != type(optimizer).__name__:
        raise CheckpointError(f"{where} holds the state of a {checkpoint.optimizer_class} "
                              f"optimizer; this run uses {type(optimizer).__name__}")
    if model is not None:
        expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
        saved = {name: tuple(value.shape) for name, value in checkpoint.model.items()}
        missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{where} does not match the model: missing weights {missing}, "
                                  f"unexpected weights {unexpected}")
        for name, shape in expected.items():
            if saved[name] != shape:
                raise CheckpointError(f"{where}: weight {name!r} has shape {saved[name]}; "
                                      f"the model expects {shape}")
    if rng is not None and checkpoint.rng.get("bit_generator") != type(rng.bit_generator).__name__:
        raise CheckpointError(f"{where} holds the state of a {checkpoint.rng.get('bit_generator')} "
                              f"generator; this run's is {type(rng.bit_generator).__name__}")


def _metadata(path: Path, data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise _damaged(path, f"it is {len(data)} bytes long, shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if 8 + size > len(data):
        raise _damaged(path, f"its header claims {size} bytes but the file has {len(data) - 8}")
    try:
        header = json.loads(data[8:8 + size])
    except ValueError as error:
        raise _damaged(path, f"its header is not valid JSON ({error})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ermlab checkpoint (a safetensors file without "
                              f"the {FORMAT!r} metadata)")
    if metadata.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path} has format version {metadata.get('version')}; "
                              f"this ermlab reads versions {', '.join(READABLE_VERSIONS)}")
    return metadata


def _damaged(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is truncated or corrupt: {reason}. Load an "
                           "earlier checkpoint instead (ModelCheckpoint keeps best and per-epoch "
                           "files)")


# -- JSON + arrays encoding -----------------------------------------------------------


def _encode(value: Any, key: str) -> tuple[Any, dict[str, numpy.ndarray]]:
    arrays: dict[str, numpy.ndarray] = {}
    return _encode_into(value, key, arrays), arrays


def _encode_into(value: Any, key: str, arrays: dict[str, numpy.ndarray]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numpy.generic):
        return {"__scalar__": value.dtype.str, "value": value.item()}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arrays[key] = numpy.array(to_numpy(value), order="C")  # a copy (0-d stays 0-d)
        return {"__array__": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode_into(v, f"{key}/{k}", arrays) for k, v in value.items()}
        return {"__items__": [[_encode_into(k, f"{key}/key{i}", arrays),
                               _encode_into(v, f"{key}/{k}", arrays)]
                              for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_into(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode_into(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
    raise TypeError(f"a checkpoint stores arrays, numbers, strings, lists, tuples and dicts; "
                    f"got {type(value).__name__} at {key or '/'}")


def _decode(value: Any, arrays: dict[str, numpy.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return arrays[value["__array__"]]
    if "__scalar__" in value:
        return numpy.dtype(value["__scalar__"]).type(value["value"])
    if "__tuple__" in value:
        return tuple(_decode(v, arrays) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in value["__items__"]}
    return {k: _decode(v, arrays) for k, v in value.items()}


def _digest(arrays: dict[str, numpy.ndarray], metadata: dict[str, str] | None = None) -> str:
    """SHA-256 of every array (name, dtype, shape, bytes) and of the metadata but the digest.

    ``metadata=None`` gives version 1's digest, of the arrays alone.
    """
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = arrays[key]
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes(order="C"))
    for key in sorted(metadata or {}):
        if key != "sha256":
            digest.update(f"{len(key)}|{key}|{len(metadata[key])}|{metadata[key]}".encode())
    return digest.hexdigest()
