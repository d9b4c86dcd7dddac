"""Hogwild! (Niu et al. 2011): exactness with one worker, learning with two, cleanup on every
way out (success, worker error, a real SIGKILL of a worker, Ctrl-C in the parent), bad options."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy
import pytest

from ermlab import losses, nn, optim
from ermlab.distributed.hogwild import SEGMENT_PREFIX, Hogwild, available_cpus, epoch_order
from ermlab.nn.models import mlp

scipy_sparse = pytest.importorskip("scipy.sparse")

SHM = Path("/dev/shm")
PROC = Path("/proc")
linux_only = pytest.mark.skipif(not (PROC / "self" / "stat").exists() or not SHM.is_dir(),
                                reason="finds processes in /proc and segments in /dev/shm")


def _segments(pid: int | None = None) -> set[str]:
    prefix = SEGMENT_PREFIX + (f"{pid}_" if pid is not None else "")
    return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)} if SHM.is_dir() else set()


def _spawned_children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` and that run multiprocessing's spawn entry."""
    found = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"multiprocessing.spawn" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    before = _segments(os.getpid())  # this process's only: other test runs may be going on
    yield
    assert _segments(os.getpid()) - before == set(), "a shared-memory segment was left in /dev/shm"
    assert _spawned_children(os.getpid()) == [], "a worker process was left running"


def _sparse_problem(n=600, d=300, density=0.02, seed=0, margin=0.0):
    rng = numpy.random.default_rng(seed)
    x = scipy_sparse.random(n, d, density=density, format="csr", random_state=seed,
                            dtype=numpy.float32)
    truth = rng.standard_normal(d)
    s = x @ truth
    keep = numpy.abs(s) >= margin
    x, s = x[keep], s[keep]
    return x, (s > 0).astype(numpy.int64)


def _sequential_sgd(x, y, loss, lr, l2, epochs, decay, seed):
    """Per-example SGD with the paper's sparse penalty, eq. (2.6), written out plainly."""
    x = x.tocsr()
    w = numpy.zeros(x.shape[1], x.dtype)
    d_u = numpy.bincount(x.indices, minlength=x.shape[1])
    reg = numpy.zeros(x.shape[1], x.dtype)
    reg[d_u > 0] = 2.0 * l2 / d_u[d_u > 0]
    signs = numpy.where(y > 0, 1.0, -1.0).astype(x.dtype)
    for epoch in range(epochs):
        gamma = lr * decay**epoch
        for i in epoch_order(x.shape[0], seed, epoch):
            e = x.indices[x.indptr[i]:x.indptr[i + 1]]
            z = x.data[x.indptr[i]:x.indptr[i + 1]]
            yi = float(signs[i])
            m = yi * float(w[e] @ z)
            if loss == "hinge":
                g = -yi if m < 1 else 0.0
            else:
                g = -yi * math.exp(-m) / (1 + math.exp(-m)) if m >= 30 else -yi / (1 + math.exp(m))
            w[e] -= (reg[e] * w[e] + g * z) * gamma
    return w


# -- exactness -------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["log", "hinge"])
def test_one_worker_is_sequential_sgd_exactly(loss):
    x, y = _sparse_problem()
    expected = _sequential_sgd(x, y, loss, lr=0.3, l2=0.05, epochs=3, decay=0.7, seed=4)
    hw = Hogwild(1, lr=0.3, l2=0.05, epochs=3, decay=0.7, seed=4, loss=loss,
                 count_conflicts=True).fit(x.tocoo(), y)  # any scipy.sparse format
    numpy.testing.assert_array_equal(hw.coef_, expected)
    assert hw.coef_.dtype == numpy.float32
    assert numpy.count_nonzero(expected) > 0.9 * x.shape[1]
    assert hw.stats_["conflicts"] == 0 and hw.stats_["writes"] == 3 * x.nnz


def test_a_feature_twice_in_a_row_counts_as_their_sum():
    """A CSR row holding feature 0 twice (a duplicate entry, as COO data assembled by hand
    gives): the margin summed both, but ``w[e] -= step`` kept one write. Now the entries
    are summed first, as the matrix means, and the caller's matrix is left alone."""
    x = scipy_sparse.csr_matrix((numpy.array([1.0, 1.0]), numpy.array([0, 0]),
                                 numpy.array([0, 2])), shape=(1, 2))
    summed = scipy_sparse.csr_matrix(numpy.array([[2.0, 0.0]]))
    fit = lambda m: Hogwild(1, lr=1.0, epochs=1, loss="hinge").fit(m, [1]).coef_  # noqa: E731
    numpy.testing.assert_array_equal(fit(x), fit(summed))
    numpy.testing.assert_array_equal(fit(x), [2.0, 0.0])
    assert x.nnz == 2 and list(x.indices) == [0, 0]


def test_one_worker_model_is_sequential_sgd_exactly():
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((40, 5)).astype(numpy.float32)
    y = rng.integers(0, 3, 40)
    model, twin = mlp([5, 8, 3], rng=7), mlp([5, 8, 3], rng=7)
    loss = losses.SoftmaxCrossEntropy()
    hw = Hogwild(1, lr=0.1, epochs=2, decay=0.5, batch_size=6, seed=3, count_conflicts=True)
    hw.fit_model(model, loss, x, y)
    assert hw.stats_["conflicts"] == 0
    assert hw.stats_["writes"] == 2 * math.ceil(40 / 6) * model.num_parameters()
    twin.train()
    sgd = optim.SGD(twin.parameters(), lr=0.1)  # θ ← θ − αg rounded once, as the workers' SGD
    for epoch in range(2):
        sgd.param_groups[0]["lr"] = 0.1 * 0.5**epoch
        order = epoch_order(len(x), 3, epoch)
        for b in range(0, len(x), 6):
            index = order[b:b + 6]
            loss.forward(twin.forward(x[index]), y[index])
            twin.zero_grad()
            twin.backward(loss.backward(), input_grad=False)
            sgd.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert any(not numpy.array_equal(p.data, q.data)
               for p, q in zip(model.parameters(), mlp([5, 8, 3], rng=7).parameters()))


# -- learning with two workers ---------------------------------------------------------------------

def test_two_workers_learn_a_sparse_separable_problem():
    x, y = _sparse_problem(n=3000, d=2000, density=0.01, seed=2, margin=0.3)
    hw = Hogwild(2, lr=0.5, epochs=8, decay=0.9, loss="hinge", l2=1e-4, seed=1).fit(x, y)
    assert hw.score(x, y) >= 0.97
    assert hw.stats_["worker_examples"] == [8 * len(y) // 2, 8 * len(y) - 8 * len(y) // 2]


def test_two_workers_train_an_ermlab_mlp():
    rng = numpy.random.default_rng(0)
    centres = rng.standard_normal((3, 6)) * 3
    y = rng.integers(0, 3, 600)
    x = (centres[y] + rng.standard_normal((600, 6))).astype(numpy.float32)
    model = mlp([6, 16, 3], rng=0)
    Hogwild(2, lr=0.05, epochs=5, batch_size=8).fit_model(model, losses.SoftmaxCrossEntropy(), x, y)
    model.eval()
    assert (model.forward(x).argmax(1) == y).mean() >= 0.9


# -- cleanup ---------------------------------------------------------------------------------------

def test_a_failing_worker_is_reported_and_cleaned_up():
    x = numpy.ones((30, 4), numpy.float32)
    y = numpy.zeros(30, numpy.int64)
    y[-1] = 5  # passes the parent's check of the first examples; fails in a worker
    with pytest.raises(RuntimeError, match=r"Hogwild worker [01] failed: LabelError: .*label"):
        Hogwild(2, epochs=1).fit_model(mlp([4, 3], rng=0), losses.SoftmaxCrossEntropy(), x, y)


@linux_only
def test_a_killed_worker_is_reported_and_cleaned_up():
    x, y = _sparse_problem(n=400, d=200)
    victims: list[int] = []
    environment_before = dict(os.environ)
    seen: dict[str, object] = {}

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            children = _spawned_children(os.getpid())
            if len(children) == 2:
                while time.monotonic() < deadline:  # let it attach (slow on a loaded machine)
                    maps = Path(f"/proc/{children[1]}/maps").read_text()
                    seen["mapped"] = {line.split("/dev/shm/")[1] for line in maps.splitlines()
                                      if f"/dev/shm/{SEGMENT_PREFIX}{os.getpid()}_" in line}
                    if len(seen["mapped"]) >= 6:
                        break
                    time.sleep(0.05)
                time.sleep(0.5)  # and train
                environ = Path(f"/proc/{children[1]}/environ").read_bytes().split(b"\0")
                seen["environ"] = {v.decode() for v in environ}
                seen["threads"] = len(list(Path(f"/proc/{children[1]}/task").iterdir()))
                os.kill(children[1], signal.SIGKILL)
                victims.append(children[1])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        with pytest.raises(RuntimeError, match=r"worker 1 \(pid \d+\) died \(killed by SIGKILL\)"):
            Hogwild(2, epochs=10**6).fit(x, y)
    finally:
        killer.join()
    assert victims and not _alive(victims[0])
    # one BLAS / OpenMP / optimizer thread in the worker, set before its NumPy started;
    # the parent's environment is as it was
    assert {"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
            "ERMLAB_NUM_THREADS=1"} <= seen["environ"]
    assert seen["threads"] == 1
    # the worker reads the data in the parent's segments: w, CSR data/indices/indptr, y, d_u
    assert len(seen["mapped"]) == 6
    assert dict(os.environ) == environment_before


_ENDLESS_FIT = textwrap.dedent("""
    import numpy, scipy.sparse
    from ermlab.distributed.hogwild import Hogwild
    if __name__ == "__main__":
        x = scipy.sparse.random(300, 100, density=0.05, format="csr", random_state=0)
        Hogwild(2, epochs=10**6).fit(x, numpy.arange(300) % 2)
""")


def _start_endless_fit(tmp_path, code=_ENDLESS_FIT):
    """A Python process running a never-ending 2-worker fit (``code``), once both workers
    train."""
    script = tmp_path / "endless.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_spawned_children(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _spawned_children(parent.pid)
    assert len(workers) == 2, "the workers did not start"
    assert _segments(parent.pid), "no segment to clean up"
    time.sleep(0.5)
    return parent, workers


def _wait_until_gone(parent_pid, workers, seconds=15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (
            _segments(parent_pid) or any(_alive(pid) for pid in workers)):
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # a failing test leaves nothing running either
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert _segments(parent_pid) == set()


def _interrupt_and_check(parent, workers):
    """Ctrl-C the parent: it ends with KeyboardInterrupt, no segment leaks, the workers go."""
    try:
        parent.send_signal(signal.SIGINT)
        _, stderr = parent.communicate(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert "KeyboardInterrupt" in stderr
    assert "leaked shared_memory" not in stderr
    assert _segments(parent.pid) == set()
    _wait_until_gone(parent.pid, workers, seconds=2.0)


@linux_only
def test_ctrl_c_in_the_parent_stops_the_workers_and_frees_the_segments(tmp_path):
    _interrupt_and_check(*_start_endless_fit(tmp_path))


@linux_only
def test_workers_of_a_killed_parent_exit_and_the_segments_go(tmp_path):
    parent, workers = _start_endless_fit(tmp_path)
    parent.kill()  # SIGKILL: the parent cannot clean up; the workers notice it is gone
    parent.communicate(timeout=30)
    _wait_until_gone(parent.pid, workers)


# -- bad options, before anything starts ---------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be an integer ≥ 1"),
    ({"workers": -2}, "workers must be an integer ≥ 1"),
    ({"workers": 1.5}, "workers must be an integer ≥ 1"),
    ({"workers": True}, "workers must be an integer ≥ 1"),
    ({"lr": 0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"epochs": 0}, "epochs must be an integer ≥ 1"),
    ({"decay": 1.5}, r"decay \(β\) must be in \(0, 1\]"),
    ({"loss": "squared"}, "loss must be one of"),
    ({"l2": -1.0}, "l2 must be a finite number ≥ 0"),
    ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        Hogwild(**{"workers": 1, **options})
    hw = Hogwild(1)
    for name, value in options.items():  # set after construction: refused by fit
        setattr(hw, name, value)
    with pytest.raises(ValueError, match=message):
        hw.fit(numpy.eye(2), [0, 1])


def test_more_workers_than_cpus_warns():
    with pytest.warns(RuntimeWarning, match=r"workers but only \d+ CPUs available") as caught:
        Hogwild(available_cpus() + 1)
    assert caught[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize("x, y, message", [
    (numpy.ones((4, 3)), [0, 1, 2, 0], r"two classes labelled \{0, 1\} or \{-1, \+1\}"),
    (numpy.ones((4, 3)), [0, 1, 1], "x has 4 rows and y 3 labels"),
    (numpy.ones(4), [0, 1, 1, 0], "needs a 2-D x"),
    (numpy.array([[1.0, numpy.nan], [0, 1]]), [0, 1], "NaN or infinite"),
])
def test_bad_data_is_refused_before_any_process_starts(x, y, message):
    with pytest.raises(ValueError, match=message):
        Hogwild(1).fit(x, y)


def test_bad_model_input_is_refused_before_any_process_starts():
    x, y = numpy.ones((10, 4), numpy.float32), numpy.zeros(10, numpy.int64)
    loss = losses.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="has buffers"):
        Hogwild(1).fit_model(mlp([4, 5, 3], batch_norm=True, rng=0), loss, x, y)
    with pytest.raises(ValueError):  # 4 inputs, the model wants 7: the parent's dry run
        Hogwild(1).fit_model(mlp([7, 3], rng=0), loss, x, y)
    with pytest.raises(ValueError, match="no parameters"):
        Hogwild(1).fit_model(nn.Sequential(), loss, x, y)
