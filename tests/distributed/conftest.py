"""One Ray for the whole test session (2 CPUs), started only by the tests that ask for it."""

import os
import shutil
import tempfile
import time

import pytest


def _processes_using(directory):
    """PIDs whose command line names ``directory`` (Ray's processes of that session)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if directory.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _remove_after_exit(directory, timeout=20.0):
    """Remove Ray's session directory once its processes are gone (a dying worker still
    writes its logs there), so no /tmp/ermray* is left behind."""
    deadline = time.monotonic() + timeout
    while _processes_using(directory) and time.monotonic() < deadline:
        time.sleep(0.2)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(request):
    """A local Ray with 2 CPUs in a private temp dir; skipped where Ray is missing or cannot start.

    Strategies find it running and neither start nor stop it; it is shut down and its
    session files removed at the end of the session. The actors of one test's fits are
    kept for the next (``reuse_actors``): a Ray actor costs ~1 CPU-second to start, more
    than most of these fits; a test that checks what a fit leaves behind suspends it.
    """
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed: pip install 'ermlab[distributed]'")
    temp = tempfile.mkdtemp(prefix="ermray", dir="/tmp")  # short: Ray's sockets live under it
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=100 * 2**20, log_to_driver=False, _temp_dir=temp)
    except Exception as error:  # noqa: BLE001 - any failure to start is a reason to skip
        shutil.rmtree(temp, ignore_errors=True)
        pytest.skip(f"Ray cannot start here: {type(error).__name__}: {error}")
    from ray_helpers import OWNED_RAY_CHECK, TEST

    from ermlab.distributed import reuse_actors

    if any(item.name == TEST for item in request.session.items):
        OWNED_RAY_CHECK.start()  # in the background, while other tests run (ray_helpers)
    try:
        with reuse_actors():
            yield ray
    finally:
        OWNED_RAY_CHECK.close()
    ray.shutdown()
    _remove_after_exit(temp)
