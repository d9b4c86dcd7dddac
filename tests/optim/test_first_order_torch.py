"""First-order optimizers against torch.optim in float64: same trajectories to 1e-10."""

import math

import numpy as np
import pytest

from ermlab import optim
from ermlab.nn.models import mlp
from ermlab.nn.parameter import Parameter

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")

RTOL = 1e-10
STEPS = 100

# (optimizer name, options): every option torch has, one at a time and combined.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, nesterov=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("Adagrad", dict(weight_decay=0.1)),
    ("Adagrad", dict(initial_accumulator_value=0.5, eps=1e-3)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.2, rho=0.5, eps=1e-3)),
    ("Adadelta", dict(weight_decay=0.1)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.003, momentum=0.9)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(centered=True, momentum=0.5, alpha=0.9)),
    ("RMSprop", dict(weight_decay=0.1, eps=1e-3)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(weight_decay=0.1)),
    ("Adam", dict(lr=0.003, betas=(0.3, 0.999))),
    ("Adam", dict(weight_decay=0.1, amsgrad=True, eps=1e-3)),
    ("Adam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    ("Adamax", dict()),
    ("Adamax", dict(weight_decay=0.1)),
    ("Adamax", dict(lr=0.01, betas=(0.3, 0.5), eps=1e-3)),
    ("NAdam", dict()),
    ("NAdam", dict(weight_decay=0.1)),
    ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=0.01, momentum_decay=0.1, betas=(0.3, 0.5))),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'defaults'}"
       for name, options in CASES]


@pytest.fixture(autouse=True)
def torch_float64():
    """torch keeps step counts and NAdam's μ product in the default dtype: make it float64."""
    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    yield
    torch.set_default_dtype(previous)
    torch.set_num_threads(threads)


def rel_error(ours, theirs) -> float:
    theirs = theirs.detach().numpy()
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def make_pair(name, options, arrays, groups=False):
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    if groups:  # two groups, the first with its own learning rate
        lr = options.get("lr", 1e-3) * 3
        ours = [{"params": ours[:1], "lr": lr}, {"params": ours[1:]}]
        theirs = [{"params": theirs[:1], "lr": lr}, {"params": theirs[1:]}]
    return getattr(optim, name)(ours, **options), getattr(torch.optim, name)(theirs, **options)


def flat(opt):
    return [p for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_random_gradient_sequence(name, options):
    rng = np.random.default_rng(1)
    shapes = [(5, 3), (7,), (2, 2, 3)]
    arrays = [rng.standard_normal(s) for s in shapes]
    ours, theirs = make_pair(name, options, arrays, groups=len(options) % 2 == 1)
    worst = 0.0
    for _ in range(STEPS):
        for p, q in zip(flat(ours), flat(theirs)):
            g = rng.standard_normal(p.shape) * rng.choice([1e-3, 1.0, 10.0])
            p.grad[...] = g
            q.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        for p, q in zip(flat(ours), flat(theirs)):
            worst = max(worst, rel_error(p.data, q))
    assert worst <= RTOL, f"{name}{options}: max relative error {worst:.3g}"
    moved = max(np.max(np.abs(p.data - a)) for p, a in zip(flat(ours), arrays))
    assert moved > 1e-3  # the comparison saw real updates


def mse_grad(scores, y):
    """∂/∂scores of mean((scores − y)²) over all entries, torch's mse_loss."""
    return 2 * (scores - y) / scores.size


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_mlp_trajectory(name, options):
    rng = np.random.default_rng(2)
    model = mlp([6, 16, 8, 3], activation="tanh", rng=3, dtype=np.float64)
    twin = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8),
                               torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for pname, q in twin.named_parameters():
            q.copy_(torch.tensor(dict(model.named_parameters())[pname].data))
    x = rng.standard_normal((32, 6))
    y = rng.standard_normal((32, 3))
    x_t, y_t = torch.tensor(x), torch.tensor(y)
    ours = getattr(optim, name)(model.parameters(), **options)
    theirs = getattr(torch.optim, name)(twin.parameters(), **options)
    worst = 0.0
    for _ in range(STEPS):
        model.zero_grad()
        model.backward(mse_grad(model.forward(x), y), input_grad=False)
        ours.step()
        theirs.zero_grad()
        torch.nn.functional.mse_loss(twin(x_t), y_t).backward()
        theirs.step()
        named = dict(model.named_parameters())
        for pname, q in twin.named_parameters():
            worst = max(worst, rel_error(named[pname].data, q))
    assert worst <= RTOL, f"{name}{options}: max relative error {worst:.3g}"


def quadratic(seed=0, n=6):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    a = q @ q.T / n + 0.1 * np.eye(n)
    b = rng.standard_normal(n)
    return a, b, rng.standard_normal(n)


def test_lookahead_nesterov_is_torch_nesterov_in_phi():
    """Sutskever's v ← μv − γ∇f(θ + μv), θ ← θ + v; torch's iterates are φ = θ + μv."""
    a, b, x0 = quadratic()
    lr, mu = 0.05, 0.9
    p = Parameter(x0.copy())

    def closure():
        p.zero_grad()
        p.add_grad(a @ p.data - b)
        return 0.5 * p.data @ a @ p.data - b @ p.data

    ours = optim.SGD([p], lr=lr, momentum=mu, nesterov="lookahead", momentum_form="classic")
    q = torch.tensor(x0.copy(), requires_grad=True)
    theirs = torch.optim.SGD([q], lr=lr, momentum=mu, nesterov=True)
    a_t, b_t = torch.tensor(a), torch.tensor(b)
    worst = 0.0
    for _ in range(150):
        ours.step(closure)
        theirs.zero_grad()
        (0.5 * q @ a_t @ q - b_t @ q).backward()
        theirs.step()
        phi = p.data + mu * ours.state[p]["momentum_buffer"]
        worst = max(worst, rel_error(phi, q))
        assert not np.allclose(p.data, q.detach().numpy())  # θ itself is a different sequence
    assert worst <= 1e-12


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s) for s in [(4, 3), (5,)]]
    grads = [rng.standard_normal(a.shape) for a in arrays]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for p, q, g in zip(ours, theirs, grads):
        p.grad[...] = g
        q.grad = torch.tensor(g)
    total = optim.clip_grad_norm_(ours, max_norm, norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(float(total_t), rel=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_matches_torch():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((6, 4)) * 3
    p, q = Parameter(np.zeros_like(g)), torch.zeros(g.shape, requires_grad=True)
    p.grad[...] = g
    q.grad = torch.tensor(g)
    optim.clip_grad_value_([p], 1.5)
    torch.nn.utils.clip_grad_value_([q], 1.5)
    np.testing.assert_array_equal(p.grad, q.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight", [0.1, 0.3, 0.49999999999, 0.5, 0.63, 0.6123456789, 0.9])
def test_lerp_is_torchs_bit_for_bit(dtype, weight):
    """``inplace.lerp_`` and the fused kernels' form of it (the Adam family's first moment,
    centred RMSprop's mean) round as torch's ``lerp_``: for w ≥ ½ one FMA,
    end + (w − 1)(end − start), with w − 1 from w rounded to the dtype (two roundings,
    end − (end − start)(1 − w), were an ulp away in both dtypes)."""
    from ermlab.optim.inplace import lerp_

    rng = np.random.default_rng(7)
    start, end = (rng.standard_normal(1037).astype(dtype) for _ in range(2))
    ours = lerp_(start.copy(), end, weight, np.empty_like(start))
    theirs = torch.from_numpy(start.copy()).lerp_(torch.from_numpy(end), weight).numpy()
    np.testing.assert_array_equal(ours, theirs)
