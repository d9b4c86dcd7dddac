"""LBFGS against torch.optim.LBFGS on the Rosenbrock function, float64.

Both optimizers see the same objective and gradient (a NumPy Rosenbrock), so
any difference comes from the optimizers. They take the same branches (equal
``func_evals`` and ``n_iter`` after every ``step``); iterates agree to
rounding, which differs by ~1 ulp per operation because torch's ``add_(alpha=)``
uses a fused multiply-add and its dot products accumulate in another order.
The Rosenbrock valley amplifies those ulps over many iterations, so the runs
compared at 1e-10 are a few dozen iterations long.
"""

import numpy as np
import pytest

from ermlab.nn.parameter import Parameter
from ermlab.optim import LBFGS

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")


def rosenbrock(x):
    """f(x) = Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)² and its gradient."""
    f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return float(f), g


def make_pair(n, **options):
    x0 = np.array([-1.2, 1.0] * (n // 2))
    # two parameters, to exercise flattening: first 3 coordinates and the rest
    params = [Parameter(x0[:3].copy()), Parameter(x0[3:].reshape(-1, 1).copy())]
    ours = LBFGS(params, **options)

    def closure():
        for p in params:
            p.zero_grad()
        f, g = rosenbrock(np.concatenate([p.data.ravel() for p in params]))
        params[0].add_grad(g[:3])
        params[1].add_grad(g[3:].reshape(-1, 1))
        return f

    tx = torch.tensor(x0.copy(), requires_grad=True)
    theirs = torch.optim.LBFGS([tx], **options)

    def torch_closure():
        f, g = rosenbrock(tx.detach().numpy().copy())
        tx.grad = torch.from_numpy(g)
        return f

    def flat():
        return np.concatenate([p.data.ravel() for p in params])

    return ours, closure, flat, theirs, torch_closure, tx


CASES = [
    (2, 5, dict(lr=0.1)),
    (2, 5, dict(line_search_fn="strong_wolfe")),
    (10, 8, dict(lr=0.1, max_iter=5)),
    (10, 5, dict(line_search_fn="strong_wolfe", max_iter=5)),
    (10, 4, dict(line_search_fn="strong_wolfe", max_iter=10, history_size=3)),
]


@pytest.mark.parametrize("n,steps,options", CASES)
def test_lbfgs_matches_torch_iterates(n, steps, options):
    ours, closure, flat, theirs, torch_closure, tx = make_pair(n, **options)
    for _ in range(steps):
        loss = ours.step(closure)
        torch_loss = theirs.step(torch_closure)
        assert loss == pytest.approx(float(torch_loss), rel=1e-10)
        ref = tx.detach().numpy()
        assert np.max(np.abs(flat() - ref) / np.abs(ref)) <= 1e-10
        state, torch_state = ours.global_state(), theirs.state[tx]
        assert state["func_evals"] == torch_state["func_evals"]
        assert state["n_iter"] == torch_state["n_iter"]
        assert len(state["old_dirs"]) == len(torch_state["old_dirs"])
        assert state["t"] == pytest.approx(float(torch_state["t"]), rel=1e-8)
        assert state["H_diag"] == pytest.approx(float(torch_state["H_diag"]), rel=1e-8)


def test_lbfgs_long_run_takes_torchs_path_and_minimum():
    """Default max_iter, 10-D, strong Wolfe to convergence: same path, same minimum."""
    ours, closure, flat, theirs, torch_closure, tx = make_pair(10, line_search_fn="strong_wolfe")
    for _ in range(5):
        ours.step(closure)
        theirs.step(torch_closure)
        assert ours.global_state()["func_evals"] == theirs.state[tx]["func_evals"]
    np.testing.assert_allclose(flat(), tx.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(flat(), np.ones(10), atol=1e-5)
