"""Downloads for real, from an HTTP server on 127.0.0.1 serving files this test writes.

The dataset description of ``fashion-mnist`` is replaced by one pointing at the
local server, with the checksums of the small files written here, and no
system directory (so Debian's copy is not picked up).
"""

import functools
import gzip
import hashlib
import http.server
import struct
import threading

import numpy
import pytest

from ermlab import data
from ermlab.data import sources

FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def idx_gz(array):
    array = numpy.asarray(array, dtype=numpy.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Write a 12 + 4 image IDX dataset, serve it, and point fashion-mnist's sources at it."""
    rng = numpy.random.default_rng(1)
    root = tmp_path / "server"
    root.mkdir()
    arrays = {"train-images": rng.integers(0, 256, (12, 28, 28)),
              "train-labels": numpy.arange(12) % 10,
              "t10k-images": rng.integers(0, 256, (4, 28, 28)),
              "t10k-labels": numpy.array([3, 1, 4, 1])}
    for name in FILES:
        (root / name).write_bytes(idx_gz(arrays[name.split("-idx")[0]]))
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    files = tuple(sources.Source(name, base + name,
                                 hashlib.md5((root / name).read_bytes()).hexdigest(),
                                 hashlib.sha256((root / name).read_bytes()).hexdigest())
                  for name in FILES)
    monkeypatch.setitem(sources.SOURCES, "fashion-mnist",
                        sources.RemoteDataset("fashion-mnist", files, base, "this test"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("ERMLAB_DATA", str(tmp_path / "cache"))
    yield {"root": root, "requests": requests, "arrays": arrays, "cache": tmp_path / "cache",
           "base": base}
    server.shutdown()
    server.server_close()


def test_download_places_files_in_the_cache_and_loads_them(served):
    dataset = data.load("fashion-mnist")
    assert sorted(served["requests"]) == sorted("/" + name for name in FILES)
    folder = served["cache"] / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)   # no .part left behind
    assert dataset.x_train.shape == (12, 1, 28, 28) and dataset.x_test.shape == (4, 1, 28, 28)
    numpy.testing.assert_allclose(dataset.x_train[:, 0] * 255, served["arrays"]["train-images"],
                                  atol=1e-4)
    numpy.testing.assert_array_equal(dataset.y_test, [3, 1, 4, 1])
    assert dataset.x_train.dtype == numpy.float32
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0


def test_cached_files_are_not_downloaded_again(served):
    assert data.download("fashion-mnist") == served["cache"] / "fashion-mnist"
    assert len(served["requests"]) == 4
    data.load("fashion-mnist")
    data.download("fashion-mnist")
    assert len(served["requests"]) == 4


def test_default_cache_is_under_home_when_ermlab_data_is_unset(served, monkeypatch, tmp_path):
    monkeypatch.delenv("ERMLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "ermlab"
    data.download("fashion-mnist")
    assert (tmp_path / "home/.cache/ermlab/fashion-mnist/t10k-labels-idx1-ubyte.gz").is_file()
    assert not served["cache"].exists()


def test_checksum_mismatch_on_download_names_file_expected_and_got(served):
    (served["root"] / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_gz([3, 1, 4, 2]))
    got = hashlib.md5((served["root"] / "t10k-labels-idx1-ubyte.gz").read_bytes()).hexdigest()
    expected = sources.SOURCES["fashion-mnist"].files[3].md5
    with pytest.raises(data.ChecksumError) as error:
        data.load("fashion-mnist")
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and expected in message and got in message
    folder = served["cache"] / "fashion-mnist"
    assert "t10k-labels-idx1-ubyte.gz" not in {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.part"))                   # the bad temporary file is gone


def test_corrupted_cached_file_is_a_clear_error_and_verify_false_skips(served):
    data.download("fashion-mnist")
    cached = served["cache"] / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(idx_gz([3, 1, 4, 9]))
    with pytest.raises(ValueError, match="checksum mismatch for .*t10k-labels.*verify=False"):
        data.load("fashion-mnist")
    assert data.load("fashion-mnist", verify=False).y_test.tolist() == [3, 1, 4, 9]


def test_offline_error_says_how_to_pass_a_local_directory(served, monkeypatch):
    import socket

    with socket.socket() as probe:                   # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(data.DownloadError, match=r"load\('fashion-mnist', path='DIR'\)"):
        data.download("fashion-mnist", mirror=f"http://127.0.0.1:{port}/")
    assert not list((served["cache"] / "fashion-mnist").iterdir())


def test_mirror_replaces_the_base_url(served):
    mirror = served["root"] / "mirror"
    mirror.mkdir()
    for name in FILES:
        (mirror / name).write_bytes((served["root"] / name).read_bytes())
    data.download("fashion-mnist", mirror=served["base"] + "mirror")
    assert sorted(served["requests"]) == sorted("/mirror/" + name for name in FILES)


def test_local_directory_is_read_and_verified_without_network(served, tmp_path):
    dataset = data.load("fashion-mnist", path=served["root"])
    assert dataset.x_train.shape == (12, 1, 28, 28) and served["requests"] == []
    (served["root"] / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(numpy.zeros(12)))
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte.gz"):
        data.load("fashion-mnist", path=served["root"])
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz not found in"):
        data.load("fashion-mnist", path=tmp_path)


def test_download_false_without_cache_is_a_clear_error(served):
    with pytest.raises(FileNotFoundError, match=r"download\('fashion-mnist'\) \(command line: "
                       r"`ermlab datasets --download fashion-mnist`\) or pass path="):
        data.load("fashion-mnist", download=False)


def test_datasets_info_reports_cache_and_availability(served):
    info = data.datasets_info()
    assert info["cache"] == str(served["cache"])
    entry = {e["name"]: e for e in info["datasets"]}
    assert entry["fashion-mnist"]["available"] is False
    assert entry["digits"]["available"] is True and entry["digits"]["kind"] == "bundled"
    data.download("fashion-mnist")
    entry = {e["name"]: e for e in data.datasets_info()["datasets"]}
    assert entry["fashion-mnist"]["available"] is True
    assert entry["fashion-mnist"]["location"] == str(served["cache"] / "fashion-mnist")
    assert set(data.names()) <= set(entry)
