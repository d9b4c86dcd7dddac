"""Learning-rate schedules: closed forms, resuming from state_dict, argument checks."""

import json
import math

import numpy as np
import pytest

from ermlab.nn.parameter import Parameter
from ermlab.optim import SGD
from ermlab.optim import schedules as S


def optimizer(lrs=(0.1, 0.03)):
    return SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs], lr=lrs[0])


CLOSED_FORMS = {
    "constant": (lambda o: S.ConstantLR(o, factor=0.25, total_iters=4),
                 lambda b, t: b * (0.25 if t < 4 else 1.0)),
    "linear": (lambda o: S.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=20),
               lambda b, t: b * (0.1 + 0.8 * min(t, 20) / 20)),
    "step": (lambda o: S.StepLR(o, step_size=7), lambda b, t: b * 0.1 ** (t // 7)),
    "multistep": (lambda o: S.MultiStepLR(o, [10, 30, 30]),
                  lambda b, t: b * 0.1 ** ((t >= 10) + 2 * (t >= 30))),
    "exponential": (lambda o: S.ExponentialLR(o, gamma=0.97), lambda b, t: b * 0.97**t),
    "inverse_time": (lambda o: S.InverseTimeLR(o, decay=0.2, constant_steps=5),
                     lambda b, t: b / (1 + 0.2 * max(0, t - 5))),
    "cosine": (lambda o: S.CosineAnnealingLR(o, T_max=100, eta_min=1e-3),
               lambda b, t: 1e-3 + (b - 1e-3) * (1 + math.cos(math.pi * t / 100)) / 2),
    "sgdr": (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2),
             # cycles of 4, 8, 16, 32, 64 steps start at t = 0, 4, 12, 28, 60
             lambda b, t: b * (1 + math.cos(math.pi * _sgdr_phase(t, 4, 2))) / 2),
}


def _sgdr_phase(t, T_0, T_mult):
    start, length = 0, T_0
    while t >= start + length:
        start, length = start + length, length * T_mult
    return (t - start) / length


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_schedule_follows_its_closed_form(name):
    build, formula = CLOSED_FORMS[name]
    opt = optimizer()
    sched = build(opt)
    for t in range(101):
        want = [formula(b, t) for b in (0.1, 0.03)]
        np.testing.assert_allclose(sched.get_last_lr(), want, rtol=1e-12, atol=0)
        if hasattr(sched, "closed_form_lr"):
            np.testing.assert_allclose(sched.closed_form_lr(), want, rtol=1e-12, atol=0)
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        sched.step()
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.03]


def test_inverse_time_is_constant_first():
    """Bottou's advice: a fixed rate for the first updates, then α / (1 + δ t)."""
    opt = optimizer((1.0,))
    sched = S.InverseTimeLR(opt, decay=1.0, constant_steps=3)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(5):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [1, 1, 1, 1, 1 / 2, 1 / 3], rtol=1e-15)


RESUMABLE = {
    "step": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
    "multistep": lambda o: S.MultiStepLR(o, [10, 45, 70]),
    "cosine": lambda o: S.CosineAnnealingLR(o, T_max=80, eta_min=1e-4),
    "sgdr": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2),
    "linear": lambda o: S.LinearLR(o, start_factor=0.05, total_iters=50),
    "inverse_time": lambda o: S.InverseTimeLR(o, decay=0.1, constant_steps=50),
    "sequential": lambda o: S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.01, total_iters=10), S.ExponentialLR(o, 0.95),
            S.CosineAnnealingWarmRestarts(o, T_0=9)], milestones=[10, 45]),
    "chained": lambda o: S.ChainedScheduler(
        [S.ConstantLR(o, factor=0.5, total_iters=50), S.ExponentialLR(o, gamma=0.98)]),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_state_dict_resume_continues_identically(name):
    build = RESUMABLE[name]
    opt = optimizer()
    sched = build(opt)
    for _ in range(40):
        sched.step()
    saved_sched = json.loads(json.dumps(sched.state_dict()))  # plain values only
    saved_opt = opt.state_dict()
    expected = []
    for _ in range(60):
        sched.step()
        expected.append(sched.get_last_lr())

    opt2 = optimizer()
    sched2 = build(opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    resumed = []
    for _ in range(60):
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == expected


def test_plateau_state_dict_resume():
    metrics = [3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    opt = optimizer()
    sched = S.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in metrics[:6]:
        sched.step(m)
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    expected = [(sched.step(m), sched.get_last_lr())[1] for m in metrics[6:]]
    opt2 = optimizer()
    sched2 = S.ReduceLROnPlateau(opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert [(sched2.step(m), sched2.get_last_lr())[1] for m in metrics[6:]] == expected
    assert expected[-1][0] < 0.1 * 0.1 + 1e-12  # it did reduce, twice


def test_chained_multiplies_and_sequential_switches():
    opt = optimizer((1.0,))
    chained = S.ChainedScheduler([S.ConstantLR(opt, factor=0.1, total_iters=2),
                                  S.ExponentialLR(opt, gamma=0.5)])
    lrs = [chained.get_last_lr()[0]]
    for _ in range(4):
        chained.step()
        lrs.append(chained.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [0.1, 0.05, 0.25, 0.125, 0.0625], rtol=1e-15)

    opt = optimizer((1.0,))
    seq = S.SequentialLR(opt, [S.ConstantLR(opt, factor=0.1, total_iters=100),
                               S.StepLR(opt, step_size=2, gamma=0.5)], milestones=[3])
    lrs = [seq.get_last_lr()[0]]
    for _ in range(6):
        seq.step()
        lrs.append(seq.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.1, 1.0, 1.0, 0.5, 0.5], rtol=1e-15)


BAD = [
    (lambda o: S.StepLR(o, step_size=5, gamma=-0.1), "gamma"),
    (lambda o: S.StepLR(o, step_size=0), "step_size"),
    (lambda o: S.StepLR(o, step_size=2.5), "step_size"),
    (lambda o: S.MultiStepLR(o, [30, 10]), "increasing"),
    (lambda o: S.MultiStepLR(o, [0, 10]), "milestones"),
    (lambda o: S.ExponentialLR(o, gamma=0.0), "gamma"),
    (lambda o: S.ConstantLR(o, factor=1.5), "factor"),
    (lambda o: S.ConstantLR(o, factor=0.0), "factor"),
    (lambda o: S.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: S.LinearLR(o, end_factor=2.0), "end_factor"),
    (lambda o: S.LinearLR(o, total_iters=0), "total_iters"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=-1.0), "eta_min"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), "T_0"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=0), "T_mult"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=1.5), "T_mult"),
    (lambda o: S.InverseTimeLR(o, decay=-0.1), "decay"),
    (lambda o: S.InverseTimeLR(o, decay=0.1, constant_steps=-1), "constant_steps"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: S.ReduceLROnPlateau(o, mode="lowest"), "mode"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="pct"), "threshold_mode"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), "patience"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.0]), "min_lr"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 4)], milestones=[]), "milestone"),
    (lambda o: S.SequentialLR(o, [S.ReduceLROnPlateau(o)], milestones=[]), "ReduceLROnPlateau"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 4)], milestones=[5, 5]),
     "milestone"),
    (lambda o: S.ChainedScheduler([]), "at least one"),
    (lambda o: S.StepLR(o, 3, gamma=float("inf")), "gamma"),
    (lambda o: S.ExponentialLR(o, gamma=float("nan")), "gamma"),
    (lambda o: S.ChainedScheduler([S.StepLR(o, 3), S.StepLR(optimizer(), 3)]), "optimizer"),
]


@pytest.mark.parametrize("build,match", BAD)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build(optimizer())


# -- param groups: added later, or a different number on resume -----------------------------

GROUP_BUILDERS = {
    "step": lambda o: S.StepLR(o, step_size=2),
    "plateau": lambda o: S.ReduceLROnPlateau(o),
    "chained": lambda o: S.ChainedScheduler([S.ConstantLR(o, 0.5, 2), S.ExponentialLR(o, 0.9)]),
    "sequential": lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, total_iters=2),
                                               S.CosineAnnealingLR(o, T_max=5)], [2]),
}


@pytest.mark.parametrize("name", sorted(GROUP_BUILDERS))
def test_state_dict_of_another_number_of_groups_is_refused(name):
    build = GROUP_BUILDERS[name]
    saved = build(optimizer((0.1, 0.03))).state_dict()
    target = build(optimizer((0.1,)))
    with pytest.raises(ValueError, match=r"saved over 2 param group\(s\); this optimizer has 1"):
        target.load_state_dict(saved)


def test_state_dict_saved_after_a_group_was_added_resumes_the_same():
    """A scheduler that saw a group added continues identically on a twin with both groups."""
    def run(opt, sched, steps):
        out = []
        for _ in range(steps):
            sched.step(1.0)
            out.append(sched.get_last_lr())
        return out

    opt = optimizer((0.1,))
    sched = S.ReduceLROnPlateau(opt, patience=0, factor=0.5, min_lr=0.01)
    opt.add_param_group({"params": [Parameter(np.zeros(3))], "lr": 0.08})
    run(opt, sched, 2)
    saved, saved_opt = sched.state_dict(), opt.state_dict()
    expected = run(opt, sched, 4)
    twin = optimizer((0.1, 0.08))
    twin_sched = S.ReduceLROnPlateau(twin, patience=0, factor=0.5, min_lr=0.01)
    twin.load_state_dict(saved_opt)
    twin_sched.load_state_dict(saved)
    assert run(twin, twin_sched, 4) == expected
    assert expected[-1] == [0.01, 0.01]


def test_closed_form_names_the_group_added_later():
    opt = optimizer((0.1,))
    sched = S.CosineAnnealingWarmRestarts(opt, T_0=3)
    opt.add_param_group({"params": [Parameter(np.zeros(3))], "lr": 0.08})
    with pytest.raises(ValueError, match="initial rate of 1 param group.*now has 2.*build the "
                                         "scheduler after adding every group"):
        sched.step()
