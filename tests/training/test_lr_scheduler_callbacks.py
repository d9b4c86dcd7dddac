"""Schedule callbacks when the optimizer gains a param group between two fits (unfreezing
layers): the plateau rule reduces the new group too, closed-form schedules refuse clearly."""

import numpy as np
import pytest
from training_helpers import Scripted, make_trainer

from ermlab import optim
from ermlab.optim.schedules import CosineAnnealingWarmRestarts, ExponentialLR
from ermlab.training import LearningRateScheduler, ReduceLROnPlateau


def head_only(params):
    """Train the last layer only; the first is added as a group later."""
    return optim.SGD(params[2:], lr=0.2)


def unfreeze(trainer, lr=0.1):
    trainer.optimizer.add_param_group({"params": trainer.model.parameters()[:2], "lr": lr})


def test_plateau_callback_reduces_a_group_added_between_fits(data):
    x, y, _, _ = data
    plateau = ReduceLROnPlateau("score", factor=0.5, patience=0)
    trainer = make_trainer([Scripted("score", [1.0] * 4), plateau], optimizer=head_only)
    trainer.fit(x, y, epochs=2)  # epoch 2 is the first bad one: 0.2 → 0.1
    unfreeze(trainer)
    trainer.fit(x, y, epochs=2)  # epochs 3 and 4 halve both groups
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.025, 0.025])


def test_plateau_callback_with_per_group_floors_names_the_fix(data):
    x, y, _, _ = data
    plateau = ReduceLROnPlateau("score", factor=0.5, patience=0, min_lr=[0.0])
    trainer = make_trainer([Scripted("score", [1.0] * 4), plateau], optimizer=head_only)
    trainer.fit(x, y, epochs=2)
    unfreeze(trainer)
    with pytest.raises(RuntimeError, match="set scheduler.min_lrs to a list of 2 floors"):
        trainer.fit(x, y, epochs=3)


def test_chainable_schedule_callback_schedules_the_new_group(data):
    x, y, _, _ = data
    trainer = make_trainer(optimizer=head_only)
    schedule = ExponentialLR(trainer.optimizer, gamma=0.5)
    trainer.callbacks.append(LearningRateScheduler(schedule))
    trainer.fit(x, y, epochs=1)
    unfreeze(trainer, lr=0.4)
    trainer.fit(x, y, epochs=2)  # two more epochs
    np.testing.assert_allclose(schedule.get_last_lr(), [0.2 * 0.5**3, 0.4 * 0.5**2])


def test_closed_form_schedule_callback_refuses_the_new_group(data):
    x, y, _, _ = data
    trainer = make_trainer(optimizer=head_only)
    trainer.callbacks.append(
        LearningRateScheduler(CosineAnnealingWarmRestarts(trainer.optimizer, T_0=3)))
    trainer.fit(x, y, epochs=1)
    unfreeze(trainer)
    with pytest.raises(ValueError, match="add_param_group after the scheduler was built"):
        trainer.fit(x, y, epochs=2)


def test_plateau_callback_state_loaded_before_the_first_fit_is_applied(data):
    x, y, _, _ = data
    first = ReduceLROnPlateau("score", factor=0.5, patience=0)
    trainer = make_trainer([Scripted("score", [1.0] * 3), first])
    trainer.fit(x, y, epochs=3)  # two bad epochs: two halvings, counters advanced
    saved = first.state_dict()
    again = ReduceLROnPlateau("score", factor=0.5, patience=0)
    again.load_state_dict(saved)  # no scheduler yet: kept until fit builds it
    fresh = make_trainer([Scripted("score", [1.0]), again])
    fresh.fit(x, y, epochs=1)
    assert again.scheduler.state_dict()["last_epoch"] == saved["scheduler"]["last_epoch"] + 1
    assert saved["scheduler"]["last_epoch"] == 3
