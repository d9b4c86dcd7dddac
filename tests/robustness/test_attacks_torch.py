"""FGSM and PGD against an independent torch re-implementation on an identical torch twin.

The ermlab network (convolution, batch norm with non-trivial running statistics, ReLU, max
pooling, dropout, linear) and its torch twin share their weights; torch runs in ``eval()``
with autograd, ermlab with its own bprop under ``gradients_at_test_time``. Both attacks start
from the same random start (drawn once by ``PGD.start``) and must give the same adversarial
examples, in float64 (every step's sign of the gradient agrees).
"""

import numpy as np
import pytest

from ermlab import nn
from ermlab.robustness import FGSM, PGD, input_gradient

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional


def twins(seed=0):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng, dtype="float64"), nn.BatchNorm2d(4, dtype="float64"),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3, rng=rng),
        nn.Linear(4 * 4 * 4, 5, rng=rng, dtype="float64"))
    conv, norm, linear = model[0], model[1], model[6]
    norm.weight.data[:] = rng.uniform(0.5, 2, 4)
    norm.bias.data[:] = rng.normal(size=4)
    norm.running_mean[:] = rng.normal(size=4)
    norm.running_var[:] = rng.uniform(0.5, 2, 4)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(64, 5),
    ).double().eval()
    with torch.no_grad():
        twin[0].weight[:] = torch.from_numpy(conv.weight.data)
        twin[0].bias[:] = torch.from_numpy(conv.bias.data)
        twin[1].weight[:] = torch.from_numpy(norm.weight.data)
        twin[1].bias[:] = torch.from_numpy(norm.bias.data)
        twin[1].running_mean[:] = torch.from_numpy(norm.running_mean)
        twin[1].running_var[:] = torch.from_numpy(norm.running_var)
        twin[6].weight[:] = torch.from_numpy(linear.weight.data)
        twin[6].bias[:] = torch.from_numpy(linear.bias.data)
    return model, twin


def batch(n=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 1, 8, 8)), rng.integers(0, 5, n)


def torch_grad(twin, x, y):
    x = torch.tensor(x, requires_grad=True)
    F.cross_entropy(twin(x), torch.from_numpy(y)).backward()
    return x.grad.numpy()


def torch_pgd(twin, x, y, eps, alpha, steps, delta0, norm):
    """Madry et al.'s PGD written out in torch (L∞) and the L2 variant."""
    x0 = torch.from_numpy(x)
    adv = torch.clamp(x0 + torch.from_numpy(delta0), 0, 1)
    for _ in range(steps):
        g = torch.from_numpy(torch_grad(twin, adv.numpy(), y))
        if norm == "linf":
            adv = adv + alpha * g.sign()
            adv = torch.min(torch.max(adv, x0 - eps), x0 + eps)
        else:
            n = g.flatten(1).norm(dim=1).clamp_min(1e-300)
            adv = adv + alpha * g / n.view(-1, 1, 1, 1)
            d = adv - x0
            dn = d.flatten(1).norm(dim=1)
            adv = x0 + d * torch.clamp(eps / dn.clamp_min(1e-300), max=1).view(-1, 1, 1, 1)
        adv = adv.clamp(0, 1)
    return adv.numpy()


def test_input_gradient_equals_torch_eval_mode_autograd():
    model, twin = twins()
    x, y = batch()
    grad = input_gradient(model, x, y)
    np.testing.assert_allclose(grad, torch_grad(twin, x, y), rtol=1e-10, atol=1e-14)
    assert model.training  # modes restored
    assert not model[1].frozen and not model[5].expectation


def test_fgsm_equals_torch():
    model, twin = twins()
    x, y = batch()
    x_adv = FGSM(eps=0.1)(model, x, y)
    expected = np.clip(x + 0.1 * np.sign(torch_grad(twin, x, y)), 0, 1)
    np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-15)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-15 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.8)])
def test_pgd_equals_torch_from_the_same_random_start(norm, eps):
    model, twin = twins()
    x, y = batch()
    attack = PGD(eps=eps, steps=7, norm=norm)
    delta0 = attack.start(x.shape, np.random.default_rng(5))
    x_adv = attack(model, x, y, rng=np.random.default_rng(5))
    expected = torch_pgd(twin, x, y, eps, attack.step_size, 7, delta0, norm)
    np.testing.assert_allclose(x_adv, expected, rtol=0, atol=1e-12)
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert (size <= eps * (1 + 1e-12)).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (size > 0.5 * eps).all()  # it moved: the ball's interior is not the answer


def test_pgd_raises_the_loss_more_than_fgsm_and_the_clean_loss():
    model, twin = twins()
    x, y = batch(64)

    def loss(z):
        with torch.no_grad():
            return float(F.cross_entropy(twin(torch.from_numpy(z)), torch.from_numpy(y)))

    fgsm = FGSM(eps=0.05)(model, x, y)
    pgd = PGD(eps=0.05, steps=10)(model, x, y, rng=0)
    assert loss(x) < loss(fgsm) < loss(pgd)
