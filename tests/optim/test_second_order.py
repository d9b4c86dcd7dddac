"""Newton, BFGS and L-BFGS without torch: closed-form oracles, convergence, state, errors."""

import numpy as np
import pytest

from ermlab.nn.parameter import Parameter
from ermlab.optim import BFGS, LBFGS, Newton
from ermlab.optim.line_search import cubic_interpolate
from ermlab.optim.newton import damped_cholesky_shift


def split_params(x, cut):
    """θ as two Parameters (a vector and a column), to exercise flattening."""
    return [Parameter(x[:cut].copy()), Parameter(x[cut:].reshape(-1, 1).copy())]


def make_closure(params, fn):
    """closure(): zero grads, f, ∇f into the parameters' grads, return f."""
    def flat():
        return np.concatenate([p.data.ravel() for p in params])

    def closure():
        f, g = fn(flat())
        offset = 0
        for p in params:
            p.zero_grad()
            p.add_grad(g[offset:offset + p.size].reshape(p.shape))
            offset += p.size
        return f
    return closure, flat


def rosenbrock(x):
    f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return float(f), g


def rosenbrock_hessian_2d(x):
    a, b = x
    return np.array([[1200 * a**2 - 400 * b + 2, -400 * a], [-400 * a, 200.0]])


def quadratic(seed=0, n=6):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A = M @ M.T + n * np.eye(n)
    b = rng.standard_normal(n)
    return A, b, lambda x: (float(0.5 * x @ A @ x - b @ x), A @ x - b)


# -- Newton -----------------------------------------------------------------------


def test_newton_solves_strictly_convex_quadratic_in_one_step():
    A, b, fn = quadratic()
    params = split_params(np.random.default_rng(1).standard_normal(6), 2)
    opt = Newton(params)
    closure, flat = make_closure(params, fn)
    x0 = flat()
    loss = opt.step(closure)
    assert loss == pytest.approx(fn(x0)[0], rel=1e-15)
    np.testing.assert_allclose(flat(), np.linalg.solve(A, b), rtol=1e-8)
    assert opt.global_state()["damping"] == 0.0  # positive definite: no damping
    assert opt.global_state()["func_evals"] == 1 + 2 * 6
    # grads are left at ∇f(θ before the step)
    np.testing.assert_allclose(np.concatenate([p.grad.ravel() for p in params]), fn(x0)[1])


def test_newton_hessian_matches_analytic():
    params = [Parameter(np.array([-1.2, 1.0]))]
    opt = Newton(params)
    closure, flat = make_closure(params, rosenbrock)
    H = opt.hessian(closure, flat())
    np.testing.assert_allclose(H, rosenbrock_hessian_2d(np.array([-1.2, 1.0])), rtol=1e-7)
    np.testing.assert_array_equal(flat(), [-1.2, 1.0])  # θ restored


def test_newton_damps_at_a_nonconvex_point():
    """f = x² − y² + y⁴: H = diag(2, −2 + 12y²) is indefinite at y = 0.1."""
    def fn(v):
        x, y = v
        return float(x**2 - y**2 + y**4), np.array([2 * x, -2 * y + 4 * y**3])

    theta = np.array([0.05, 0.1])
    params = [Parameter(theta.copy())]
    opt = Newton(params, damping=1e-3)
    closure, flat = make_closure(params, fn)
    f0, g0 = fn(theta)
    opt.step(closure)
    H = np.diag([2.0, -2 + 12 * 0.01])
    delta = opt.global_state()["damping"]
    # N&W Algorithm 3.3: τ₀ = −min H_ii + β already makes H + τ₀I positive definite
    assert delta == pytest.approx(-H[1, 1] + 1e-3, rel=1e-6)
    assert np.all(np.linalg.eigvalsh(H + delta * np.eye(2)) > 0)
    d = flat() - theta
    np.testing.assert_allclose(d, -np.linalg.solve(H + delta * np.eye(2), g0), rtol=1e-6)
    assert g0 @ d < 0  # a descent direction (the undamped step would ascend in y)
    undamped = -np.linalg.solve(H, g0)
    assert g0 @ undamped > 0


def test_damped_cholesky_shift_doubles_until_positive_definite():
    H = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, −1, positive diagonal
    delta = damped_cholesky_shift(H, beta=0.3)
    # 0 fails; then 0.3 and 0.6 fail (need δ > 1); 1.2 succeeds
    assert delta == pytest.approx(1.2, rel=1e-15)
    assert damped_cholesky_shift(np.eye(3), beta=0.25) == 0.0


def test_newton_converges_on_rosenbrock():
    params = [Parameter(np.array([-1.2, 1.0]))]
    opt = Newton(params)
    closure, flat = make_closure(params, rosenbrock)
    for _ in range(10):
        opt.step(closure)
    np.testing.assert_allclose(flat(), [1.0, 1.0], atol=1e-8)


# -- BFGS ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 10])
def test_bfgs_converges_on_rosenbrock(n):
    params = split_params(np.array([-1.2, 1.0] * (n // 2)), 1)
    opt = BFGS(params, max_iter=200, tolerance_change=1e-14, tolerance_grad=1e-10)
    closure, flat = make_closure(params, rosenbrock)
    opt.step(closure)
    np.testing.assert_allclose(flat(), np.ones(n), atol=1e-6)
    assert opt.global_state()["n_iter"] < 100  # superlinear: 40 (2-D) and 90 (10-D) here


def test_bfgs_inverse_hessian_is_spd_and_satisfies_secant_equation():
    A, b, fn = quadratic(seed=3, n=5)
    params = [Parameter(np.zeros(5))]
    opt = BFGS(params, max_iter=1, max_eval=10)  # torch's default max_eval(1) = 1: no search
    closure, flat = make_closure(params, fn)
    previous = None
    for _ in range(4):
        x_before = flat()
        opt.step(closure)
        state = opt.global_state()
        if previous is not None:
            s = x_before - previous  # the step of the last iteration
            y = A @ s
            np.testing.assert_allclose(state["H"] @ y, s, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(state["H"], state["H"].T, atol=1e-12)
            assert np.all(np.linalg.eigvalsh(state["H"]) > 0)
        previous = x_before


def test_bfgs_solves_quadratic_like_the_exact_inverse():
    """On a strictly convex quadratic BFGS reaches A⁻¹b (Wolfe, not exact, line search)."""
    A, b, fn = quadratic(seed=4, n=4)
    params = [Parameter(np.zeros(4))]
    opt = BFGS(params, max_iter=50, tolerance_grad=1e-12, tolerance_change=1e-15)
    closure, flat = make_closure(params, fn)
    opt.step(closure)
    np.testing.assert_allclose(flat(), np.linalg.solve(A, b), rtol=1e-6)


# -- L-BFGS -------------------------------------------------------------------------


@pytest.mark.parametrize("mixed", [False, True], ids=["float64", "float32-and-float64"])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_state_dict_round_trip(line_search_fn, mixed):
    """Resumed from its state, bit for bit; with a float32 and a float64 parameter the
    flat vectors are float64 and come back as float64 (they were cast to the first
    parameter's float32)."""
    x0 = np.array([-1.2, 1.0] * 3)

    def build():
        params = split_params(x0.copy(), 4)
        if mixed:
            params[0] = Parameter(params[0].data.astype(np.float32))
        opt = LBFGS(params, lr=0.5 if line_search_fn is None else 1,
                    max_iter=4, history_size=3, line_search_fn=line_search_fn)
        return opt, *make_closure(params, rosenbrock)

    opt, closure, flat = build()
    for _ in range(2):
        opt.step(closure)
    saved, x_saved = opt.state_dict(), flat()
    assert {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
            "prev_flat_grad", "prev_loss"} <= set(saved["state"][0])
    for _ in range(3):
        opt.step(closure)

    opt2, closure2, flat2 = build()
    offset = 0
    for p in opt2.param_groups[0]["params"]:
        p.data[...] = x_saved[offset:offset + p.size].reshape(p.shape)
        offset += p.size
    opt2.load_state_dict(saved)
    assert opt2.global_state()["d"].dtype == np.float64
    for _ in range(3):
        opt2.step(closure2)
    np.testing.assert_array_equal(flat2(), flat())
    assert opt2.global_state()["func_evals"] == opt.global_state()["func_evals"]


def test_lbfgs_keeps_float32():
    params = [Parameter(np.array([-1.2, 1.0], dtype=np.float32))]
    opt = LBFGS(params, line_search_fn="strong_wolfe")

    def closure():
        p = params[0]
        f, g = rosenbrock(p.data.astype(np.float64))
        p.zero_grad()
        p.add_grad(g.astype(np.float32))
        return f

    for _ in range(5):
        opt.step(closure)
    assert params[0].data.dtype == np.float32
    np.testing.assert_allclose(params[0].data, [1, 1], atol=1e-2)


def test_bfgs_state_dict_round_trip():
    params = [Parameter(np.array([-1.2, 1.0]))]
    opt = BFGS(params, max_iter=5)
    closure, flat = make_closure(params, rosenbrock)
    opt.step(closure)
    saved, x_saved = opt.state_dict(), flat()
    opt.step(closure)
    params2 = [Parameter(x_saved.copy())]
    opt2 = BFGS(params2, max_iter=5)
    opt2.load_state_dict(saved)
    closure2, flat2 = make_closure(params2, rosenbrock)
    opt2.step(closure2)
    np.testing.assert_array_equal(flat2(), flat())


def test_cubic_interpolate_finds_the_cubics_minimum():
    # c(x) = x³ − 3x has its local minimum at x = 1
    def c(x):
        return x**3 - 3 * x, 3 * x**2 - 3

    assert cubic_interpolate(0.0, *c(0.0), 2.0, *c(2.0)) == pytest.approx(1.0, rel=1e-12)
    assert cubic_interpolate(2.0, *c(2.0), 0.0, *c(0.0)) == pytest.approx(1.0, rel=1e-12)
    assert cubic_interpolate(0.0, *c(0.0), 2.0, *c(2.0), bounds=(1.5, 3.0)) == 1.5


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Newton, BFGS])
def test_too_many_parameters_raise(cls):
    with pytest.raises(ValueError, match="max_params = 2000; use LBFGS"):
        cls([Parameter(np.zeros((50, 41)))])
    cls([Parameter(np.zeros((50, 41)))], max_params=2050)  # raising the limit is allowed


@pytest.mark.parametrize("cls", [LBFGS, BFGS, Newton])
def test_second_order_errors(cls):
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="param groups"):
        cls([{"params": [a]}, {"params": [b], "lr": 0.5}])
    opt = cls([a, b])
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
    with pytest.raises(ValueError, match="single param group"):
        opt.add_param_group({"params": [Parameter(np.zeros(1))]})
    with pytest.raises(ValueError, match="lr"):
        cls([a], lr=-1.0)


def test_quasi_newton_option_errors():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="line_search_fn"):
        LBFGS([p], line_search_fn="armijo")
    with pytest.raises(ValueError, match="history_size"):
        LBFGS([p], history_size=0)
    with pytest.raises(ValueError, match="history_size must be an integer"):
        LBFGS([p], history_size=2.5)  # the history grew without bound
    for key in ("max_iter", "max_eval"):
        with pytest.raises(ValueError, match=f"{key} must be an integer"):
            LBFGS([p], **{key: 3.0})
        with pytest.raises(ValueError, match=f"{key} must be an integer"):
            BFGS([p], **{key: True})
    with pytest.raises(ValueError, match="max_iter"):
        BFGS([p], max_iter=0)
    with pytest.raises(ValueError, match="damping"):
        Newton([p], damping=0.0)
