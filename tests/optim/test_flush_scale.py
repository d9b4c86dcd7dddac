"""The subnormal flush never changes a result: tiny gradients against scale invariance and torch.

A problem scaled by c keeps its trajectory: Adam-like rules are invariant
under g → c·g, ε → c·ε (c²·ε for ε inside a square root); SGD with momentum
and Adadelta are equivariant, θ → c·θ. With c a power of two every operation
scales exactly, so the scaled run must equal the unscaled one bit for bit as
long as no value is subnormal — torch's does. The runs are long enough for
the flush (every 16 steps) to act several times. A flush that zeroes state
below a fixed 1e-30 breaks this (v ~ c²g² ~ 1e-35 for c ~ 1e-16).
"""

import numpy as np
import pytest

from ermlab import optim
from ermlab.nn.parameter import Parameter

STEPS = 50  # flushes at steps 16, 32, 48
SHAPES = [(4, 6), (5,)]

# (name, options, θ scales with c, power of c that ε scales with)
CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9), 1, 0),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), 1, 0),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5, momentum_form="classic"), 1, 0),
    ("Adam", dict(lr=0.01), 0, 1),
    ("Adam", dict(lr=0.01, eps=0.0), 0, 1),
    ("Adam", dict(lr=0.01, amsgrad=True, eps=0.0), 0, 1),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, eps=1e-12), 0, 1),
    ("NAdam", dict(lr=0.01, eps=0.0), 0, 1),
    ("NAdam", dict(lr=0.01), 0, 1),
    ("Adamax", dict(lr=0.01, eps=0.0), 0, 1),
    ("Adamax", dict(lr=0.01), 0, 1),
    ("RMSprop", dict(lr=0.01, eps=0.0), 0, 1),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True), 0, 1),
    ("RMSprop", dict(lr=0.01, eps_inside_sqrt=True), 0, 2),
    ("Adagrad", dict(lr=0.1, eps=0.0), 0, 1),
    ("Adadelta", dict(lr=1.0), 1, 2),
    ("Adadelta", dict(lr=1.0, rho=0.5, eps=1e-3), 1, 2),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o, _, _ in CASES]


def problem(dtype, seed=0):
    """½ Σ a (θ − b)²: curvatures a, minimum b, start θ₀, all O(1) and away from b."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0.5, 2.0, s).astype(dtype), rng.uniform(2.0, 3.0, s).astype(dtype),
             rng.uniform(-1.0, 1.0, s).astype(dtype)) for s in SHAPES]


def trajectory(name, options, c, theta_power, eps_power, dtype, steps=STEPS):
    """θ_t / c^θ_power for t = 1..steps of the problem scaled by c (c = 1: unscaled), and
    whether any state value was subnormal after any step."""
    dtype = np.dtype(dtype)
    grad_scale = dtype.type(c ** (1 - theta_power))
    theta_scale = dtype.type(c**theta_power)
    options = dict(options)
    if "eps" in options or eps_power:
        options["eps"] = float(options.get("eps", _default_eps(name)) * c**eps_power)
    terms = problem(dtype)
    params = [Parameter(theta * theta_scale) for _, _, theta in terms]
    opt = getattr(optim, name)(params, **options)
    out, subnormal = [], False
    for _ in range(steps):
        for p, (a, b, _) in zip(params, terms):
            np.multiply(a, p.data - b * theta_scale, out=p.grad)
            p.grad *= grad_scale
        opt.step()
        subnormal = subnormal or subnormal_state(opt)
        out.append(np.concatenate([p.data.ravel() / theta_scale for p in params]))
    return np.array(out), subnormal


def _default_eps(name):
    import inspect

    return inspect.signature(getattr(optim, name)).parameters["eps"].default


def subnormal_state(opt):
    values = [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)]
    tiny = min(np.finfo(v.dtype).tiny for v in values)
    return any(np.any((v != 0) & (np.abs(v) < tiny)) for v in values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "options", "theta_power", "eps_power"), CASES, ids=IDS)
def test_scaled_problem_gives_the_same_trajectory(name, options, theta_power, eps_power, dtype):
    """c ~ 1e-15, 1e-16 (2⁻⁵⁰, 2⁻⁵³) and, in float64, ~1e-18 and ~1e-30 (2⁻⁶⁰, 2⁻¹⁰⁰); SGD's
    state is ~c, so c = 2⁻¹⁰⁰ there. The scaled run equals the run without the flush
    and the unscaled run, bit for bit. (Float32 keeps c²g² normal only down to
    c ~ 2⁻⁵³: below, subnormal arithmetic breaks the invariance, torch's too.)"""
    base, _ = trajectory(name, options, 1.0, theta_power, eps_power, dtype)
    assert np.ptp(base, axis=0).max() > 1e-3  # the problem moves
    unflushed = {} if name == "Adagrad" else {"flush_every": 0}
    if name == "SGD":
        scales = [2.0**-100]
    elif dtype == np.float64:
        scales = [2.0**-53, 2.0**-60, 2.0**-100]
    else:
        scales = [2.0**-48, 2.0**-50] if name == "Adadelta" else [2.0**-50, 2.0**-53]
    for c in scales:
        scaled, _ = trajectory(name, options, c, theta_power, eps_power, dtype)
        plain, _ = trajectory(name, {**options, **unflushed}, c, theta_power, eps_power, dtype)
        np.testing.assert_array_equal(scaled, plain,
                                      err_msg=f"{name}{options} scaled by {c:g}: flush changed it")
        np.testing.assert_array_equal(scaled, base, err_msg=f"{name}{options} scaled by {c:g}")


def torch_trajectory(name, options, c, theta_power, eps_power, dtype, steps=STEPS):
    """The same run with torch.optim (foreach, in ``dtype``)."""
    import torch

    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    dtype = np.dtype(dtype)
    grad_scale, theta_scale = dtype.type(c ** (1 - theta_power)), dtype.type(c**theta_power)
    options = {k: v for k, v in options.items() if k not in ("momentum_form", "eps_inside_sqrt")}
    if "eps" in options or eps_power:
        options["eps"] = float(options.get("eps", _default_eps(name)) * c**eps_power)
    terms = problem(dtype)
    params = [torch.tensor(theta * theta_scale, requires_grad=True) for _, _, theta in terms]
    opt = getattr(torch.optim, name)(params, **options)
    out = []
    for _ in range(steps):
        for p, (a, b, _) in zip(params, terms):
            g = a * (p.detach().numpy() - b * theta_scale)
            p.grad = torch.tensor(g * grad_scale)
        opt.step()
        out.append(np.concatenate([p.detach().numpy().ravel() / theta_scale for p in params]))
    return np.array(out)


TORCH_CASES = [case for case in CASES
               if "momentum_form" not in case[1] and "eps_inside_sqrt" not in case[1]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [1e-16, 1e-18])
@pytest.mark.parametrize(("name", "options", "theta_power", "eps_power"), TORCH_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o, _, _ in TORCH_CASES])
def test_tiny_gradients_follow_torch(name, options, theta_power, eps_power, c, dtype):
    """Gradients of ~1e-16 and ~1e-18 (θ too for SGD and Adadelta): torch's trajectory."""
    pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
    import torch

    ours, _ = trajectory(name, options, c, theta_power, eps_power, dtype)
    previous = torch.get_default_dtype()  # torch keeps NAdam's μ product in it
    try:
        theirs = torch_trajectory(name, options, c, theta_power, eps_power, dtype)
    finally:
        torch.set_default_dtype(previous)
    moved = np.abs(theirs - problem_start(dtype)).max()
    assert moved > 1e-3
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=tol * moved,
                               err_msg=f"{name}{options} at gradient scale {c:g}")


def problem_start(dtype):
    return np.concatenate([theta.ravel() for _, _, theta in problem(dtype)])


# -- the benefit kept: dead units leave no subnormals behind ---------------------------------

DEAD_CASES = [
    ("SGD", dict(lr=0.01, momentum=0.9)),
    ("SGD", dict(lr=0.01, momentum=0.9, momentum_form="classic")),
    ("Adam", dict()),
    ("Adam", dict(amsgrad=True)),
    ("AdamW", dict()),
    ("NAdam", dict()),
    ("Adamax", dict()),
    ("RMSprop", dict(momentum=0.9, centered=True)),
    ("RMSprop", dict(eps_inside_sqrt=True)),
    ("Adadelta", dict()),
]


def dead_unit_run(name, options, dtype, flush_every, steps=32):
    """Half the units alive (gradient 1), half dead (gradient exactly 0) after a state whose
    entries span 2⁻¹² τ … 2¹² τ around the dtype's smallest normal number τ."""
    tiny = np.finfo(dtype).tiny
    p = Parameter(np.ones(64, dtype=dtype))
    opt = getattr(optim, name)([p], flush_every=flush_every, **options)
    p.grad[...] = 1.0
    opt.step()
    ladder = (tiny * 2.0 ** np.linspace(-12, 12, 64)).astype(dtype)
    for value in opt.state[p].values():
        if isinstance(value, np.ndarray):
            value[...] = ladder
    p.grad[32:] = 0.0
    for _ in range(steps - 1):  # step 1 was the first; the last step, 32, flushes
        opt.step()
    return p, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "options"), DEAD_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o in DEAD_CASES])
def test_dead_units_leave_no_subnormal_state(name, options, dtype):
    p, opt = dead_unit_run(name, options, dtype, flush_every=16)
    q, plain = dead_unit_run(name, options, dtype, flush_every=0)
    tiny = np.finfo(dtype).tiny
    assert subnormal_state(plain)  # without the flush the trap is there
    assert not subnormal_state(opt)
    np.testing.assert_array_equal(p.data, q.data)  # and the parameters did not notice
    for key, value in opt.state[p].items():
        if isinstance(value, np.ndarray):  # only subnormals were zeroed, nothing else
            kept = plain.state[q][key]
            np.testing.assert_array_equal(value, np.where(np.abs(kept) < tiny, 0, kept))


def test_a_denominator_that_sets_the_step_is_kept():
    """Adam with ε = 0: a subnormal v still divides m (torch keeps it); only m is flushed."""
    tiny = np.finfo(np.float32).tiny
    p = Parameter(np.ones(4, dtype=np.float32))
    opt = optim.Adam([p], eps=0.0, flush_every=1)
    p.grad[...] = 3e-20  # v = 1e-3 g² ~ 1e-42: subnormal; m = 0.1 g: normal
    opt.step()
    v = opt.state[p]["exp_avg_sq"]
    assert np.all((v > 0) & (v < tiny))
    np.testing.assert_allclose(p.data, 1 - 1e-3, rtol=1e-3)  # Adam's first step is γ·sign(g)
    assert opt.flush_keys(opt.param_groups[0], np.float32) == ("exp_avg",)
    assert "exp_avg_sq" in optim.Adam([p]).flush_keys(opt.param_groups[0] | {"eps": 1e-8},
                                                      np.float32)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_flush_of_blocks_cut_over_threads_is_the_flush_of_the_whole(name):
    """The flush runs block by block in the lanes (scratch and mask views of each block)."""
    options = {"SGD": dict(lr=0.01, momentum=0.9), "Adam": dict(amsgrad=True),
               "RMSprop": dict(momentum=0.9, centered=True)}[name]
    tiny = np.finfo(np.float32).tiny

    def run(threads):
        p = Parameter(np.ones((300, 400), dtype=np.float32))
        opt = getattr(optim, name)([p], threads=threads, flush_every=2, **options)
        opt.lane_work, opt.min_parallel, opt.block_bytes = 1, 1024, 64 * 1024
        opt.fused_block_bytes = opt.block_bytes
        p.grad[...] = 1.0
        opt.step()
        ladder = (tiny * 2.0 ** np.linspace(-12, 12, p.size)).astype(np.float32)
        for value in opt.state[p].values():
            if isinstance(value, np.ndarray):
                value.reshape(-1)[...] = ladder
        p.grad[:, ::2] = 0.0
        opt.step()  # step 2 flushes
        return p, opt

    p, opt = run(threads=1)
    q, split = run(threads=3)
    assert sum(1 for lane in split._cached_layout[1] if lane) >= 2  # it was cut
    assert not subnormal_state(opt) and not subnormal_state(split)
    np.testing.assert_array_equal(p.data, q.data)
    for key, value in opt.state[p].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, split.state[q][key])
