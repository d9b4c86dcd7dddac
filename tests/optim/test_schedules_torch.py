"""Learning-rate schedules against torch.optim.lr_scheduler: same rates, step by step.

Two param groups (lr 0.1 and 0.03) so per-group handling is exercised. The
chainable forms use the same floating-point operations as torch, so the
rates are compared for exact equality; InverseTimeLR (not in torch) is
compared with torch's LambdaLR to 1e-13 relative.
"""

import numpy as np
import pytest

from ermlab.nn.parameter import Parameter
from ermlab.optim import SGD, schedules

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
lr_scheduler = torch.optim.lr_scheduler

LRS = (0.1, 0.03)


def optimizers():
    ours = SGD([{"params": [Parameter(np.zeros(2))], "lr": LRS[0]},
                {"params": [Parameter(np.zeros(3))], "lr": LRS[1]}], lr=LRS[0])
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": LRS[0]},
                              {"params": [torch.zeros(3, requires_grad=True)], "lr": LRS[1]}],
                             lr=LRS[0])
    return ours, theirs


def lr_sequences(build, steps=100):
    ours, theirs = optimizers()
    s_ours, s_theirs = build(schedules, ours), build(lr_scheduler, theirs)
    got, want = [s_ours.get_last_lr()], [s_theirs.get_last_lr()]
    for _ in range(steps):
        theirs.step()  # no gradients: a no-op that keeps torch from warning about the order
        s_ours.step()
        s_theirs.step()
        got.append(s_ours.get_last_lr())
        want.append(s_theirs.get_last_lr())
        assert [g["lr"] for g in ours.param_groups] == got[-1]
    return np.array(got), np.array(want)


SCHEDULES = {
    "constant": lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=7),
    "constant_default": lambda m, o: m.ConstantLR(o),
    "constant_one": lambda m, o: m.ConstantLR(o, factor=1.0),
    "linear_warmup": lambda m, o: m.LinearLR(o, start_factor=0.01, total_iters=10),
    "linear_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=30),
    "step": lambda m, o: m.StepLR(o, step_size=7),
    "step_half": lambda m, o: m.StepLR(o, step_size=10, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[10, 30, 30, 60]),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.95),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=100),
    "cosine_eta_min_past_T_max": lambda m, o: m.CosineAnnealingLR(o, T_max=30, eta_min=1e-3),
    "sgdr": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10),
    "sgdr_mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-3),
    "sequential_warmup_cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(o, T_max=95)],
        milestones=[5]),
    "sequential_three": lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.2, total_iters=10), m.ExponentialLR(o, gamma=0.9),
            m.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=2)], milestones=[3, 40]),
    "chained": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=2), m.ExponentialLR(o, gamma=0.9)]),
    "chained_warmup_step_cosine": lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, start_factor=0.1, total_iters=8), m.MultiStepLR(o, [20, 50], gamma=0.5),
         m.CosineAnnealingLR(o, T_max=100, eta_min=0.0)]),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_matches_torch(name):
    got, want = lr_sequences(SCHEDULES[name])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("decay,constant_steps", [(0.1, 0), (0.05, 10)])
def test_inverse_time_matches_torch_lambda(decay, constant_steps):
    def build(m, o):
        if m is schedules:
            return m.InverseTimeLR(o, decay=decay, constant_steps=constant_steps)
        return m.LambdaLR(o, lambda t: 1 / (1 + decay * max(0, t - constant_steps)))

    got, want = lr_sequences(build)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    assert np.all(got[: constant_steps + 1] == LRS)


PLATEAU_METRICS = [5.0, 4.0, 4.0, 3.9999, 4.1, 4.2, 3.0, 3.0, 3.0, 3.0, 2.9, 3.5, 3.5, 3.5,
                   3.5, 3.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("options", [
    dict(),
    dict(patience=1),
    dict(patience=0, factor=0.5, cooldown=2),
    dict(mode="max", patience=1, factor=0.5),
    dict(threshold_mode="abs", threshold=0.05, patience=1),
    dict(mode="max", threshold_mode="abs", threshold=0.5, patience=2, cooldown=1),
    dict(patience=0, factor=0.5, min_lr=[0.02, 0.001]),
    dict(patience=0, factor=0.9, eps=0.005),
])
def test_reduce_on_plateau_matches_torch(options):
    ours, theirs = optimizers()
    s_ours = schedules.ReduceLROnPlateau(ours, **options)
    s_theirs = lr_scheduler.ReduceLROnPlateau(theirs, **options)
    reductions = 0
    for metric in PLATEAU_METRICS:
        before = s_ours.get_last_lr()
        s_ours.step(metric)
        s_theirs.step(metric)
        assert s_ours.get_last_lr() == s_theirs.get_last_lr()
        assert s_ours.num_bad_epochs == s_theirs.num_bad_epochs
        assert s_ours.cooldown_counter == s_theirs.cooldown_counter
        reductions += s_ours.get_last_lr() != before
    assert reductions >= 1  # the script does exercise a reduction


# -- a param group added after the scheduler was built -------------------------------------


def rates_or_error(build, module, make, add, add_at, steps=40):
    """Per step: the rates of every group, or the error class that stopped the schedule; the
    second group is added (lr 0.03) before step ``add_at``."""
    optimizer = make()
    scheduler = build(module, optimizer)
    out = []
    for t in range(steps):
        if t == add_at:
            add(optimizer)
        if module is lr_scheduler:
            optimizer.step()  # no gradients: keeps torch from warning about the order
        try:
            scheduler.step()
        except (ValueError, RuntimeError, KeyError, IndexError) as error:
            out.append(type(error).__name__)
            break
        out.append([g["lr"] for g in optimizer.param_groups])
    return out


def ours_and_torch(build, add_at):
    ours = rates_or_error(
        build, schedules, lambda: SGD([Parameter(np.zeros(2))], lr=0.1),
        lambda o: o.add_param_group({"params": [Parameter(np.zeros(3))], "lr": 0.03}), add_at)
    theirs = rates_or_error(
        build, lr_scheduler, lambda: torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1),
        lambda o: o.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "lr": 0.03}),
        add_at)
    return ours, theirs


@pytest.mark.parametrize("add_at", [0, 3, 12])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_group_added_later_is_scheduled_or_refused_as_torch_does(name, add_at):
    """Chainable forms multiply the new group's rate too; values that need its initial rate
    (closed forms, warm restarts, a SequentialLR milestone) raise ValueError, as in torch."""
    ours, theirs = ours_and_torch(SCHEDULES[name], add_at)
    assert ours == theirs
    assert len(ours) > add_at  # the new group was there for at least one step


class _Plateau:
    """ReduceLROnPlateau stepped on a metric that never improves: it reduces every epoch."""

    def __init__(self, module, optimizer, **options):
        self.inner = module.ReduceLROnPlateau(optimizer, patience=0, factor=0.5, **options)

    def step(self):
        self.inner.step(1.0)


@pytest.mark.parametrize("min_lr", [0.0, 0.01, [0.02]])
@pytest.mark.parametrize("add_at", [0, 4])
def test_plateau_reduces_a_group_added_later_as_torch_does(min_lr, add_at):
    """A single min_lr extends to the new group (it is reduced too, down to the floor); a
    per-group list raises RuntimeError at the first reduction, as in torch."""
    ours, theirs = ours_and_torch(lambda m, o: _Plateau(m, o, min_lr=min_lr), add_at)
    assert ours == theirs
    if isinstance(min_lr, list):
        assert ours[-1] == "RuntimeError"
    else:
        assert min_lr <= ours[-1][1] < 0.03
