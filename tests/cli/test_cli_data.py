"""Your own dataset files from the command line: MNIST copies that are not the official release.

MNIST cannot be downloaded here; synthetic IDX files under MNIST's names are
exactly "files whose checksums differ from the official release".
"""

import gzip
import struct

import numpy
import pytest

from ermlab.cli import main

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def write_mnist_like(folder, n_train, compress, rename=lambda stem: stem):
    rng = numpy.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": numpy.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
              "t10k-labels-idx1-ubyte": numpy.arange(20) % 10}
    folder.mkdir()
    for stem in STEMS:
        array = arrays[stem].astype(numpy.uint8)
        content = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) \
            + array.tobytes()
        name = rename(stem)
        if compress:
            content, name = gzip.compress(content, mtime=12345), name + ".gz"
        (folder / name).write_bytes(content)
    return folder


def test_unofficial_files_are_refused_naming_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_mnist_like(tmp_path / "mine", 60, False,
                              lambda stem: stem.replace("-idx", ".idx"))
    assert run_cli("train", "--dataset", "mnist", "--data-path", folder, "--epochs", 1) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "checksum mismatch" in err
    assert "train-images.idx3-ubyte" in err  # found under the mirror's name
    assert "--no-verify" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "regzipped"])
def test_no_verify_uses_them_with_one_warning_per_file(tmp_path, capsys, compress):
    folder = write_mnist_like(tmp_path / "mine", 200, compress)
    assert run_cli("train", "--dataset", "mnist", "--data-path", folder, "--no-verify",
                   "--hidden", 8, "--epochs", 1, "-q", "--output", tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert err.count("ermlab train: warning:") == 4 and "using it unchecked" in err
    assert (tmp_path / "run" / "metrics.json").is_file()
