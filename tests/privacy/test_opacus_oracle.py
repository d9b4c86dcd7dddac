"""Opacus as an oracle: with noise 0 the clipped, summed gradients equal Opacus's on the
same model and batch; ε equals Opacus's RDP accountant."""

import numpy
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
opacus = pytest.importorskip("opacus", reason="Opacus oracle absent: pip install opacus --no-deps")
pytest.importorskip("dp_accounting", reason='accountant absent: pip install "ermlab[privacy]"')

from ermlab import losses, nn, optim  # noqa: E402
from ermlab.privacy import DPSGD, clip_and_sum, epsilon  # noqa: E402

F = torch.nn.functional


def twins(rng):
    """The same small CNN in ermlab and torch (float64, same weights)."""
    ours = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng, dtype="float64"), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, rng=rng, dtype="float64"), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 10, rng=rng, dtype="float64"), nn.ReLU(),
        nn.Linear(10, 3, rng=rng, dtype="float64"))
    for p in ours.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.Tanh(),
        torch.nn.Flatten(), torch.nn.Linear(54, 10), torch.nn.ReLU(),
        torch.nn.Linear(10, 3)).double()
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.copy_(torch.from_numpy(p.data))
    return ours, theirs


@pytest.mark.parametrize("clip", [0.05, 1.0, 100.0])
def test_clipped_sum_equals_opacus(clip):
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    rng = numpy.random.default_rng(3)
    ours, theirs = twins(rng)
    x, y = rng.standard_normal((16, 1, 7, 7)), rng.integers(0, 3, 16)
    expected_batch = 12.5

    module = GradSampleModule(theirs)
    opt = DPOptimizer(torch.optim.SGD(module.parameters(), lr=0.1), noise_multiplier=0.0,
                      max_grad_norm=clip, expected_batch_size=expected_batch)
    F.cross_entropy(module(torch.from_numpy(x).requires_grad_()), torch.from_numpy(y)).backward()
    opt.pre_step()     # clip, sum, (no) noise, divide by the expected batch size

    ours.train()
    loss = losses.SoftmaxCrossEntropy()
    loss.forward(ours.forward(x), y)
    ours.zero_grad()
    clip_and_sum(ours, loss.backward() * len(x), clip)
    dp = DPSGD(max_grad_norm=clip, noise_multiplier=0.0)
    dp.sample_rate, dp._n = expected_batch / 100, 100
    dp.add_noise(ours.parameters(), numpy.random.default_rng(0))
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        numpy.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-13,
                                      err_msg=name)


@pytest.mark.parametrize("sigma, q, steps", [(1.1, 256 / 60000, 2350), (0.7, 0.01, 500),
                                             (4.0, 0.1, 30)])
def test_epsilon_equals_opacus_rdp(sigma, q, steps):
    """Same RDP at integer orders (to rounding); at fractional orders dp-accounting's
    series overestimates the sampled Gaussian's RDP (see ``ermlab.privacy.accountant``),
    by up to 3e-4 relative in ε in these mild settings."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(3):
        accountant.history.append((sigma, q, steps // 3))
    for orders, rel in ((list(range(2, 64)), 1e-9), (RDPAccountant.DEFAULT_ALPHAS, 3e-4)):
        theirs = accountant.get_epsilon(1e-5, alphas=orders)
        ours = epsilon(sigma, q, 3 * (steps // 3), 1e-5, orders=orders)
        assert ours == pytest.approx(theirs, rel=rel)


def test_private_training_step_equals_opacus_sgd():
    """One whole DP-SGD step without noise (Poisson batch given): the new weights agree."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from ermlab.training import Trainer

    rng = numpy.random.default_rng(5)
    ours, theirs = twins(rng)
    x, y = rng.standard_normal((9, 1, 7, 7)), rng.integers(0, 3, 9)
    module = GradSampleModule(theirs)
    opt = DPOptimizer(torch.optim.SGD(module.parameters(), lr=0.3), noise_multiplier=0.0,
                      max_grad_norm=0.5, expected_batch_size=10)
    F.cross_entropy(module(torch.from_numpy(x).requires_grad_()), torch.from_numpy(y)).backward()
    opt.step()

    dp = DPSGD(max_grad_norm=0.5, noise_multiplier=0.0)
    trainer = Trainer(ours, losses.SoftmaxCrossEntropy(), optim.SGD(ours.parameters(), lr=0.3),
                      privacy=dp)
    dp.begin_fit(trainer, 100, 1, 10, None)        # q = 1/10, expected batch 10
    trainer.train_step(x, y)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        numpy.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("sigma, q, steps, delta", [(0.7, 0.05, 2000, 1e-6),
                                                    (1.0, 0.1, 10000, 1e-5),
                                                    (0.5, 0.2, 100, 1e-5)])
def test_epsilon_at_fractional_orders_is_never_below_opacus(sigma, q, steps, delta):
    """Where dp-accounting's fractional-order series overestimates (3.7 % to 27 % here), ε
    is the larger: conservative, no privacy over-claimed."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history.append((sigma, q, steps))
    theirs = accountant.get_epsilon(delta)
    ours = epsilon(sigma, q, steps, delta)
    assert theirs <= ours <= 1.3 * theirs
