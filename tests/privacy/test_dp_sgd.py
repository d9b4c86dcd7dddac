"""DP-SGD in the Trainer: accounting per epoch, the stop at a target ε, noise statistics,
Poisson sampling, resume, refusals before training."""

import math

import numpy
import pytest

pytest.importorskip("dp_accounting", reason='accountant absent: pip install "ermlab[privacy]"')

from ermlab import losses, nn, optim  # noqa: E402
from ermlab.privacy import DPSGD, epsilon, poisson_batches  # noqa: E402
from ermlab.training import Trainer  # noqa: E402


def blobs(n=400, seed=0):
    rng = numpy.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((3, 6))[y] * 3 + rng.standard_normal((n, 6))
    return x.astype("float32"), y


def trainer_with(dp, optimizer=optim.SGD, model=None, **options):
    model = model or nn.Sequential(nn.Linear(6, 16, rng=1), nn.ReLU(), nn.Linear(16, 3, rng=2))
    opt = optimizer(model.parameters(), lr=options.pop("lr", 0.5))
    return Trainer(model, losses.SoftmaxCrossEntropy(), opt, privacy=dp, rng=0, **options)


def test_epsilon_each_epoch_and_the_stop_at_the_target():
    x, y = blobs()
    dp = DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, delta=1e-3, target_epsilon=4.0)
    trainer = trainer_with(dp)
    history = trainer.fit(x, y, epochs=50, batch_size=40)        # q = 1/10, 10 steps/epoch
    epochs = len(history["epsilon"])
    assert 1 < epochs < 50 and trainer.step == 10 * epochs
    for k, spent in enumerate(history["epsilon"], 1):
        assert spent == pytest.approx(epsilon(1.0, 0.1, 10 * k, 1e-3))
    assert history["epsilon"][-1] <= 4.0 < epsilon(1.0, 0.1, 10 * (epochs + 1), 1e-3)
    assert "privacy budget" in trainer.stop_reason
    assert history["accuracy"][-1] > 0.9                           # it still learns


def test_dp_adam_learns_and_calibrated_noise_spends_the_target():
    x, y = blobs()
    dp = DPSGD(max_grad_norm=1.0, delta=1e-3, target_epsilon=3.0)     # σ calibrated
    trainer = trainer_with(dp, optim.Adam, lr=0.05)
    history = trainer.fit(x, y, epochs=4, batch_size=40)
    assert len(history["epsilon"]) == 4
    assert history["epsilon"][-1] == pytest.approx(3.0, rel=1e-3)
    assert history["epsilon"][-1] <= 3.0 + 1e-9
    assert trainer.evaluate(x, y)["accuracy"] > 0.9


def test_noise_on_an_empty_batch_has_the_right_statistics():
    """An empty Poisson batch: the gradient is pure noise, N(0, σ²C²) / (qN)."""
    dp = DPSGD(max_grad_norm=0.5, noise_multiplier=2.0, delta=1e-3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(300, 100, rng=0))
    trainer = trainer_with(dp, model=model, lr=0.0)
    dp.begin_fit(trainer, 500, 1, 50, None)                         # q N = 50
    x = numpy.zeros((0, 3, 10, 10), "float32")
    trainer.train_step(x, numpy.zeros(0, int))
    noise = numpy.concatenate([p.grad.ravel() for p in model.parameters()])
    std = 2.0 * 0.5 / 50
    assert noise.dtype == numpy.float32
    assert abs(noise.mean()) < 5 * std / math.sqrt(noise.size)
    assert noise.std() == pytest.approx(std, rel=0.03)
    assert trainer.step == 1


def test_poisson_sampling():
    rng = numpy.random.default_rng(0)
    sizes, counts = [], numpy.zeros(1000)
    for index in poisson_batches(1000, 0.05, 400, rng):
        sizes.append(len(index))
        counts[index] += 1
        assert len(numpy.unique(index)) == len(index)
    assert numpy.mean(sizes) == pytest.approx(50, rel=0.03)
    assert numpy.var(sizes) == pytest.approx(1000 * 0.05 * 0.95, rel=0.25)   # binomial, not fixed
    assert counts.mean() / 400 == pytest.approx(0.05, rel=0.03)


def test_resume_continues_the_accounting(tmp_path):
    x, y = blobs()
    whole = trainer_with(DPSGD(1.0, 1.0, delta=1e-3))
    whole.fit(x, y, epochs=3, batch_size=40)
    first = trainer_with(DPSGD(1.0, 1.0, delta=1e-3))
    first.fit(x, y, epochs=2, batch_size=40)
    first.save(tmp_path / "ckpt.safetensors")
    second = trainer_with(DPSGD(1.0, 1.0, delta=1e-3))
    history = second.fit(x, y, epochs=1, batch_size=40, resume_from=tmp_path / "ckpt.safetensors")
    assert history["epsilon"] == pytest.approx(whole.history["epsilon"])
    for a, b in zip(whole.model.parameters(), second.model.parameters()):
        numpy.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("options, words", [
    ({"max_grad_norm": 0.0, "noise_multiplier": 1.0}, "clip norm must be a number > 0"),
    ({"max_grad_norm": -1.0, "noise_multiplier": 1.0}, "clip norm must be a number > 0"),
    ({"max_grad_norm": "1", "noise_multiplier": 1.0}, "clip norm must be a number > 0"),
    ({"max_grad_norm": 1.0, "noise_multiplier": -0.5}, "noise multiplier must be ≥ 0"),
    ({"max_grad_norm": 1.0, "noise_multiplier": float("nan")}, "noise multiplier must be ≥ 0"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.5}, "delta must be in"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 0}, "target epsilon"),
    ({"max_grad_norm": 1.0}, "needs a noise multiplier or a target epsilon"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 0.0, "target_epsilon": 1.0}, "no privacy"),
])
def test_bad_options_one_line(options, words):
    with pytest.raises(ValueError, match=words) as error:
        DPSGD(**options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("dp, fit, words", [
    (DPSGD(1.0, 1.0, delta=1 / 400), {}, r"delta = 0.0025 must be below 1/N = 0.0025"),
    (DPSGD(1.0, 1.0, delta=1e-3, target_epsilon=0.5), {}, "target ε = 0.5 is unreachable"),
    (DPSGD(1.0, 1.0, delta=1e-3), {"sample_weight": numpy.ones(400)}, "sample weights"),
])
def test_bad_fit_refused_before_training(dp, fit, words):
    x, y = blobs()
    trainer = trainer_with(dp)
    before = [p.data.copy() for p in trainer.model.parameters()]
    with pytest.raises(ValueError, match=words) as error:
        trainer.fit(x, y, epochs=5, batch_size=40, **fit)
    assert "\n" not in str(error.value)
    assert trainer.step == 0
    for a, p in zip(before, trainer.model.parameters()):
        numpy.testing.assert_array_equal(a, p.data)


def test_batch_norm_model_refused_when_the_trainer_is_built():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="batch normalization") as error:
        trainer_with(DPSGD(1.0, 1.0), model=model)
    assert "\n" not in str(error.value)


def test_empty_poisson_batches_step_on_noise_without_augment_or_adversary():
    """q = 1/20 on 20 examples: about a third of the batches are empty. They still step
    (noise alone) but augment and the adversary never see 0 rows — AsImages cannot even
    reshape an empty batch. Adversarial training is allowed with DP-SGD: each example's
    perturbation depends on that example and θ only, so its sensitivity is unchanged."""
    from ermlab.data.transforms import AsImages, RandomHorizontalFlip
    from ermlab.robustness import FGSM

    rng = numpy.random.default_rng(0)
    x, y = rng.uniform(0, 1, (20, 6)).astype("float32"), rng.integers(0, 3, 20)
    flip, fgsm, seen = AsImages(RandomHorizontalFlip(), (1, 2, 3)), FGSM(eps=0.1), []

    def augment(xb, r):
        seen.append(("augment", len(xb)))
        return flip(xb, r)

    def adversary(model, xb, yb, **options):
        seen.append(("adversary", len(xb)))
        return fgsm(model, xb, yb, **options)

    class Sizes:
        def __init__(self):
            self.sizes = []

        def on_batch_end(self, trainer, logs):
            self.sizes.append(logs["size"])

    sizes = Sizes()
    trainer = trainer_with(DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, delta=1e-3),
                           augment=augment, adversary=adversary, callbacks=[sizes])
    trainer.fit(x, y, epochs=2, batch_size=1)
    assert trainer.step == 40 and len(sizes.sizes) == 40
    assert sizes.sizes.count(0) >= 5                                 # empty batches happened
    assert sorted(n for _, n in seen)[0] > 0                         # never called on 0 rows
    assert [n for what, n in seen if what == "augment"] == [n for n in sizes.sizes if n]
