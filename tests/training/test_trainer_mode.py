"""Every training step runs the model in training mode, whatever put a module in eval mode
between steps (a callback, an evaluation), though the Trainer no longer walks the module
tree at every step."""

import numpy as np

from ermlab import losses, nn, optim
from ermlab.training import Callback, Trainer


class Probe(nn.Identity):
    """Records the mode of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


class SwitchOff(Callback):
    """After every batch, puts the whole model or one module in eval mode."""

    def __init__(self, target_of) -> None:
        self.target_of = target_of

    def on_batch_end(self, trainer, logs) -> None:
        self.target_of(trainer.model).eval()


def _fit(target_of, validation=False):
    probe = Probe()
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Sequential(probe),
                          nn.Linear(4, 2, rng=1))
    callbacks = [SwitchOff(target_of)] if target_of is not None else []
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                      callbacks=callbacks, rng=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3)).astype(np.float32), rng.integers(0, 2, 12)
    trainer.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y) if validation else None)
    return probe.modes


def test_steps_run_in_training_mode_after_a_callback_switched_the_model_off():
    assert _fit(lambda model: model) == [True] * 6


def test_steps_run_in_training_mode_after_a_nested_module_was_switched_off():
    assert _fit(lambda model: model[2][0]) == [True] * 6
    assert _fit(lambda model: model[2]) == [True] * 6


def test_validation_runs_in_eval_mode_and_training_resumes():
    modes = _fit(None, validation=True)
    assert modes == [True] * 3 + [False] + [True] * 3 + [False]
