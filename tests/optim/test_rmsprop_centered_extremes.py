"""Centered RMSprop at the ends of the float range: finite θ where torch.optim's is finite.

v̂ = v − ḡ² turned NaN two ways: the subnormal flush zeroed v but not ḡ (whose square was
still a nonzero subnormal), so v̂ < 0; and an overflowed v = ∞ met ḡ·ḡ = ∞ (∞ − ∞), where
torch's addcmul gives ∞. Both the fused kernel and the NumPy path (``opt.fused``) are run,
and must agree bit for bit (``adaptive._centered_root_``, ``_kernels._centered``).
"""

import numpy as np
import pytest

from ermlab import optim
from ermlab.nn.parameter import Parameter

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")

PATHS = [pytest.param(True, id="fused"), pytest.param(False, id="numpy")]


def run(grads, dtype, fused, **options):
    """θ after RMSprop(centered=True) over ``grads`` (each the gradient of every entry),
    ours and torch's, and our final state."""
    p = Parameter(np.ones(37, dtype))
    opt = optim.RMSprop([p], lr=1e-3, centered=True, threads=1, **options)
    opt.fused = fused
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    q = torch.nn.Parameter(torch.ones(37, dtype=tdtype))
    topt = torch.optim.RMSprop([q], lr=1e-3, centered=True,
                               eps=options.get("eps", 1e-8))
    for g in grads:
        p.grad = np.full(37, g, dtype)
        q.grad = torch.full((37,), g, dtype=tdtype)
        with np.errstate(all="ignore"):
            opt.step()
        topt.step()
    return p.data, q.detach().numpy(), opt.state[p]


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize(("g", "dtype"), [(1e-20, np.float32), (1e-19, np.float32),
                                          (1e-160, np.float64)])
def test_flushed_square_average_keeps_torch_step(g, dtype, fused):
    """A subnormal v is flushed (every 16 steps) while ḡ² is still a nonzero subnormal:
    v̂ is taken as 0, and √0 + ε is the ε that hid torch's subnormal v̂."""
    ours, theirs, _ = run([g] * 50, dtype, fused)
    assert np.isfinite(ours).all()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("fused", PATHS)
def test_unit_that_stops_stays_finite(fused):
    """g = 1e-18 for 1500 steps, then 0 (a unit that dies): the flush at step 1953 made NaN."""
    ours, theirs, _ = run([1e-18] * 1500 + [0.0] * 500, np.float32, fused)
    assert np.isfinite(ours).all()
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("fused", PATHS)
@pytest.mark.parametrize("eps_inside_sqrt", [False, True])
def test_overflowed_square_average(fused, eps_inside_sqrt):
    """g = 1e30 in float32: v = ∞ and ḡ·ḡ = ∞; torch's v̂ is ∞ (its fused multiply-add),
    the step 0, θ unchanged — not ∞ − ∞ = NaN."""
    ours, theirs, state = run([1e30] * 3, np.float32, fused, eps_inside_sqrt=eps_inside_sqrt)
    assert np.isposinf(state["square_avg"]).all()
    assert np.isfinite(ours).all()
    if not eps_inside_sqrt:  # torch has no ε inside the root
        np.testing.assert_array_equal(ours, theirs)


def test_extremes_fused_equals_numpy(monkeypatch):
    """The kernel and the NumPy path agree bit for bit where the corrections act (∞ average,
    negative v̂ after a flush, ±∞ and NaN gradients) and where they do not."""
    pytest.importorskip("numba")
    from ermlab.optim import _kernels, inplace

    monkeypatch.delenv("ERMLAB_FUSED", raising=False)
    monkeypatch.setattr(inplace, "_loaded_kernels", _kernels)
    rng = np.random.default_rng(0)
    grads = [np.where(rng.random(257) < 0.5, 1e-20, rng.standard_normal(257)) for _ in range(40)]
    grads += [np.full(257, 1e30)] + [rng.standard_normal(257) for _ in range(3)]
    grads += [np.where(rng.random(257) < 0.1, np.inf, rng.standard_normal(257))]
    for options in (dict(), dict(eps_inside_sqrt=True, momentum=0.5), dict(eps=1e-3)):
        results = []
        for fused in (True, False):
            p = Parameter(np.ones(257, np.float32))
            opt = optim.RMSprop([p], lr=1e-3, centered=True, threads=1, **options)
            opt.fused = fused
            with np.errstate(all="ignore"):
                for g in grads:
                    p.grad = g.astype(np.float32)
                    opt.step()
            results.append((p.data.copy(), {k: v.copy() for k, v in opt.state[p].items()
                                             if isinstance(v, np.ndarray)}))
        (a, sa), (b, sb) = results
        np.testing.assert_array_equal(a, b, err_msg=str(options))
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{options} {key}")
