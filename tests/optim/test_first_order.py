"""First-order optimizers without torch: hand formulas, convergence rates, resume, validation."""

import math

import numpy as np
import pytest

from ermlab import optim
from ermlab.nn.parameter import Parameter


def quadratic(seed=0, n=8, mu=0.01, lipschitz=1.0):
    """f(x) = ½ (x − x*)ᵀ A (x − x*) with eigenvalues spread over [μ, L]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = np.geomspace(mu, lipschitz, n)
    a = q @ np.diag(eigs) @ q.T
    x_star = rng.standard_normal(n)
    return a, x_star, rng.standard_normal(n)


def set_grad(p, a, x_star):
    p.zero_grad()
    p.add_grad(a @ (p.data - x_star))


def value(a, x_star, x):
    return 0.5 * (x - x_star) @ a @ (x - x_star)


# -- hand formulas for the rules torch does not have ------------------------------------


def test_classic_momentum_by_hand_and_under_a_schedule():
    a, x_star, x0 = quadratic()
    mu, lrs = 0.9, [0.5] * 5 + [0.1] * 5
    p = Parameter(x0.copy())
    opt = optim.SGD([p], lr=lrs[0], momentum=mu, momentum_form="classic")
    torch_form = Parameter(x0.copy())
    opt_t = optim.SGD([torch_form], lr=lrs[0], momentum=mu)
    x, v = x0.copy(), np.zeros_like(x0)
    for k, lr in enumerate(lrs):
        for o in (opt, opt_t):
            o.param_groups[0]["lr"] = lr
        g = a @ (x - x_star)
        v = mu * v + lr * g
        x = x - v
        set_grad(p, a, x_star)
        set_grad(torch_form, a, x_star)
        opt.step()
        opt_t.step()
        np.testing.assert_allclose(p.data, x, rtol=1e-13, atol=1e-15)
        if k < 5:  # constant γ: both forms give the same iterates
            np.testing.assert_allclose(torch_form.data, x, rtol=1e-12, atol=1e-14)
    assert not np.allclose(torch_form.data, x, rtol=1e-3)  # a scheduled γ separates them


def test_classic_nesterov_by_hand():
    a, x_star, x0 = quadratic(1)
    lr, mu = 0.3, 0.8
    p = Parameter(x0.copy())
    opt = optim.SGD([p], lr=lr, momentum=mu, nesterov=True, momentum_form="classic")
    x, v = x0.copy(), np.zeros_like(x0)
    for _ in range(20):
        g = a @ (x - x_star)
        v = mu * v + lr * g
        x = x - (lr * g + mu * v)
        set_grad(p, a, x_star)
        opt.step()
    np.testing.assert_allclose(p.data, x, rtol=1e-12)


def test_lookahead_nesterov_by_hand_and_as_torch_form_in_phi():
    a, x_star, x0 = quadratic(2)
    lr, mu = 0.4, 0.9
    p = Parameter(x0.copy())

    def closure():
        set_grad(p, a, x_star)
        return value(a, x_star, p.data)

    opt = optim.SGD([p], lr=lr, momentum=mu, nesterov="lookahead", momentum_form="classic")
    phi = Parameter(x0.copy())
    opt_phi = optim.SGD([phi], lr=lr, momentum=mu, nesterov=True)
    theta, v = x0.copy(), np.zeros_like(x0)
    for _ in range(60):
        loss = opt.step(closure)
        assert loss == pytest.approx(value(a, x_star, theta + mu * v), rel=1e-12)
        v = mu * v - lr * a @ (theta + mu * v - x_star)
        theta = theta + v
        set_grad(phi, a, x_star)
        opt_phi.step()
        np.testing.assert_allclose(p.data, theta, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p.data + mu * opt.state[p]["momentum_buffer"], phi.data,
                                   rtol=1e-11, atol=1e-13)


def test_lookahead_needs_a_closure():
    opt = optim.SGD([Parameter(np.zeros(3))], lr=0.1, momentum=0.9, nesterov="lookahead",
                    momentum_form="classic")
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_heavy_ball_by_hand_and_equals_classic_momentum():
    a, x_star, x0 = quadratic(3)
    alpha, beta = 0.5, 0.7
    p, q = Parameter(x0.copy()), Parameter(x0.copy())
    opt = optim.HeavyBall([p], lr=alpha, momentum=beta)
    classic = optim.SGD([q], lr=alpha, momentum=beta, momentum_form="classic")
    x_prev, x = x0.copy(), x0.copy()
    for _ in range(40):
        x, x_prev = x - alpha * a @ (x - x_star) + beta * (x - x_prev), x
        set_grad(p, a, x_star)
        set_grad(q, a, x_star)
        opt.step()
        classic.step()
        np.testing.assert_allclose(p.data, x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(q.data, p.data, rtol=1e-10)


def test_nag_c_by_hand():
    a, x_star, x0 = quadratic(4)
    s = 1.0
    p = Parameter(x0.copy())
    opt = optim.NAGC([p], lr=s)
    x_prev, y = x0.copy(), x0.copy()
    for k in range(1, 30):
        x = y - s * a @ (y - x_star)
        y = x + (k - 1) / (k + 2) * (x - x_prev)
        x_prev = x
        set_grad(p, a, x_star)
        opt.step()
        np.testing.assert_allclose(p.data, y, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[p]["x"], x, rtol=1e-12, atol=1e-14)


def test_nag_c_rate_on_a_strictly_convex_quadratic():
    """f(x_k) − f* ≤ 2L‖x0 − x*‖²/(k+1)² (Su, Boyd & Candès 2016), with s = 1/L."""
    lipschitz = 4.0
    a, x_star, x0 = quadratic(5, n=20, mu=1e-4, lipschitz=lipschitz)
    p = Parameter(x0.copy())
    opt = optim.NAGC([p], lr=1 / lipschitz)
    radius2 = np.sum((x0 - x_star) ** 2)
    ratios = []
    for k in range(1, 400):
        set_grad(p, a, x_star)
        opt.step()
        gap = value(a, x_star, opt.state[p]["x"])
        bound = 2 * lipschitz * radius2 / (k + 1) ** 2
        assert gap <= bound, f"k={k}: f(x_k) − f* = {gap:.3g} > bound {bound:.3g}"
        ratios.append(gap / bound)
    gd = Parameter(x0.copy())  # gradient descent is only O(1/k): far behind at k = 400
    opt_gd = optim.SGD([gd], lr=1 / lipschitz)
    for _ in range(399):
        set_grad(gd, a, x_star)
        opt_gd.step()
    assert value(a, x_star, opt.state[p]["x"]) < 0.5 * value(a, x_star, gd.data)


def test_nag_sc_linear_rate():
    """f(x_k) − f* ≤ (1 − √(μ/L))^k (f(x0) − f* + μ/2 ‖x0 − x*‖²) (Nesterov 2004, Thm 2.2.3)."""
    mu, lipschitz = 1e-3, 1.0
    a, x_star, x0 = quadratic(6, n=20, mu=mu, lipschitz=lipschitz)
    p = Parameter(x0.copy())
    opt = optim.NAGSC([p], lr=1 / lipschitz, strong_convexity=mu)
    rate = 1 - math.sqrt(mu / lipschitz)
    constant = value(a, x_star, x0) + mu / 2 * np.sum((x0 - x_star) ** 2)
    for k in range(1, 600):
        set_grad(p, a, x_star)
        opt.step()
        gap = value(a, x_star, opt.state[p]["x"])
        assert gap <= constant * rate**k, f"k={k}: {gap:.3g} > {constant * rate**k:.3g}"
    gd_bound = constant * (1 - mu / lipschitz) ** 599
    assert gap < 1e-3 * gd_bound  # far below what gradient descent's rate allows


def test_rmsprop_eps_inside_sqrt_by_hand():
    rng = np.random.default_rng(7)
    p = Parameter(rng.standard_normal(5))
    x = p.data.copy()
    opt = optim.RMSprop([p], lr=0.01, alpha=0.9, eps=1e-4, eps_inside_sqrt=True, centered=True)
    v, gbar = np.zeros(5), np.zeros(5)
    for _ in range(20):
        g = rng.standard_normal(5)
        v = 0.9 * v + 0.1 * g * g
        gbar = 0.9 * gbar + 0.1 * g
        x = x - 0.01 * g / np.sqrt(v - gbar**2 + 1e-4)
        p.grad[...] = g
        opt.step()
    np.testing.assert_allclose(p.data, x, rtol=1e-12)


# -- state_dict: a resumed run continues bit for bit ---------------------------------------

RESUME = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.2, momentum_form="classic")),
    (optim.HeavyBall, dict(lr=0.1, momentum=0.8)),
    (optim.NAGC, dict(lr=0.1)),
    (optim.NAGSC, dict(lr=0.1, strong_convexity=0.5)),
    (optim.Adagrad, dict(lr_decay=0.01, weight_decay=0.1)),
    (optim.Adadelta, dict(weight_decay=0.1)),
    (optim.RMSprop, dict(momentum=0.9, centered=True, eps_inside_sqrt=True)),
    (optim.Adam, dict(amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, dict()),
    (optim.Adamax, dict(weight_decay=0.1)),
    (optim.NAdam, dict(decoupled_weight_decay=True, weight_decay=0.1)),
]


def gradient_stream(seed, shapes, steps):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()


@pytest.mark.parametrize(("cls", "options"), RESUME, ids=[c.__name__ for c, _ in RESUME])
def test_state_dict_resume_is_bit_for_bit(cls, options):
    shapes = [(4, 3), (3,)]
    grads = gradient_stream(8, shapes, 60)
    start = [np.random.default_rng(9).standard_normal(s) for s in shapes]
    params = [Parameter(a.copy()) for a in start]
    opt = cls(params, **options)
    run(opt, params, grads[:30])
    saved, saved_params = opt.state_dict(), [p.data.copy() for p in params]
    run(opt, params, grads[30:])
    fresh = [Parameter(a.copy()) for a in saved_params]
    resumed = cls(fresh, **options)
    resumed.load_state_dict(saved)
    run(resumed, fresh, grads[30:])
    for p, q in zip(params, fresh):
        assert np.array_equal(p.data, q.data)
    assert opt.state_dict()["param_groups"] == resumed.state_dict()["param_groups"]


def test_transformed_resume_with_gradient_noise_is_bit_for_bit():
    shapes = [(5,), (2, 2)]
    grads = gradient_stream(10, shapes, 40)

    def build(arrays):
        params = [Parameter(a.copy()) for a in arrays]
        opt = optim.Transformed(optim.Adam(params, lr=0.01), optim.ClipGradNorm(1.0),
                                optim.GradientNoise(0.3, rng=11))
        return params, opt

    params, opt = build([np.ones(s) for s in shapes])
    run(opt, params, grads[:20])
    saved, saved_params = opt.state_dict(), [p.data.copy() for p in params]
    run(opt, params, grads[20:])
    fresh, resumed = build(saved_params)
    resumed.load_state_dict(saved)
    run(resumed, fresh, grads[20:])
    for p, q in zip(params, fresh):
        assert np.array_equal(p.data, q.data)


# -- the subnormal flush -----------------------------------------------------------------


@pytest.mark.parametrize("flush_every", [0, 16])
def test_flush_removes_geometrically_decaying_subnormals(flush_every):
    """A unit whose gradient dies: m = 0.5^t · m₁ reaches float32 subnormals (< 1.2e-38)."""
    p = Parameter(np.ones(4, dtype=np.float32))
    opt = optim.Adam([p], betas=(0.5, 0.5), flush_every=flush_every)
    p.grad[...] = 1.0
    opt.step()
    p.grad[...] = 0.0
    for _ in range(140):
        opt.step()
    m = opt.state[p]["exp_avg"]
    tiny = np.finfo(np.float32).tiny
    if flush_every:
        assert np.all(m == 0) and np.all(opt.state[p]["exp_avg_sq"] == 0)
    else:
        assert np.all((m > 0) & (m < tiny))  # the trap the flush avoids


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flush_zeroes_subnormals_only(dtype):
    """The default threshold is the dtype's smallest normal number τ (finfo.tiny)."""
    tiny = np.finfo(dtype).tiny
    x = np.array([1e-31, -tiny, tiny * 0.99, 0.5, -tiny / 3, tiny * 1.01], dtype=dtype)
    expected = np.array([1e-31, -tiny, 0.0, 0.5, 0.0, tiny * 1.01], dtype=dtype)
    np.testing.assert_array_equal(optim.inplace.flush_tiny_(x), expected)
    y = np.array([1e-29, -1e-31, 0.5], dtype=dtype)
    np.testing.assert_array_equal(optim.inplace.flush_tiny_(y, 1e-30),
                                  np.array([1e-29, 0.0, 0.5], dtype=dtype))


# -- transforms ----------------------------------------------------------------------------


def test_adam_after_decoupled_weight_decay_is_adamw():
    shapes = [(3, 3)]
    grads = gradient_stream(12, shapes, 30)
    p, q = Parameter(np.ones((3, 3))), Parameter(np.ones((3, 3)))
    adamw = optim.AdamW([p], lr=0.01, weight_decay=0.1)
    composed = optim.Transformed(optim.Adam([q], lr=0.01), optim.DecoupledWeightDecay(0.1))
    run(adamw, [p], grads)
    run(composed, [q], grads)
    assert np.array_equal(p.data, q.data)


def test_coupled_weight_decay_transform_is_the_weight_decay_option():
    grads = gradient_stream(13, [(4,)], 30)
    p, q = Parameter(np.ones(4)), Parameter(np.ones(4))
    run(optim.RMSprop([p], weight_decay=0.1), [p], grads)
    run(optim.Transformed(optim.RMSprop([q]), optim.CoupledWeightDecay(0.1)), [q], grads)
    np.testing.assert_allclose(p.data, q.data, rtol=1e-14)


def test_gradient_noise_variance_schedule_and_seed():
    eta, gamma = 0.3, 0.55
    params = [Parameter(np.zeros(20000))]
    opt = optim.SGD(params, lr=0.0)

    def draws(seed):
        noise, out = optim.GradientNoise(eta, gamma, rng=seed), []
        for _ in range(3):
            params[0].zero_grad()
            noise(opt)
            out.append(params[0].grad.copy())
        return out

    first = draws(0)
    for t, g in enumerate(first):
        assert np.var(g) == pytest.approx(eta / (1 + t) ** gamma, rel=0.05)
        assert abs(np.mean(g)) < 5 * math.sqrt(eta / 20000)
    assert all(np.array_equal(a, b) for a, b in zip(first, draws(0)))
    assert not np.array_equal(first[0], draws(1)[0])


def test_clip_grad_norm_by_hand():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    p.grad[...] = [3.0, 0.0]
    q.grad[...] = [4.0]
    total = optim.clip_grad_norm_([p, q], 1.0)
    assert total == 5.0
    np.testing.assert_allclose(np.r_[p.grad, q.grad], np.array([3, 0, 4]) / (5 + 1e-6))
    optim.clip_grad_value_([p, q], 0.1)
    assert p.grad.max() <= 0.1 and q.grad.max() <= 0.1


# -- validation ----------------------------------------------------------------------------

BAD = [
    (optim.SGD, dict(lr=-0.1), "lr"),
    (optim.SGD, dict(lr=0.1, momentum=1.0), "momentum"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "nesterov"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, dampening=0.1), "dampening"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, momentum_form="keras"), "momentum_form"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov="lookahead"), "classic"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1), "weight_decay"),
    (optim.HeavyBall, dict(lr=0.1, momentum=-0.1), "momentum"),
    (optim.NAGC, dict(lr=-1), "lr"),
    (optim.NAGSC, dict(lr=1.0, strong_convexity=2.0), "strong_convexity"),
    (optim.NAGSC, dict(lr=1.0, strong_convexity=0.0), "strong_convexity"),
    (optim.Adagrad, dict(eps=-1e-10), "eps"),
    (optim.Adagrad, dict(lr_decay=-1), "lr_decay"),
    (optim.Adagrad, dict(initial_accumulator_value=-1), "initial_accumulator_value"),
    (optim.Adadelta, dict(rho=1.0), "rho"),
    (optim.Adadelta, dict(lr=-1), "lr"),
    (optim.RMSprop, dict(alpha=-0.1), "alpha"),
    (optim.RMSprop, dict(momentum=1.5), "momentum"),
    (optim.RMSprop, dict(eps=-1), "eps"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "betas"),
    (optim.Adam, dict(betas=(0.9, -0.1)), "betas"),
    (optim.Adam, dict(eps=-1e-8), "eps"),
    (optim.Adam, dict(lr=-1e-3), "lr"),
    (optim.AdamW, dict(weight_decay=-0.01), "weight_decay"),
    (optim.Adamax, dict(betas=(0.9, 1.0)), "betas"),
    (optim.NAdam, dict(momentum_decay=-1), "momentum_decay"),
    (optim.Adam, dict(flush_every=-1), "flush_every"),
    (optim.Adam, dict(lr=float("nan")), "lr"),
    (optim.SGD, dict(lr=float("inf")), "finite"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=float("nan")), "dampening"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=1.5), "dampening"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=-0.5), "dampening"),
    (optim.Adam, dict(betas=0.9), "betas"),
    (optim.Adam, dict(betas=(0.9,)), "betas"),
    (optim.NAdam, dict(betas="ab"), "betas"),
    (optim.Adam, dict(weight_decay=float("inf")), "weight_decay"),
    (optim.Adagrad, dict(eps=float("inf")), "eps"),
]


@pytest.mark.parametrize(("cls", "options", "word"), BAD,
                         ids=[f"{c.__name__}-{w}-{i}" for i, (c, _, w) in enumerate(BAD)])
def test_bad_hyperparameters_raise(cls, options, word):
    with pytest.raises(ValueError, match=word):
        cls([Parameter(np.zeros(3))], **options)


def test_a_parameter_twice_in_one_group_raises():
    """It would be updated twice a step (torch only warns); across groups it was refused."""
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="twice in one parameter group"):
        optim.Adam([p, q, p])
    with pytest.raises(ValueError, match="twice in one parameter group"):
        optim.SGD([{"params": [q]}, {"params": [p, p], "lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1)
    opt = optim.SGD([p, q], lr=0.5)
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(p.data, [-0.5, -0.5])  # once, not twice


def test_bad_group_option_raises():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([{"params": [p]}, {"params": [q], "betas": (0.9, 1.2)}])


@pytest.mark.parametrize("bad", [
    lambda: optim.ClipGradNorm(-1.0),
    lambda: optim.ClipGradValue(-1.0),
    lambda: optim.GradientNoise(-0.1),
    lambda: optim.DecoupledWeightDecay(-1.0),
    lambda: optim.clip_grad_norm_([Parameter(np.zeros(2))], 1.0, norm_type=0.5),
])
def test_bad_transform_arguments_raise(bad):
    with pytest.raises(ValueError):
        bad()
