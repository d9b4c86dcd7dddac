"""Where the downloadable datasets come from, how they are checked, and where they are kept.

Each file has its official URL and its published checksum (MD5, as the dataset
authors publish it), plus the SHA-256 of the same file. A file is accepted when
its bytes match; otherwise it is an error that names the file, the expected and
the actual digest. ``verify=False`` (``--no-verify`` on the command line)
accepts a mismatching file already on disk with a warning; downloads are
always checked.

Fashion-MNIST as Debian ships it (package ``dataset-fashion-mnist``, in
``/usr/share/datasets/fashion-mnist``) is the official release with its gzip
*header* rewritten by the package build (the stored file name dropped and the
time stamp changed; the compressed stream and the pixels are the same), so
its MD5 differs from Zalando's. For such re-packed copies a second check is
made: the SHA-256 of the decompressed IDX content. Those digests were computed
from the Debian files after confirming that restoring the original header
(name ``*-ubyte``, time stamps 2017-08-31 10:50 UTC) reproduces Zalando's MD5s
exactly.

The same content check accepts the IDX files as people keep them: the
official ``.gz``, the decompressed file (``gunzip``), or a copy compressed
again (whose MD5 differs: gzip headers hold a name and a time). For MNIST the
SHA-256 of the decompressed files (47,040,016, 60,008, 7,840,016 and 10,008
bytes) is the one several independent public projects pin for them, one of
them next to the SHA-256 of the ``.gz`` listed here (440fcabf… for the
training images); it cannot be recomputed here, where MNIST cannot be
downloaded. File names are matched loosely: ``train-images-idx3-ubyte``,
``train-images.idx3-ubyte`` (as some mirrors and packages name them), with or
without ``.gz``, in any letter case.

Files are looked for, in order, in ``path`` when given (and only there), in the
cache ``$ERMLAB_DATA/<name>`` (default ``~/.cache/ermlab/<name>``), in the
system directories the dataset lists, and are otherwise downloaded into the
cache: to a temporary file, verified, then renamed into place, so the cache
never holds a partial or unverified file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from ermlab.data.idx import GZIP_MAGIC, gunzip

CACHE_ENV = "ERMLAB_DATA"
DEFAULT_CACHE = Path("~/.cache/ermlab")
DOWNLOAD_TIMEOUT_S = 60.0


# Advice in errors names the Python argument and the command-line flag alike.
UNVERIFIED = "pass verify=False (command line: --no-verify)"


class ChecksumError(ValueError):
    """A file's bytes differ from the published checksum."""


class UnverifiedFileWarning(UserWarning):
    """A local file that is not the official release is used because verification was off."""


class DownloadError(OSError):
    """A file could not be downloaded (offline, server error)."""


@dataclass(frozen=True)
class Source:
    """One published file: name, URL, and digests of the file as published.

    ``content_sha256`` is the SHA-256 of the decompressed payload of a gzip
    file; it accepts copies whose gzip header was rewritten (see module doc).
    """

    filename: str
    url: str
    md5: str
    sha256: str | None = None
    content_sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RemoteDataset:
    """The files of one downloadable dataset and the other places they may already be."""

    name: str
    files: tuple[Source, ...]
    homepage: str
    checksums_from: str
    system_dirs: tuple[str, ...] = ()


_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"

SOURCES: dict[str, RemoteDataset] = {
    "fashion-mnist": RemoteDataset(
        "fashion-mnist",
        (
            Source("train-images-idx3-ubyte.gz", _FASHION + "train-images-idx3-ubyte.gz",
                   "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 26421880),
            Source("train-labels-idx1-ubyte.gz", _FASHION + "train-labels-idx1-ubyte.gz",
                   "25c81989df183df01b3e8a0aad5dffbe",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 29515),
            Source("t10k-images-idx3-ubyte.gz", _FASHION + "t10k-images-idx3-ubyte.gz",
                   "bef4ecab320f06d8554ea6380940ec79",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 4422102),
            Source("t10k-labels-idx1-ubyte.gz", _FASHION + "t10k-labels-idx1-ubyte.gz",
                   "bb300cfdad3c16e7a12a480ee83cd310",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 5148),
        ),
        "https://github.com/zalandoresearch/fashion-mnist",
        "MD5s from Zalando's README (the same in torchvision's FashionMNIST.resources)",
        ("/usr/share/datasets/fashion-mnist",),
    ),
    "mnist": RemoteDataset(
        "mnist",
        (
            Source("train-images-idx3-ubyte.gz", _MNIST + "train-images-idx3-ubyte.gz",
                   "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 9912422),
            Source("train-labels-idx1-ubyte.gz", _MNIST + "train-labels-idx1-ubyte.gz",
                   "d53e105ee54ea40749a09fcbcd1e9432",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 28881),
            Source("t10k-images-idx3-ubyte.gz", _MNIST + "t10k-images-idx3-ubyte.gz",
                   "9fb629c4189551a2d022fa330f9573f3",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 1648877),
            Source("t10k-labels-idx1-ubyte.gz", _MNIST + "t10k-labels-idx1-ubyte.gz",
                   "ec29112dd5afa0611ce80d1b7f02629c",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                   "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 4542),
        ),
        "http://yann.lecun.com/exdb/mnist/",
        "MD5s of torchvision's MNIST.resources (the PyTorch mirror of LeCun's files); "
        "SHA-256s of the decompressed files as pinned by independent public projects",
    ),
    "cifar10": RemoteDataset(
        "cifar10",
        (
            Source("cifar-10-binary.tar.gz",
                   "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                   "c32a1d4ab5d03f1284b67883e8d87530",
                   "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
                   size=170052171),
        ),
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        "MD5 from the CIFAR page (binary version, 'suitable for C programs')",
    ),
}


def cache_dir() -> Path:
    """The data cache: ``$ERMLAB_DATA`` when set, else ``~/.cache/ermlab``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def remote(name: str) -> RemoteDataset:
    """The download description of dataset ``name``."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a downloadable dataset; those are: "
                         f"{', '.join(sorted(SOURCES))}") from None


def verify(raw: bytes, source: Source, origin: str | os.PathLike) -> None:
    """Raise ``ChecksumError`` unless ``raw`` is the published ``source`` file.

    Accepted: the file digests match (MD5, and SHA-256 when known), or, for a
    gzip file with a known ``content_sha256``, the decompressed content matches.
    """
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    sha256 = hashlib.sha256(raw).hexdigest()
    if md5 == source.md5 and source.sha256 in (None, sha256):
        return
    if source.content_sha256 is not None:
        content = gunzip(raw, os.fspath(origin)) if raw.startswith(GZIP_MAGIC) else raw
        if hashlib.sha256(content).hexdigest() == source.content_sha256:
            return
    if (source.filename.endswith(".gz") and not raw.startswith(GZIP_MAGIC)
            and source.content_sha256 is None):
        advice = ("it is an uncompressed copy, which only the published .gz can be checked "
                  f"against: use the .gz file, or {UNVERIFIED} to use it unchecked")
    else:
        advice = ("the file is corrupt or not the official release: delete it and load again "
                  f"to re-download, or {UNVERIFIED} to use it anyway")
    raise ChecksumError(
        f"checksum mismatch for {origin}: expected md5 {source.md5}, got {md5} "
        f"(sha256 expected {source.sha256 or 'unknown'}, got {sha256}); {advice}"
    )


def name_key(filename: str) -> str:
    """The file name with the variations copies have taken out: letter case, ``.gz``, ``.idx``.

    ``Train-Images.idx3-ubyte`` and ``train-images-idx3-ubyte.gz`` have the key
    ``train-images-idx3-ubyte``.
    """
    return filename.lower().removesuffix(".gz").replace(".idx", "-idx")


def find(name: str, path: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """Where each file of ``name`` is now: ``path`` alone if given, else cache, then system dirs.

    ``path`` may also name one of the files (its folder is searched). A file
    counts when its ``name_key`` is the published file's: the published name
    first, then a raw copy (without ``.gz``), then other spellings
    (``train-images.idx3-ubyte``, upper case …). Missing files map to ``None``.
    """
    dataset = remote(name)
    if path is not None:
        path = Path(path).expanduser()
        folders = [path.parent if path.is_file() else path]
    else:
        folders = [cache_dir() / name, *map(Path, dataset.system_dirs)]
    found = {}
    for source in dataset.files:
        exact = (source.filename, source.filename.removesuffix(".gz"))
        found[source.filename] = next(
            (folder / n for folder in folders for n in [*exact, *_variants(folder, source)]
             if (folder / n).is_file()), None)
    return found


def _variants(folder: Path, source: Source) -> list[str]:
    try:
        entries = sorted(entry.name for entry in folder.iterdir())
    except OSError:  # missing or unreadable folder
        return []
    return [entry for entry in entries if name_key(entry) == name_key(source.filename)]


def read_files(
    name: str,
    path: str | os.PathLike | None = None,
    download: bool = True,
    verify_checksums: bool = True,
    mirror: str | None = None,
) -> dict[str, bytes]:
    """The verified bytes of every file of dataset ``name``, downloading what is missing.

    With ``path`` the files must be in that directory (nothing is downloaded).
    ``mirror`` replaces the base URL (everything before the file name).
    ``verify_checksums=False`` accepts files already on disk whose checksums
    do not match, with an ``UnverifiedFileWarning``; a download is always
    checked before it enters the cache.
    """
    dataset = remote(name)
    locations = find(name, path)
    files = {}
    for source in dataset.files:
        location = locations[source.filename]
        if location is None:
            if path is not None:
                raise FileNotFoundError(
                    f"{name}: {source.filename} not found in {path}; put the official files "
                    f"({', '.join(s.filename for s in dataset.files)}, .gz or not) there, or "
                    f"leave out path= (command line: --data-path) to download them into "
                    f"{cache_dir() / name}")
            if not download:
                raise FileNotFoundError(
                    f"{name}: {source.filename} is not in {cache_dir() / name}; run "
                    f"ermlab.data.download({name!r}) (command line: `ermlab datasets "
                    f"--download {name}`) or pass path=DIR (command line: --data-path DIR)")
            location = fetch(source, cache_dir() / name, name, mirror)
        raw = location.read_bytes()
        try:
            verify(raw, source, location)
        except ChecksumError:
            if verify_checksums:
                raise
            warnings.warn(f"{location} is not the official {source.filename} (its checksums "
                          "differ); using it unchecked as asked", UnverifiedFileWarning,
                          stacklevel=2)
        files[source.filename] = raw
    return files


def fetch(source: Source, folder: Path, name: str, mirror: str | None = None) -> Path:
    """Download ``source`` into ``folder``: temporary file, verify, atomic rename."""
    url = source.url if mirror is None else mirror.rstrip("/") + "/" + source.filename
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=folder, prefix=f".{source.filename}.", suffix=".part", delete=False)
    partial = Path(handle.name)
    try:
        with handle:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    while chunk := response.read(1 << 20):
                        handle.write(chunk)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)
                raise DownloadError(
                    f"could not download {url} ({reason}). Offline? Fetch "
                    f"{source.filename} elsewhere (see {remote(name).homepage}), put the files "
                    f"in a directory and pass it: ermlab.data.load({name!r}, path='DIR') "
                    f"(command line: --data-path DIR), "
                    f"or copy them into {folder}") from None
            handle.flush()
            os.fsync(handle.fileno())
        verify(partial.read_bytes(), source, f"{source.filename} downloaded from {url}")
        from ermlab.training.checkpoint import current_umask

        os.chmod(partial, 0o666 & ~current_umask())  # as open() would, not tempfile's 0o600
        os.replace(partial, folder / source.filename)
    finally:
        partial.unlink(missing_ok=True)
    return folder / source.filename


def download(name: str, mirror: str | None = None, verify_checksums: bool = True) -> Path:
    """Make sure every file of ``name`` is in the cache (downloading what is missing).

    Files already found in the cache or a system directory are not fetched
    again. Returns the cache folder of the dataset.
    """
    read_files(name, download=True, verify_checksums=verify_checksums, mirror=mirror)
    return cache_dir() / name


def available(name: str, path: str | os.PathLike | None = None) -> bool:
    """Whether every file of ``name`` is present locally (checksums are checked on load)."""
    return all(location is not None for location in find(name, path).values())
