"""Shared by the tests of Conv2d's algorithms (``test_winograd``, ``test_direct``): layers and
data from a case, one training pass, and the passes one at a time against im2col.

A case is (N, C, O, H, W, padding[, kernel, dilation, stride]); kernel 3, dilation 1 and
stride 1 when left out."""

import numpy as np

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.nn import conv as conv_module


def geometry(case):
    """(N, C, O, H, W, padding, kernel, dilation, stride) of ``case``."""
    return tuple(case) + (3, 1, 1)[len(case) - 6:]


def output_shape(case):
    n, _, o, h, w, p, k, d, s = geometry(case)
    (ph, pw), (kh, kw), (dh, dw) = (pair if isinstance(pair, tuple) else (pair, pair)
                                    for pair in (p, k, d))
    return (n, o, (h + 2 * ph - dh * (kh - 1) - 1) // s + 1,
            (w + 2 * pw - dw * (kw - 1) - 1) // s + 1)


def build(case, algorithm, dtype=np.float64, threads=1, bias=True):
    _, c, o, _, _, p, k, d, s = geometry(case)
    with default_dtype(dtype):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, rng=0, threads=threads,
                         algorithm=algorithm, bias=bias)
    if bias:
        conv.bias.data[...] = np.random.default_rng(1).standard_normal(o).astype(dtype)
    return conv


def data(case, dtype=np.float64, seed=2):
    n, c, _, h, w = case[:5]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    g = rng.standard_normal(output_shape(case)).astype(dtype)
    return x, g


def fprop_bprop(conv, x, g):
    """y, ∂L/∂x, ∂L/∂W and ∂L/∂b of one training pass."""
    conv.train()
    y = conv.forward(x)
    conv.zero_grad()
    gx = conv.backward(g)
    return y, gx, conv.weight.grad.copy(), None if conv.bias is None else conv.bias.grad.copy()


def check_passes_against_im2col(case, algorithm):
    """Without a bias: forward, a weight-only backward (None back), ``accumulate_grad``
    adding to it, and ``grad_input`` equal im2col's in float64."""
    x, g = data(case)
    conv, reference = build(case, algorithm, bias=False), build(case, "im2col", bias=False)
    for module in (conv, reference):
        module.train()
        module.forward(x)
        module.zero_grad()
    np.testing.assert_allclose(conv.forward(x), reference.forward(x), rtol=1e-12, atol=1e-12)
    assert conv.backward(g, input_grad=False) is None
    conv.accumulate_grad(g)
    reference.accumulate_grad(g)
    reference.accumulate_grad(g)
    np.testing.assert_allclose(conv.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.grad_input(g), reference.grad_input(g), rtol=1e-12,
                               atol=1e-12)


def check_three_lanes_equal_one(case, algorithm, monkeypatch, small_blocks):
    """7 samples: one lane, then (``small_blocks()`` having made the algorithm's blocks or
    chunks as small as they go) three lanes give y and ∂L/∂x bit for bit (each sample's
    arithmetic is the same), ∂L/∂W up to the order of its sum over lanes; a second backward
    pass adds."""
    x, g = data(case)
    assert x.shape[0] == 7
    y1, gx1, gw1, gb1 = fprop_bprop(build(case, algorithm, threads=1), x, g)
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    small_blocks()
    three = build(case, algorithm, threads=3)
    assert len(three._lanes(np, x.shape)) == 3
    y3, gx3, gw3, gb3 = fprop_bprop(three, x, g)
    np.testing.assert_array_equal(y3, y1)
    np.testing.assert_array_equal(gx3, gx1)
    np.testing.assert_allclose(gw3, gw1, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(gb3, gb1)
    three.backward(2 * g)
    np.testing.assert_allclose(three.weight.grad, 3 * gw1, rtol=1e-13, atol=1e-13)


def check_against_torch(case, algorithm, dtype):
    """y, ∂L/∂x, ∂L/∂W and ∂L/∂b of one pass against torch's conv2d, within float32 or
    float64 tolerances."""
    import pytest

    torch = pytest.importorskip("torch", reason="torch oracle: pip install torch==2.13.0 (CPU)")
    _, _, _, _, _, p, _, d, s = geometry(case)
    x, g = data(case, dtype)
    conv = build(case, algorithm, dtype)
    y, gx, gw, gb = fprop_bprop(conv, x, g)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.weight.data, requires_grad=True)
    tb = torch.tensor(conv.bias.data, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=p, dilation=d, stride=s)
    ty.backward(torch.tensor(g))
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(gw, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(gb, tb.grad.numpy(), **tol)


def window_sums(x, weight, g, stride=1, padding=0, groups=1):
    """(y without bias, ∂L/∂x, ∂L/∂W) of a square-kernel convolution by its windows' sums in
    float64, an oracle that shares no code with Conv2d: for each kernel offset (i, j),

        y[n, o, p, q]  += Σ_c W[o, c, i, j] x̃[n, c, S p + i, S q + j]
        ∂x̃[n, c, S p + i, S q + j] += Σ_o W[o, c, i, j] G[n, o, p, q]
        ∂W[o, c, i, j]  = Σ_{n,p,q} G[n, o, p, q] x̃[n, c, S p + i, S q + j]

    within each group, x̃ being x zero-padded by ``padding``."""
    x, weight, g = (np.asarray(a, dtype=np.float64) for a in (x, weight, g))
    h, w = x.shape[2:]
    o, cg, kernel = weight.shape[0], weight.shape[1], weight.shape[2]
    oh, ow = g.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    grad_x, grad_w, y = np.zeros_like(padded), np.zeros(weight.shape), np.zeros(g.shape)
    og = o // groups
    for k in range(groups):
        outputs, inputs = slice(k * og, (k + 1) * og), slice(k * cg, (k + 1) * cg)
        for i in range(kernel):
            for j in range(kernel):
                at = (slice(None), inputs, slice(i, i + stride * oh, stride),
                      slice(j, j + stride * ow, stride))
                w_ij, g_k = weight[outputs, :, i, j], g[:, outputs]
                y[:, outputs] += np.einsum("oc,ncpq->nopq", w_ij, padded[at])
                grad_x[at] += np.einsum("oc,nopq->ncpq", w_ij, g_k)
                grad_w[outputs, :, i, j] = np.einsum("nopq,ncpq->oc", g_k, padded[at])
    return y, grad_x[:, :, padding:padding + h, padding:padding + w], grad_w
