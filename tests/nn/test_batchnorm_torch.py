"""BatchNorm1d/2d against torch.nn.BatchNorm1d/2d in float64, to 1e-10.

Several training steps with different batches (forward, backward for x, γ, β,
running mean/variance/num_batches_tracked after each step), then evaluation
mode with the running statistics. γ and β are set to random values in both.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")

from ermlab import nn  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=what)


CASES = [
    ("BatchNorm1d", (8, 5)),
    ("BatchNorm1d", (4, 5, 7)),
    ("BatchNorm2d", (3, 5, 4, 6)),
    ("BatchNorm2d", (2, 5, 1, 1)),  # m = 2 values per channel: unbiased factor 2
]


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("name, shape", CASES)
def test_batchnorm_matches_torch(name, shape, momentum):
    rng = np.random.default_rng(0)
    channels = shape[1]
    ours = getattr(nn, name)(channels, momentum=momentum, dtype=np.float64)
    theirs = getattr(torch.nn, name)(channels, momentum=momentum, dtype=torch.float64)
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)
    ours.weight.data[:], ours.bias.data[:] = gamma, beta
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    for step in range(4):
        x = 3.0 * rng.standard_normal(shape) + rng.standard_normal((1, channels) + shape[2:])
        g = rng.standard_normal(shape)
        ours.train()
        theirs.train()
        ours.zero_grad()
        theirs.zero_grad()
        y = ours.forward(x)
        grad_x = ours.backward(g)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(g))
        what = f"{name}{shape} step {step}"
        close(y, yt, f"{what}: output")
        close(grad_x, xt.grad, f"{what}: grad input")
        close(ours.weight.grad, theirs.weight.grad, f"{what}: grad gamma")
        close(ours.bias.grad, theirs.bias.grad, f"{what}: grad beta")
        close(ours.running_mean, theirs.running_mean, f"{what}: running mean")
        close(ours.running_var, theirs.running_var, f"{what}: running var")
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == step + 1
    x = rng.standard_normal(shape)
    close(ours.eval().forward(x), theirs.eval()(torch.tensor(x)), f"{name}{shape}: eval output")


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_options_match_torch(affine):
    # affine=False (no γ, β) and track_running_stats=False (batch statistics at test time too).
    rng = np.random.default_rng(1)
    x, g = rng.standard_normal((6, 3, 2, 2)), rng.standard_normal((6, 3, 2, 2))
    ours = nn.BatchNorm2d(3, eps=1e-3, affine=affine, track_running_stats=False,
                          dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, eps=1e-3, affine=affine, track_running_stats=False,
                                  dtype=torch.float64)
    y = ours.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    close(y, yt, "output")
    close(ours.backward(g), xt.grad, "grad input")
    close(ours.eval().forward(x), theirs.eval()(torch.tensor(x)), "eval output")
    assert "running_mean" not in ours.state_dict()


def test_state_dict_keys_and_values_match_torch():
    ours = nn.BatchNorm1d(4, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(4, dtype=torch.float64)
    x = np.random.default_rng(2).standard_normal((5, 4))
    ours.forward(x)
    theirs(torch.tensor(x))
    state, reference = ours.state_dict(), theirs.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        np.testing.assert_allclose(state[key], value.numpy(), rtol=RTOL, err_msg=key)
    assert state["num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("frozen", [False, True])
def test_blocked_passes_match_torch_across_block_edges(monkeypatch, frozen):
    """The statistics, the output and bprop run over blocks of samples: with blocks of 3
    samples, 7 samples give blocks of 3, 3 and 1, and every result must still be torch's
    (float64, 1e-10); frozen = torch's eval-mode BatchNorm under autograd."""
    from ermlab.nn import normalization

    rng = np.random.default_rng(3)
    shape = (7, 4, 3, 5)
    monkeypatch.setattr(normalization, "BLOCK_BYTES", 3 * 4 * 3 * 5 * 8)
    ours = nn.BatchNorm2d(4, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(4, dtype=torch.float64)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    ours.weight.data[:], ours.bias.data[:] = gamma, beta
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
        theirs.running_mean.copy_(torch.tensor(rng.standard_normal(4)))
        theirs.running_var.copy_(torch.tensor(rng.random(4) + 0.5))
    ours.running_mean[:] = theirs.running_mean.numpy()
    ours.running_var[:] = theirs.running_var.numpy()
    ours.frozen = frozen
    theirs.train(not frozen)
    x = 2.0 * rng.standard_normal(shape) + rng.standard_normal((1, 4, 1, 1))
    g = rng.standard_normal(shape)
    y = ours.forward(x)
    grad_x = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    close(y, yt, "output")
    close(grad_x, xt.grad, "grad input")
    close(ours.weight.grad, theirs.weight.grad, "grad gamma")
    close(ours.bias.grad, theirs.bias.grad, "grad beta")
    close(ours.running_mean, theirs.running_mean, "running mean")
    close(ours.running_var, theirs.running_var, "running var")
    # the two halves of bprop called on their own, and bprop without the input gradient
    ours.zero_grad()
    assert ours.backward(g, input_grad=False) is None
    close(ours.weight.grad, theirs.weight.grad, "grad gamma without the input gradient")
    close(ours.grad_input(g), xt.grad, "grad_input alone")


def test_float32_statistics_are_centred_not_one_pass():
    """Mean 100 and standard deviation 1: the one-pass variance E[x²] − μ² loses
    (μ/σ)² · 2⁻²⁴ ≈ 6e-4 of it in float32; the centred sum Σ (x − μ)², as torch
    computes it, stays within 1e-5 of the float64 value, and so does the output."""
    rng = np.random.default_rng(4)
    x = (100 + rng.standard_normal((32, 3, 8, 8))).astype(np.float32)
    bn = nn.BatchNorm2d(3, momentum=1.0)
    y = bn.forward(x)
    x64 = x.astype(np.float64)
    var = x64.var(axis=(0, 2, 3))
    m = x.size // 3
    np.testing.assert_allclose(bn.running_var, var * m / (m - 1), rtol=1e-5)
    expected = (x64 - x64.mean(axis=(0, 2, 3))[:, None, None]) / np.sqrt(var + 1e-5)[:, None,
                                                                                      None]
    np.testing.assert_allclose(y, expected, atol=1e-4)
