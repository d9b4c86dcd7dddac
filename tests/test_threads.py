"""ermlab.threads: lanes run at once on the shared pool, errors come back, BLAS is held to
one thread only while lanes run, a worker never waits on its own pool."""

import os
import platform
import threading
import time
import weakref

import numpy as np
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


def test_a_worker_lets_its_lane_and_what_it_holds_go_once_done():
    """After its lane, a worker waits for the next with nothing of it held: the lane's
    closure held its region's arrays (a whole network's last bprop region kept ∂L/∂y and
    a cache, 256 MiB for the small VGG at batch 1024, into the next step)."""
    big = np.ones(1000)
    held = weakref.ref(big)
    threads.run_lanes([lambda: None, lambda big=big: float(big.sum())], blas=False)
    del big
    assert held() is None


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
        # lanes that run no BLAS (run_ranges' default, blas=False) leave its count alone
        inside = threads.run_ranges([(0, 1), (1, 2)], lambda lo, hi: [
            lib.get_num_threads() for lib in blas.lib_controllers])
        assert inside == [before, before]
        inside = threads.run_ranges([(0, 1), (1, 2)], lambda lo, hi: [
            lib.get_num_threads() for lib in blas.lib_controllers], blas=True)
        assert inside == [[1] * len(before)] * 2
        # one lane too (its GEMMs would wake BLAS's own threads), unless blas=False
        count = [lambda: [lib.get_num_threads() for lib in blas.lib_controllers]]
        assert threads.run_lanes(count) == [[1] * len(before)]
        assert threads.run_lanes(count, blas=False) == [before]
        assert [lib.get_num_threads() for lib in blas.lib_controllers] == before


def test_lanes_asked_for_inside_a_worker_run_in_that_worker():
    """A worker that waited on the pool could deadlock it: it runs the lanes itself."""
    def nested():
        return threads.run_lanes([threading.get_ident, threading.get_ident])

    _, idents = threads.run_lanes([lambda: None, nested])
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_environment_variable_is_named(value, monkeypatch):
    monkeypatch.setenv("ERMLAB_NUM_THREADS", value)
    with pytest.raises(ValueError, match="ERMLAB_NUM_THREADS"):
        threads.default_threads()


def test_run_ranges_calls_work_with_its_arguments_then_each_range():
    seen = threads.run_ranges([(0, 2), (2, 5), (5, 6)], lambda tag, lo, hi: (tag, lo, hi), "x")
    assert seen == [("x", 0, 2), ("x", 2, 5), ("x", 5, 6)]


@pytest.mark.parametrize("spin_seconds", [0.0, 0.002])
def test_lanes_run_whether_workers_wait_awake_or_asleep(spin_seconds, monkeypatch):
    """With SPIN_SECONDS = 0 every wait sleeps on its condition; after an idle spell longer
    than the spin, a worker has gone to sleep and must be woken."""
    monkeypatch.setattr(threads, "SPIN_SECONDS", spin_seconds)
    for idle in (0.0, 0.01, 0.0):
        threading.Event().wait(idle)
        results = within(10, lambda: threads.run_lanes(
            [lambda k=k: (k, threading.get_ident()) for k in range(3)]))
        assert [k for k, _ in results] == [0, 1, 2]
        assert len({ident for _, ident in results}) == 3


def test_lanes_that_wait_asleep_never_ask_for_the_spin_loop(monkeypatch):
    """``awake=False`` (long lanes): neither the caller nor a worker waits awake, before or
    after its lane, so Numba's spin loop is never asked for; the lanes still run at once."""
    asked = []
    monkeypatch.setattr(threads, "_spinner", lambda: asked.append(1))
    barrier = threading.Barrier(3, timeout=10)
    for _ in range(3):
        results = within(10, lambda: threads.run_lanes(
            [lambda k=k: (barrier.wait(), k)[1] for k in range(3)], awake=False))
        assert results == [0, 1, 2]
    assert asked == []
    assert within(10, lambda: threads.run_lanes([lambda: 0, lambda: 1])) == [0, 1]
    assert asked, "lanes that may wait awake ask for the spin loop"


def within(seconds, call):
    """call() from a daemon thread: its result, or a failure (not a hung test) after
    ``seconds``."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"no result within {seconds} s: a lane was never started or never reported"
    return out[0]


def test_two_threads_asking_for_lanes_at_once_both_get_every_result():
    """The pool serves one caller at a time; the other runs its lanes itself."""
    outcomes, errors = {}, []

    def caller(tag):
        try:
            for round_ in range(50):
                got = threads.run_lanes([lambda k=k, r=round_: (tag, r, k) for k in range(3)])
                assert got == [(tag, round_, k) for k in range(3)]
            outcomes[tag] = True
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    callers = [threading.Thread(target=caller, args=(tag,), daemon=True) for tag in "ab"]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=20)
    assert not errors and outcomes == {"a": True, "b": True}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_a_pool_of_its_own():
    threads.run_lanes([lambda: None, lambda: None])  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: the parent's workers do not exist here
        try:
            got = threads.run_lanes([lambda k=k: k for k in range(3)])
            os._exit(0 if got == [0, 1, 2] else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_the_spin_wait_sees_the_counter_and_gives_up_after_its_ticks():
    spin = pytest.importorskip("ermlab._spin", reason="needs Numba")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the spin wait is x86-64 only")
    counter = np.zeros(8, dtype=np.int64)
    rate = spin.ticks_per_second()
    assert 1e8 < rate < 1e11  # a time-stamp counter in the 0.1–100 GHz range
    start = time.perf_counter()
    assert not spin.wait(counter, 1, int(rate * 0.005))  # never set: gives up
    assert 0.004 < time.perf_counter() - start < 0.5
    threading.Timer(0.01, counter.__setitem__, (0, 1)).start()
    start = time.perf_counter()
    assert spin.wait(counter, 1, int(rate * 5.0))  # set by another thread after 10 ms
    assert time.perf_counter() - start < 2.0


def test_signal_then_wait_sets_first_and_returns_at_once_for_a_sleeping_waiter():
    spin = pytest.importorskip("ermlab._spin", reason="needs Numba")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the spin wait is x86-64 only")
    rate = spin.ticks_per_second()
    done, counter = np.zeros(8, dtype=np.int64), np.zeros(8, dtype=np.int64)
    assert spin.signal_then_wait(done, 4, counter, 1, int(rate * 0.005)) == 0  # gave up
    assert done[0] == 4
    threading.Timer(0.01, counter.__setitem__, (0, 1)).start()
    assert spin.signal_then_wait(done, 5, counter, 1, int(rate * 5.0)) == 1
    assert done[0] == 5
    done[2] = 1  # the waiting side sleeps: set, and back at once to wake it
    start = time.perf_counter()
    assert spin.signal_then_wait(done, 6, counter, 2, int(rate * 5.0)) == 2
    assert done[0] == 6 and time.perf_counter() - start < 1.0


def test_a_caller_asleep_on_a_worker_lane_is_woken(monkeypatch):
    """The caller's wait for a long lane outlasts its spin and sleeps; the worker, which
    signals its end from the compiled wait (``signal_then_wait``), wakes it. And many
    short regions in a row, where the two sides race, all end."""
    monkeypatch.setattr(threads, "SPIN_SECONDS", 0.001)
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    for pause in (0.05, 0.0, 0.02):
        assert within(10, lambda p=pause: threads.run_lanes(
            [lambda: 1, lambda: threading.Event().wait(p) or 2])) == [1, 2]
    rng = np.random.default_rng(0)
    waits = rng.choice([0.0, 0.0, 0.0005, 0.002], size=(300, 2))

    def many():
        return [threads.run_lanes([lambda a=a: time.sleep(a) or 0, lambda b=b: time.sleep(b)
                                   or 1]) for a, b in waits]
    assert within(30, many) == [[0, 1]] * len(waits)


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_a_bad_spin_time_is_named(value, monkeypatch):
    monkeypatch.setenv("ERMLAB_SPIN_SECONDS", value)
    with pytest.raises(ValueError, match="ERMLAB_SPIN_SECONDS"):
        threads._seconds("ERMLAB_SPIN_SECONDS", 0.002)
    monkeypatch.setenv("ERMLAB_SPIN_SECONDS", "0.0005")
    assert threads._seconds("ERMLAB_SPIN_SECONDS", 0.002) == 0.0005


def test_lanes_still_run_where_the_spin_loop_cannot_be_had(monkeypatch):
    """If ``ermlab._spin`` fails to import or compile, the workers sleep between lanes."""
    import builtins

    real_import = builtins.__import__

    def no_spin(name, globals_=None, locals_=None, fromlist=(), level=0):
        if name == "ermlab" and fromlist and "_spin" in fromlist:
            raise RuntimeError("cannot compile")
        return real_import(name, globals_, locals_, fromlist, level)

    monkeypatch.setattr(threads, "_spin", False)  # look for it again
    monkeypatch.setattr(builtins, "__import__", no_spin)
    assert threads._spinner() is None
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert within(10, lambda: threads.run_lanes([lambda k=k: k for k in range(3)])) == [0, 1, 2]


def test_rest_puts_a_spinning_worker_to_sleep_and_keeps_the_pool_quiet(monkeypatch):
    """Before a GEMM on BLAS's own threads (``rest``): a worker spinning after its lane
    sleeps at once (not after SPIN_SECONDS), and no wait spins for QUIET_SECONDS."""
    if threads._spinner() is None:
        pytest.skip("no spin wait here (needs Numba on x86-64)")
    monkeypatch.setattr(threads, "SPIN_SECONDS", 30.0)
    monkeypatch.setattr(threads, "QUIET_SECONDS", 0.2)
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    within(10, lambda: threads.run_lanes([lambda: None, lambda: None]))  # awake after
    within(10, lambda: threads.run_lanes([lambda: None, lambda: None]))
    worker = threads._workers(1).workers[0]
    threading.Event().wait(0.05)
    assert not worker.posted.sleeping  # spinning (for up to 30 s)
    threads.rest()
    deadline = time.perf_counter() + 5.0
    while not worker.posted.sleeping and time.perf_counter() < deadline:
        threading.Event().wait(0.01)
    assert worker.posted.sleeping
    assert threads._spinner() is None  # quiet for QUIET_SECONDS
    threading.Event().wait(0.25)
    assert threads._spinner() is not None
    assert within(10, lambda: threads.run_lanes([lambda: 1, lambda: 2])) == [1, 2]
    threads.rest()  # not left spinning for 30 s after the test
    while not worker.posted.sleeping and time.perf_counter() < deadline + 5.0:
        threading.Event().wait(0.01)


def test_a_linear_layer_or_a_convolution_on_blas_threads_quiets_the_pool(monkeypatch):
    """GEMMs on BLAS's own threads (a Linear layer without lanes, a convolution of one
    sample) quiet the pool; a convolution of a small batch, whose one lane runs BLAS on
    one thread, and a Linear layer in lanes leave it alone."""
    from ermlab import nn

    threads.run_lanes([lambda: None, lambda: None])  # the pool exists
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    layer = nn.Linear(4, 3, rng=0)  # lanes=False: BLAS's own threads
    layer.forward(np.ones((2, 4), np.float32))
    assert threads._quiet_until > time.perf_counter()
    for kernel in (1, 3):  # the batched-GEMM (1×1) and im2col paths
        conv = nn.Conv2d(4, 3, kernel, rng=0, threads=2, algorithm="im2col")
        monkeypatch.setattr(threads, "_quiet_until", 0.0)
        conv.forward(np.ones((1, 4, 3, 3), np.float32))  # one sample: BLAS's threads
        assert threads._quiet_until > time.perf_counter()
        monkeypatch.setattr(threads, "_quiet_until", 0.0)
        conv.forward(np.ones((2, 4, 3, 3), np.float32))  # one lane, BLAS on one thread
        assert threads._quiet_until == 0.0
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    lanes = nn.Linear(4, 3, rng=0, lanes=True)
    lanes.threads = 2
    lanes.forward(np.ones((2, 4), np.float32))
    assert threads._quiet_until == 0.0


def test_one_range_without_blas_is_one_call_in_the_calling_thread(monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("one range went to the pool")

    monkeypatch.setattr(threads, "run_lanes", no_pool)
    seen = []
    assert threads.run_ranges([(2, 5)], lambda a, lo, hi: seen.append(
        (a, lo, hi, threading.current_thread())) or lo + hi, "x") == [7]
    assert seen == [("x", 2, 5, threading.current_thread())]


@pytest.mark.parametrize("nbytes,threads_,lanes", [(1999, 4, 1), (2000, 4, 2), (5000, 4, 4),
                                                   (5000, 1, 1), (5000, None, 2)])
def test_element_lanes_need_their_bytes_whatever_the_thread_count(nbytes, threads_, lanes,
                                                                  monkeypatch):
    from ermlab.nn import _fused

    monkeypatch.setenv("ERMLAB_NUM_THREADS", "2")
    ranges = _fused.lanes(10, nbytes, threads_, 1000)
    assert len(ranges) == lanes and ranges[0][0] == 0 and ranges[-1][1] == 10


def tuned(tuner, key, n, seconds_of):
    """Ask the tuner for a lane count, record ``seconds_of(lanes)`` for it, return the count."""
    lanes = tuner.choose(key, n)
    tuner.record(seconds_of(lanes))
    return lanes


WAKE = threads.WAKE_RUNS  # a probe's untimed runs at n lanes before its timed ones


@pytest.mark.parametrize("two, chosen", [(0.5, 2), (0.96, 1), (1.5, 1)])
def test_the_lane_tuner_keeps_two_lanes_only_where_they_are_timed_faster(two, chosen):
    tuner = threads.LaneTuner(probes=3, every=10, margin=0.95, warmup=0)
    times = {1: 1.0, 2: two}
    probe = [tuned(tuner, "step", 2, times.__getitem__) for _ in range(WAKE + 7)]
    # each count in a stretch after uncounted runs
    assert probe == [2] * (WAKE + 3) + [1] * 4
    assert tuner.times == {1: [1.0] * 3, 2: [two] * 3}
    assert [tuned(tuner, "step", 2, times.__getitem__) for _ in range(10)] == [chosen] * 10
    # after ``every`` timed runs the next probe starts
    assert [tuned(tuner, "step", 2, times.__getitem__) for _ in range(WAKE + 7)] == probe


def test_while_the_pool_rests_the_lane_tuner_answers_one_lane_and_counts_nothing(
        monkeypatch):
    """After ``rest`` (a GEMM on BLAS's own threads) one lane, whatever the probe or the
    choice, and the runs do not move the probe on; once the rest is over, the probe goes on
    where it was."""
    tuner = threads.LaneTuner(probes=2, every=5, margin=0.95, warmup=0)
    times = {1: 1.0, 2: 0.5}
    first = [tuned(tuner, "step", 2, times.__getitem__) for _ in range(WAKE + 1)]
    assert first == [2] * (WAKE + 1)
    monkeypatch.setattr(threads, "_quiet_until", float("inf"))  # as ``rest`` sets it
    assert [tuned(tuner, "step", 2, times.__getitem__) for _ in range(6)] == [1] * 6
    assert tuner.times == {1: [], 2: [0.5]}
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    rest = [tuned(tuner, "step", 2, times.__getitem__) for _ in range(4)]
    assert rest == [2, 1, 1, 1] and tuner.choice == 2
    assert tuner.choose("step", 1) == 1 and not tuner.resting


def test_the_lane_tuner_does_not_count_each_stretchs_first_runs():
    tuner = threads.LaneTuner(probes=2, every=5, warmup=0)
    # slow wake-ups, then two lanes win
    runs = iter([100.0 / (k + 1) for k in range(WAKE)] + [1.0, 1.0, 0.1, 2.0, 2.0])
    for _ in range(WAKE + 5):
        tuner.choose("step", 2)
        tuner.record(next(runs))
    assert tuner.times == {2: [1.0, 1.0], 1: [2.0, 2.0]}
    assert tuner.choose("step", 2) == 2


@pytest.mark.parametrize("two, chosen", [([1.0, 9.0, 1.2, 8.0], 2), ([3.0, 1.0, 3.0, 3.0], 1)])
def test_the_lane_tuner_compares_the_lower_middle_times(two, chosen):
    """Of an even count of runs the lower middle one counts (noise only adds time): two slow
    runs of four do not outvote two fast ones, and one fast run does not decide."""
    tuner = threads.LaneTuner(probes=4, every=100, warmup=0)
    runs = iter([5.0] * WAKE + two + [5.0, 2.0, 2.0, 2.0, 2.0])
    for _ in range(WAKE + 9):
        tuner.choose("step", 2)
        tuner.record(next(runs))
    assert tuner.times == {2: two, 1: [2.0] * 4}
    assert tuner.choose("step", 2) == chosen


def test_the_first_probe_is_checked_again_sooner():
    """A key's first probe (the pool's threads starting, kernels compiling) holds for
    ``recheck`` timed runs, the next ones for ``every``."""
    tuner = threads.LaneTuner(probes=1, every=20, warmup=0, recheck=5)
    probe = WAKE + 3  # runs of a probe: wake-ups, one timed at 2 lanes, one untimed and
    faster_two = {1: 2.0, 2: 1.0}.__getitem__  # one timed at 1 lane
    first = [tuned(tuner, "step", 2, faster_two) for _ in range(probe + 5)]
    assert first[probe:] == [2] * 5 and tuner.plan == [] and tuner.left == 0
    second = [tuned(tuner, "step", 2, faster_two) for _ in range(probe + 20)]
    assert second[:probe] == first[:probe] and second[probe:] == [2] * 20
    assert tuner.left == 0 and tuner.choose("step", 2) == 2 and tuner.plan  # the third


def test_a_new_regions_first_runs_are_one_lane_and_not_timed():
    """Its first runs are slow (new arrays faulted in, caches cold): the probe starts after
    ``warmup`` of them, on one lane, so that they tilt no choice."""
    tuner = threads.LaneTuner(probes=2, every=100, warmup=3)
    runs = iter([9.0, 5.0, 3.0] + [1.0] * (WAKE + 2) + [1.0, 2.0, 2.0])
    lanes = []
    for _ in range(WAKE + 8):
        lanes.append(tuner.choose("step", 2))
        tuner.record(next(runs))
    assert lanes == [1, 1, 1] + [2] * (WAKE + 2) + [1, 1, 1]
    assert tuner.times == {2: [1.0, 1.0], 1: [2.0, 2.0]}
    assert tuner.choose("step", 2) == 2
    # another key warms up again; its probe's times are its own
    assert [tuned(tuner, "other", 2, {1: 1.0, 2: 3.0}.__getitem__)
            for _ in range(WAKE + 8)] == lanes
    assert tuner.times == {2: [3.0, 3.0], 1: [1.0, 1.0]} and tuner.choose("other", 2) == 1


def test_a_new_key_restarts_the_probe_and_one_lane_asks_nothing():
    tuner = threads.LaneTuner(probes=1, every=100, warmup=0)
    slower_two = {1: 1.0, 2: 3.0}.__getitem__
    probe = [2] * (WAKE + 1) + [1, 1]
    assert [tuned(tuner, "a", 2, slower_two) for _ in range(WAKE + 4)] == probe + [1]
    assert [tuned(tuner, "b", 2, slower_two) for _ in range(WAKE + 3)] == probe
    assert tuner.choose("c", 1) == 1 and tuner.key == "b"  # n = 1: nothing to choose
    # a run that is not recorded (a step with extra work) leaves the probe where it was
    assert tuner.choose("d", 2) == 2 and tuner.choose("d", 2) == 2 and tuner.plan[0] == (2, False)


# -- the first lane's kernel posts a worker's lane (threads.Handoff) ---------------------


def _sgd_kernel_posting(handoff):
    """The calling lane of a handoff test: plain SGD's fused kernel over 4096 elements, which
    posts the worker's lane once it has let go of the GIL; (posted before, posted after,
    θ)."""
    from ermlab.optim import _kernels

    f32 = np.float32
    theta, grad = np.zeros(4096, f32), np.ones(4096, f32)
    before = int(handoff.signal[0]) == handoff.value
    _kernels.sgd(theta, grad, None, f32(-0.5), f32(0), False, f32(1), f32(0), False, False,
                 False, f32(0), handoff.signal, handoff.value)
    return before, int(handoff.signal[0]) == handoff.value, theta


def test_a_worker_waiting_awake_gets_its_lane_from_the_first_lanes_kernel(monkeypatch):
    """``run_lanes(..., handoff=True)``: a worker that waits awake is not posted in Python;
    the calling lane gets a ``Handoff`` and its first compiled kernel posts the lane (the
    worker's counter is not yet set before the kernel, set after it); the worker's lane
    runs and its result comes back."""
    pytest.importorskip("numba")
    monkeypatch.setattr(threads, "SPIN_SECONDS", 1.0)  # the worker stays awake between calls
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    if threads._spinner() is None:
        pytest.skip("no spin loop here (not x86-64): workers are always posted in Python")
    outcomes = []
    for _ in range(6):  # the first calls wake the worker; then it waits awake
        outcomes.append(within(10, lambda: threads.run_lanes(
            [lambda handoff: handoff if handoff is None else _sgd_kernel_posting(handoff),
             threading.get_ident], blas=False, handoff=True)))
    posted = [first for first, _ in outcomes if first is not None]
    assert posted, "a worker waiting awake was never handed its lane through a kernel"
    for before, after, theta in posted:
        assert (before, after) == (False, True)
        np.testing.assert_array_equal(theta, np.full(4096, -0.5, np.float32))
    assert all(ident != threading.get_ident() for _, ident in outcomes)
    threads.rest()


@pytest.mark.parametrize("spin_seconds", [0.0, 1.0])
def test_a_handoff_the_first_lane_never_uses_still_runs_the_workers_lane(spin_seconds,
                                                                         monkeypatch):
    """Where the first lane posts nothing (no kernel, or it failed before its kernel) the
    worker's lane is posted after it (``Handoff.settle``): every lane runs, an error comes
    back, and the pool serves the next call; with the spin off the first lane gets None."""
    monkeypatch.setattr(threads, "SPIN_SECONDS", spin_seconds)
    monkeypatch.setattr(threads, "_quiet_until", 0.0)
    ran = []

    def worker_lane():
        ran.append(threading.get_ident())
        return "worker"

    got = []
    for _ in range(4):
        assert within(10, lambda: threads.run_lanes(
            [lambda handoff: got.append(handoff) or "caller", worker_lane], blas=False,
            handoff=True)) == ["caller", "worker"]

    def fail(handoff):
        raise RuntimeError("before any kernel")

    with pytest.raises(RuntimeError, match="before any kernel"):
        threads.run_lanes([fail, worker_lane], blas=False, handoff=True)
    assert len(ran) == 5
    assert within(10, lambda: threads.run_lanes([lambda: 1, lambda: 2])) == [1, 2]
    if spin_seconds == 0.0 or threads._spinner() is None:
        assert got == [None] * 4
    else:
        assert any(isinstance(h, threads.Handoff) for h in got)
    threads.rest()


def test_the_cpu_a_thread_runs_on_is_one_it_may_use():
    cpu = threads._cpu()
    if cpu is None:
        pytest.skip("sched_getcpu is not available here")
    assert cpu in os.sched_getaffinity(0)


def _worker_after_a_region():
    """The pool's first worker, once a two-lane region has run."""
    threads.run_lanes([lambda: None, lambda: None], blas=False)
    return threads._workers(1).workers[0]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity calls")
def test_a_worker_that_started_on_the_callers_cpu_is_moved_to_the_others(monkeypatch):
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two CPUs")
    worker = _worker_after_a_region()
    tid = worker.thread.native_id
    here, other = sorted(allowed)[:2]
    os.sched_setaffinity(tid, allowed)  # (the pool may have steered it in earlier tests)
    monkeypatch.setattr(threads, "_cpu", lambda: here)
    try:
        worker.cpu = other  # started its last lane elsewhere: left alone
        threads.run_lanes([lambda: None, lambda: None], blas=False)
        assert os.sched_getaffinity(tid) == allowed
        assert worker.cpu == here  # noted at the start of its lane (here, as patched)
        threads.run_lanes([lambda: None, lambda: None], blas=False)
        assert os.sched_getaffinity(tid) == allowed - {here}  # now kept off the caller's
        assert threads.run_lanes([lambda: 1, lambda: 2], blas=False) == [1, 2]
    finally:
        os.sched_setaffinity(tid, allowed)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity calls")
def test_a_worker_is_not_pinned_where_the_caller_may_use_one_cpu_only(monkeypatch):
    worker = _worker_after_a_region()
    calls = []
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(threads.os, "sched_setaffinity", lambda *args: calls.append(args))
    worker.steer(3)
    assert calls == [] and worker.cpu is None



INTERRUPTED = r"""
import os, signal, sys, threading, time
from ermlab import threads
awake = sys.argv[1] == "awake"


def region():
    return threads.run_lanes([lambda: 0, lambda: 1, lambda: 2], blas=False, awake=awake)


threading.Timer(20, lambda: (print("hang", flush=True), os._exit(3))).start()
region()  # the pool's workers exist
if sys.argv[2] == "between":  # Ctrl-C between a post's counting and its setting
    post = threads._Worker.post

    def cut(self, call, awake=True):
        threads._Worker.post = post
        self.generation += 1
        raise KeyboardInterrupt

    threads._Worker.post = cut
    try:
        region()
    except KeyboardInterrupt:
        print("interrupted", end=" ", flush=True)
else:  # Ctrl-C every ms, landing in the library's code (this script would not catch it
    def inside_ermlab(signum, frame):  # elsewhere)
        if "ermlab" in frame.f_code.co_filename:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, inside_ermlab)
    stop = threading.Event()
    threading.Thread(target=lambda: [os.kill(os.getpid(), signal.SIGINT)
                                     for _ in iter(lambda: stop.wait(0.001), True)],
                     daemon=True).start()
    start = time.time()
    while time.time() - start < 1:
        try:
            while True:
                region()
        except KeyboardInterrupt:
            pass
    stop.set()
    time.sleep(0.05)
    print("interrupted", end=" ", flush=True)
print(region(), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("wait, where", [("awake", "between"), ("asleep", "between"),
                                         ("awake", "anywhere")])
def test_regions_cut_by_interrupts_leave_the_pool_working(wait, where, tmp_path):
    """A KeyboardInterrupt anywhere in a region (between a post's counting and its setting,
    in the caller's lane, while it waits for a worker) is raised once every worker is back:
    the next region runs (it hung: a worker waited for a post number gone past)."""
    import subprocess
    import sys

    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    env = {**os.environ, "ERMLAB_NUM_THREADS": "3"}
    done = subprocess.run([sys.executable, str(script), wait, where], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.strip() == "interrupted [0, 1, 2]"
