"""A kernel module's Numba cache is dropped where a module whose functions its kernels
compile in (``_relu_kernels``, ``_spin``) changed after it was written: Numba keys a
cache by the kernel's own file only, and served the old inlined copy (the fused kernels
then ran the old ReLU mask, the NumPy path the new one)."""

import os

from ermlab import _numba_cache


def _touch(path, mtime):
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_cache_files_older_than_a_dependency_are_dropped(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    module = _touch(tmp_path / "_winograd.py", 1000)
    dependency = _touch(tmp_path / "_relu_kernels.py", 2000)
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    tag = _numba_cache.sys.version_info
    py = f"py{tag.major}{tag.minor}"
    old = [_touch(cache / f"_winograd.forward-10.{py}.nbi", 1500),
           _touch(cache / f"_winograd.forward-10.{py}.1.nbc", 1500)]
    fresh = _touch(cache / f"_winograd.backward-20.{py}.nbi", 2500)
    others = [_touch(cache / f"_relu_kernels.masked-5.{py}.nbi", 1500),  # not this module's
              _touch(cache / "_winograd.cpython-311.pyc", 1500)]           # not Numba's
    assert _numba_cache.drop_stale(str(module), str(dependency)) == 2
    assert not any(path.exists() for path in old)
    assert fresh.exists() and all(path.exists() for path in others)
    assert _numba_cache.drop_stale(str(module), str(dependency)) == 0


def test_the_numba_cache_dir_mirror_is_searched_too(tmp_path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    module = _touch(source / "_kernels.py", 1000)
    dependency = _touch(source / "_spin.py", 2000)
    root = tmp_path / "numba-cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(root))
    mirror = root / source.resolve().relative_to(source.resolve().anchor)
    mirror.mkdir(parents=True)
    tag = _numba_cache.sys.version_info
    stale = _touch(mirror / f"_kernels.adam-120.py{tag.major}{tag.minor}.nbi", 1500)
    assert _numba_cache.drop_stale(str(module), str(dependency)) == 1
    assert not stale.exists()


def test_a_missing_dependency_or_cache_folder_changes_nothing(tmp_path):
    module = _touch(tmp_path / "_direct.py", 1000)
    assert _numba_cache.drop_stale(str(module), str(tmp_path / "absent.py")) == 0
    assert _numba_cache.drop_stale(str(module), str(module)) == 0  # no __pycache__
