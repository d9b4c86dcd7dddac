"""ermlab.threads: lanes run at once on the shared pool, errors come back, BLAS is held to
one thread only while lanes run, a worker never waits on its own pool."""

import threading

import pytest

from ermlab import threads


def test_lanes_run_on_different_threads_and_return_in_order():
    barrier = threading.Barrier(3, timeout=10)  # fails unless all three run at once

    def lane(k):
        barrier.wait()
        return k, threading.get_ident()

    results = threads.run_lanes([lambda k=k: lane(k) for k in range(3)])
    assert [k for k, _ in results] == [0, 1, 2]
    assert results[0][1] == threading.get_ident()
    assert len({ident for _, ident in results}) == 3


def test_an_error_in_a_worker_lane_is_raised_after_every_lane_finished():
    finished = []

    def fail():
        raise RuntimeError("lane 1 failed")

    def slow():
        threading.Event().wait(0.05)
        finished.append(True)

    with pytest.raises(RuntimeError, match="lane 1 failed"):
        threads.run_lanes([slow, fail, slow])
    assert finished == [True, True]


def test_blas_runs_on_one_thread_inside_lanes_and_gets_its_threads_back():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="comes with scikit-learn")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        pytest.skip("no BLAS library that threadpoolctl can control")
    with blas.limit(limits=2):
        before = [lib.get_num_threads() for lib in blas.lib_controllers]
        inside = threads.run_lanes([
            lambda: [lib.get_num_threads() for lib in blas.lib_controllers], lambda: None])[0]
        assert inside == [1] * len(before)
        assert [lib.get_num_threads() for lib in blas.lib_controllers] == before


def test_lanes_asked_for_inside_a_worker_run_in_that_worker():
    """A worker that waited on the pool could deadlock it: it runs the lanes itself."""
    def nested():
        return threads.run_lanes([threading.get_ident, threading.get_ident])

    idents = threads.workers(1).submit(nested).result(timeout=10)
    assert len(set(idents)) == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_environment_variable_is_named(value, monkeypatch):
    monkeypatch.setenv("ERMLAB_NUM_THREADS", value)
    with pytest.raises(ValueError, match="ERMLAB_NUM_THREADS"):
        threads.default_threads()


def test_run_ranges_calls_work_with_its_arguments_then_each_range():
    seen = threads.run_ranges([(0, 2), (2, 5), (5, 6)], lambda tag, lo, hi: (tag, lo, hi), "x")
    assert seen == [("x", 0, 2), ("x", 2, 5), ("x", 5, 6)]
