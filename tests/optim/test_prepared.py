"""A replayed step (``optim.prepared``) is the full step, bit for bit, and is refused
wherever something it was made from has changed.

Each scenario runs two optimizers from the same start: one replays, the other never
keeps a step (``replay`` off), so it takes the full path every time. Parameters and
state must stay identical, and the replays counted must be those expected (a test that
never replayed would prove nothing).
"""

import gc
import weakref

import numpy as np
import pytest

from ermlab import nn, optim, threads
from ermlab.optim import inplace, prepared

pytest.importorskip("numba", reason="steps are replayed only with the fused kernels (Numba)")

SHAPES = [(23, 17), (17,), (1,)]


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    from ermlab.optim import _kernels as kernels

    monkeypatch.delenv("ERMLAB_FUSED", raising=False)
    monkeypatch.setattr(inplace, "_loaded_kernels", kernels)


@pytest.fixture
def replays(monkeypatch):
    """The answers of ``PreparedStep.run``: True for each replayed step."""
    answers = []
    original = prepared.PreparedStep.run

    def run(self, opt, kernels):
        answers.append(original(self, opt, kernels))
        return answers[-1]

    monkeypatch.setattr(prepared.PreparedStep, "run", run)
    return answers


def pair(name="SGD", **options):
    """Two optimizers over equal parameters: the first replays, the second never does."""
    made = []
    for _ in range(2):
        rng = np.random.default_rng(0)
        params = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
        opt = getattr(optim, name)(params, **options)
        opt.threads = 1
        made.append(opt)
    made[1].replay = False
    return made


def params_of(opt):
    return [p for group in opt.param_groups for p in group["params"]]


def set_grads(opts, seed):
    for opt in opts:
        rng = np.random.default_rng(seed)
        for p in params_of(opt):
            p.grad[...] = rng.standard_normal(p.shape).astype(np.float32)


def assert_same(a, b):
    for p, q in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
        sa, sb = a.state[p], b.state[q]
        assert sa.keys() == sb.keys()
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def steps(opts, n, seed=0):
    for k in range(n):
        set_grads(opts, seed + k)
        for opt in opts:
            opt.step()


@pytest.mark.parametrize("name, options", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("NAdam", dict()),
    ("Adagrad", dict(lr_decay=0.01)),
    ("RMSprop", dict(centered=True, momentum=0.5)),
])
def test_replayed_steps_are_the_full_steps_bit_for_bit(replays, name, options):
    a, b = pair(name, **options)
    steps((a, b), 20)  # the flush at step 16 takes the full path
    assert_same(a, b)
    # step 1 prepares; steps 2–20 replay, but where state is flushed: step 16 and step
    # 17 (prepared again by 16); plain SGD has no state to flush (no momentum buffer)
    flushed = any(state.get(key) is not None for state in a.state.values()
                  for key in a.flush_keys(a.param_groups[0], np.dtype(np.float32)))
    assert replays == ([True] * 14 + [False] + [True] * 3 if flushed else [True] * 19)


@pytest.mark.parametrize("name, options", [
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("Adam", dict(lr=0.01)),
    ("Adagrad", dict()),
    ("Adadelta", dict()),
])
def test_a_group_of_float32_and_float64_parameters_replays_each_with_its_own_kernel(
        replays, name, options):
    """One group, both dtypes: a replay calls each parameter's kernel for its own dtype
    (one call per group was made for the group's first parameter: the float64 one then
    failed in Numba's typing, or was rounded as float32)."""
    made = []
    for _ in range(2):
        rng = np.random.default_rng(0)
        params = [nn.Parameter(rng.standard_normal(8).astype(dtype))
                  for dtype in (np.float32, np.float64, np.float32)]
        opt = getattr(optim, name)(params, **options)
        opt.threads = 1
        made.append(opt)
    made[1].replay = False
    a, b = made
    for k in range(6):
        for opt in (a, b):
            rng = np.random.default_rng(k)
            for p in params_of(opt):
                p.grad[...] = rng.standard_normal(p.shape).astype(p.dtype)
            opt.step()
    assert_same(a, b)
    assert [p.dtype for p in params_of(a)] == [np.float32, np.float64, np.float32]
    assert replays == [True] * 5


@pytest.mark.parametrize("name, options", [("SGD", dict(lr=0.1, momentum=0.9)),
                                           ("Adam", dict(lr=0.01, amsgrad=True))])
def test_a_learning_rate_set_at_every_step_is_seen_and_replayed(replays, name, options):
    """A schedule sets the learning rate before each step: the group is asked again for
    its kernel's arguments, and the step still replays."""
    a, b = pair(name, **options)
    for k in range(20):
        for opt in (a, b):
            opt.param_groups[0]["lr"] = 0.1 / (1 + k)
        steps((a, b), 1, seed=k)
    assert_same(a, b)
    assert replays == [True] * 14 + [False] + [True] * 3  # the flush at step 16


def test_hyperparameters_that_change_the_kernel_arrays(replays):
    """Momentum turned on (its buffer made by the full step), then off (the kernel takes
    no buffer), AMSGrad turned off: replayed where the rule can be asked again."""
    a, b = pair("SGD", lr=0.1)
    steps((a, b), 3)
    for value in (0.9, 0.0):
        for opt in (a, b):
            opt.param_groups[0]["momentum"] = value
        steps((a, b), 3, seed=int(10 * value))
    assert_same(a, b)
    # momentum on: the kernel wants a buffer not made yet (refused), then replays;
    # off again: the buffer stays in the state, unused: replayed at once
    assert replays == [True, True, False, True, True, True, True, True]
    a, b = pair("Adam", lr=0.01, amsgrad=True)
    steps((a, b), 3)
    for opt in (a, b):
        opt.param_groups[0]["amsgrad"] = False
    steps((a, b), 3, seed=3)
    assert_same(a, b)


def test_replaced_arrays_are_seen(replays):
    """A new ``data`` or ``grad`` array, or a loaded state, is updated, not the old one."""
    a, b = pair("Adam", lr=0.01)
    steps((a, b), 3)
    for opt in (a, b):
        first = params_of(opt)[0]
        first.data = first.data.copy()
        first.grad = np.ones_like(first.data)
    for opt in (a, b):
        opt.step()
    assert_same(a, b)
    steps((a, b), 2, seed=5)
    saved = b.state_dict()
    for opt in (a, b):
        opt.load_state_dict(saved)
    steps((a, b), 2, seed=9)
    assert_same(a, b)
    # the new arrays: refused at step 4; the loaded state: nothing kept (load_state_dict)
    assert replays == [True, True, False, True, True, True]


def test_gradients_zeroed_lazily_are_cleared_before_a_replay(replays):
    """``zero_grad`` leaves the arrays to be cleared when next read: a replay reads each
    gradient through ``Parameter.grad``, so momentum alone moves θ, as on the full path."""
    a, b = pair("SGD", lr=0.1, momentum=0.9)
    steps((a, b), 3)
    for opt in (a, b):
        opt.zero_grad()
        opt.step()
    assert_same(a, b)
    assert replays == [True, True, True]
    assert all(not np.any(p.grad) for p in params_of(a))


def test_a_new_group_a_new_setting_or_kernels_turned_off_take_the_full_path(
        replays, monkeypatch):
    a, b = pair("SGD", lr=0.1, momentum=0.5)
    steps((a, b), 2)
    for opt in (a, b):
        opt.add_param_group({"params": [nn.Parameter(np.ones(5, np.float32))], "lr": 0.2})
    steps((a, b), 2, seed=2)
    for opt in (a, b):
        opt.flush_every = 0
    steps((a, b), 2, seed=4)
    monkeypatch.setenv("ERMLAB_FUSED", "0")
    steps((a, b), 1, seed=6)
    monkeypatch.delenv("ERMLAB_FUSED")
    steps((a, b), 2, seed=7)
    assert_same(a, b)
    # step 2 replays; the new group: refused at step 3, replayed at 4; flush_every:
    # refused at 5, replayed at 6; ERMLAB_FUSED=0: refused at 7 (the NumPy path keeps
    # nothing); step 8 prepares again, step 9 replays
    assert replays == [True, False, True, False, True, False, True]


def test_groups_holding_values_that_could_change_in_place_are_never_replayed(replays):
    a, b = pair("Adam", lr=0.01)
    for opt in (a, b):
        opt.param_groups[0]["betas"] = [0.9, 0.999]  # a list, not a tuple
    steps((a, b), 3)
    for opt in (a, b):
        opt.param_groups[0]["betas"][0] = 0.5  # changed in place
    steps((a, b), 2, seed=3)
    assert_same(a, b)
    assert replays == [] and a._prepared is None


def test_a_state_array_made_in_a_replayed_step_is_updated_on_the_full_path(replays):
    """``scalars`` may make a state array: the step goes on on the full path, so the new
    array takes part (a rule that made one lazily at its third step)."""

    class LateMomentum(optim.SGD):
        def scalars(self, param, group, state):
            if state["step"] == 3:
                group["momentum"] = 0.9  # what the group's next snapshot sees
                state["momentum_buffer"] = np.zeros_like(param.data)
            return super().scalars(param, group, state)

    made = []
    for keep in (True, False):
        rng = np.random.default_rng(0)
        params = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
        opt = LateMomentum(params, lr=0.1, threads=1)
        if not keep:
            opt.replay = False
        made.append(opt)
    steps(made, 5)
    assert_same(*made)
    assert all("momentum_buffer" in made[0].state[p] for p in params_of(made[0]))
    # steps 2–5 replayed: step 3 went on on the full path, which prepared step 4
    assert replays == [True] * 4


@pytest.mark.parametrize("name, options", [("SGD", dict(lr=0.01)),
                                           ("Adam", dict(lr=0.01, amsgrad=True))])
def test_with_two_threads_the_tuner_is_still_asked_and_timed(replays, monkeypatch, name,
                                                             options):
    """A replay runs only where the lane tuner chose the lanes it was made with, and each
    is recorded; two lanes' replays are bit for bit the full steps too."""
    recorded = []
    original = threads.LaneTuner.record

    def record(self, seconds):
        recorded.append(seconds)
        original(self, seconds)

    monkeypatch.setattr(threads.LaneTuner, "record", record)
    rng = np.random.default_rng(3)
    param = nn.Parameter(rng.standard_normal(200_000).astype(np.float32))
    param.grad = rng.standard_normal(200_000).astype(np.float32)
    twin = nn.Parameter(param.data.copy())
    twin.grad = param.grad.copy()
    a = getattr(optim, name)([param], threads=2, **options)
    b = getattr(optim, name)([twin], threads=2, **options)
    b.replay = False
    a.flush_every = b.flush_every = 0
    n = 8 + threads.WAKE_RUNS + 4 + 1 + 4 + 3  # warm-up, the probe, then its choice
    for _ in range(n):
        a.step()
        b.step()
    np.testing.assert_array_equal(param.data, twin.data)
    for key, value in a.state[param].items():
        np.testing.assert_array_equal(value, b.state[twin][key], err_msg=key)
    assert len(recorded) == 2 * n  # every step, replayed or not, of both optimizers
    # the warm-up's one lane replays (its first step prepares); the probe's two lanes and
    # its one lane are each refused at the first step (another lane count), then replay;
    # so are the last steps, on the lanes the probe chose, if it chose two
    two = threads.WAKE_RUNS + 4
    chose_two = a._lane_tuner.choice == 2
    assert replays[:7 + two + 5 + chose_two] == (
        [True] * 7 + [False] + [True] * (two - 1) + [False] + [True] * 4 + [False] * chose_two)
    assert replays[7 + two + 5 + chose_two:] == [True] * (n - 21 - chose_two)


def test_loading_a_state_frees_the_old_one_at_once():
    """What a replay keeps of the old state (its arrays) goes when a state is loaded, not
    at the next step."""
    a, _ = pair("Adam", lr=0.01)
    steps((a,), 3)
    assert a._prepared is not None
    old = weakref.ref(a.state[params_of(a)[0]]["exp_avg"])
    a.load_state_dict(a.state_dict())
    gc.collect()
    assert old() is None
    steps((a,), 2, seed=3)  # and training goes on from the loaded state
    assert a.state[params_of(a)[0]]["step"] == 5


def test_replay_turned_off_stops_replaying_at_once(replays):
    a, b = pair("SGD", lr=0.1, momentum=0.9)
    steps((a, b), 3)
    a.replay = False
    steps((a, b), 3, seed=3)
    assert_same(a, b)
    assert replays == [True, True]  # steps 2 and 3; none once it is off
