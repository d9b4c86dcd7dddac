"""Conv2d's lanes of samples (threads): the results of one lane (float64; ∂L/∂W up to the
order of its sum), the thread count honoured, and no lane writing into another's samples;
2×2 max pooling's lanes bit for bit."""

import threading

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.nn import conv as conv_module

# (C, H, W, O, kernel, stride, padding, dilation, groups[, algorithm]): full width with
# padding, strided layout, no padding (col2im's runs end at the plane), groups, stride 2,
# ≥ 16 channels (∂L/∂x as a transposed convolution), 1×1 (the batched-GEMM path) with stride
# 1 and 2; one output channel a group (a depthwise layer on im2col, and a one-channel head):
# a lane's one-sample blocks summed ∂L/∂W into a view of their reused work array, which the
# next block overwrote; 1×1 on few positions (one GEMM over the samples, in lanes of rows)
# with one output or one input channel: fewer rows than lanes, an IndexError.
CASES = [
    (3, 7, 6, 4, 3, 1, 1, 1, 1),
    (4, 6, 7, 8, 3, 1, 1, 1, 2),
    (2, 7, 7, 3, (3, 2), 1, 0, (1, 2), 1),
    (4, 9, 8, 4, 3, 2, 1, 1, 1),
    (16, 5, 6, 4, 3, 1, 1, 1, 1),
    (4, 5, 6, 6, 1, 1, 0, 1, 1),
    (3, 7, 6, 5, 1, 2, 0, 1, 1),
    (4, 6, 7, 4, 3, 1, 1, 1, 4, "im2col"),
    (3, 5, 6, 1, 3, 1, 1, 1, 1),
    (4, 3, 3, 1, 1, 1, 0, 1, 1),
    (1, 2, 3, 5, 1, 1, 0, 1, 1),
]


def build(case, threads):
    c, h, w, o, k, s, p, d, groups, *algorithm = case
    with default_dtype(np.float64):
        conv = nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=groups, rng=0,
                         threads=threads, algorithm=algorithm[0] if algorithm else "auto")
    conv.bias.data[...] = np.random.default_rng(1).standard_normal(o)
    return conv


def run(conv, x, g, input_grad):
    """y, ∂L/∂x and ∂L/∂θ after two backward passes (the second accumulates)."""
    y = conv.forward(x)
    conv.zero_grad()
    gx = conv.backward(g, input_grad=input_grad)
    conv.backward(2 * g, input_grad=input_grad)
    return y, gx, conv.weight.grad.copy(), conv.bias.grad.copy()


@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_three_lanes_give_one_lanes_results(case, shifted, monkeypatch):
    """Blocks of one sample, 7 samples in 3 lanes of 2, 2 and 3 samples."""
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    monkeypatch.setattr(conv_module, "FORWARD_BLOCK_BYTES", 1)
    monkeypatch.setattr(conv_module, "BLOCK_BYTES", 1)
    if shifted:  # K_w shifted copies for the weight gradient, whatever the sizes
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_CHANNELS", 0)
        monkeypatch.setattr(conv_module, "ROW_SPLIT_MIN_COLUMNS", 0)
    c, h, w = case[:3]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, c, h, w))
    one, three = build(case, 1), build(case, 3)
    assert len(three._lanes(np, x.shape)) == 3 and len(one._lanes(np, x.shape)) == 1
    g = rng.standard_normal(one.forward(x).shape)
    for input_grad in (True, False):
        expected, got = run(one, x, g, input_grad), run(three, x, g, input_grad)
        for name, a, b in zip(("y", "∂L/∂x", "∂L/∂W", "∂L/∂b"), expected, got):
            if a is None:
                assert b is None, name
                continue
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12, err_msg=name)


class Recorder:
    """The threads that ran a Conv2d method, each waiting until ``lanes`` calls run at once
    (a lane that ran after another on the same thread would time out)."""

    def __init__(self, monkeypatch, name, lanes):
        self.threads = set()
        barrier = threading.Barrier(lanes, timeout=10)
        method = getattr(nn.Conv2d, name)

        def wrapped(conv, *args, **kwargs):
            barrier.wait()
            self.threads.add(threading.get_ident())
            return method(conv, *args, **kwargs)

        monkeypatch.setattr(nn.Conv2d, name, wrapped)


@pytest.mark.parametrize("threads,env,expected", [
    (1, None, 1), (3, None, 3), (None, "1", 1), (None, "2", 2), (2, "1", 2)])
def test_the_thread_count_is_honoured(threads, env, expected, monkeypatch):
    """``threads`` on the layer, else ``ERMLAB_NUM_THREADS``: that many threads run the
    forward and the backward blocks at once; with one, only the calling thread."""
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    if env is None:
        monkeypatch.delenv("ERMLAB_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("ERMLAB_NUM_THREADS", env)
    forward = Recorder(monkeypatch, "_forward_samples", expected)
    backward = Recorder(monkeypatch, "_backward_samples", expected)
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=0, threads=threads, algorithm="im2col")
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    conv.backward(np.ones_like(conv.forward(x)))
    assert len(forward.threads) == len(backward.threads) == expected
    assert threading.get_ident() in forward.threads


def test_small_layers_stay_in_one_lane():
    """Below ``LANE_MIN_FLOPS`` multiply-adds per lane the hand-off would cost more."""
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=0, threads=2)
    per_sample = 4 * 3 * 9 * 8 * 8
    small = conv_module.LANE_MIN_FLOPS // per_sample
    assert conv._lanes(np, (small, 3, 8, 8)) == [(0, small)]
    assert conv._lanes(np, (4 * small, 3, 8, 8)) == [(0, 2 * small), (2 * small, 4 * small)]


def test_pointwise_convolutions_run_in_lanes(monkeypatch):
    """A 1×1 convolution's batched GEMMs run in lanes of samples like the other paths' (with
    BLAS on one thread): forward, ∂L/∂W and ∂L/∂x one parallel region each, the results
    those of one lane (∂L/∂W summed over the samples in one place, in the same order)."""
    regions = []
    real = conv_module.run_lanes
    monkeypatch.setattr(conv_module, "run_lanes", lambda calls, blas=True: regions.append(
                        (len(calls), blas)) or real(calls, blas))
    monkeypatch.setattr(conv_module, "LANE_MIN_FLOPS", 1)
    case = (4, 5, 6, 6, 1, 2, 0, 1, 1)
    x = np.random.default_rng(3).standard_normal((6, 4, 5, 6))
    one, two = build(case, 1), build(case, 2)
    g = np.random.default_rng(4).standard_normal(one.forward(x).shape)
    expected = run(one, x, g, True)
    regions.clear()
    got = run(two, x, g, True)
    assert regions == [(2, True)] * 5  # forward, then (∂L/∂W, ∂L/∂x) twice
    for name, a, b in zip(("y", "∂L/∂x", "∂L/∂W", "∂L/∂b"), expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("batch,threads,one", [(4, 2, True), (1, 2, False), (4, 1, False),
                                               (400, 2, True)])
def test_one_lane_of_a_small_layer_runs_blas_on_one_thread(batch, threads, one, monkeypatch):
    """A batch too small for two lanes runs its GEMMs with BLAS on one thread (OpenBLAS's
    second thread would spin on a core after them, in the way of the next layers' lanes);
    one sample, or one thread asked for, leaves BLAS's own thread count alone. Two lanes
    (batch 400 here) run with BLAS on one thread as before."""
    from threadpoolctl import threadpool_limits

    from ermlab.threads import _blas

    libraries = _blas()
    if not libraries:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        if max(lib.get_num_threads() for lib in libraries) != 2:
            pytest.skip("BLAS here runs on one thread only")
    seen = []
    real = nn.Conv2d._forward_samples

    def recording(conv, *args, **kwargs):
        seen.append(max(lib.get_num_threads() for lib in libraries))
        return real(conv, *args, **kwargs)

    monkeypatch.setattr(nn.Conv2d, "_forward_samples", recording)
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=0, threads=threads, algorithm="im2col")
    x = np.random.default_rng(0).standard_normal((batch, 3, 16, 16)).astype(np.float32)
    with threadpool_limits(limits=2, user_api="blas"):
        conv.forward(x)
        after = max(lib.get_num_threads() for lib in libraries)
    assert seen and (set(seen) == {1}) is one
    assert after == 2  # restored after the layer
    assert len(conv._lanes(np, x.shape)) == (2 if batch == 400 else 1)


@pytest.mark.parametrize("padding", [0, 1])
def test_full_width_col2im_adds_only_into_its_own_samples(padding):
    """A lane's col2im on samples [1, 2) of 3 leaves samples 0 and 2 untouched, even with
    nonzero values in the columns that full width throws away: a run reaching past its
    plane would race with the lane that owns the next sample."""
    conv = nn.Conv2d(2, 3, 3, padding=padding, rng=0)
    shape = (3, 2, 6, 6)
    hp, wp, oh, ow, cw = conv._layout(shape)
    assert cw == wp != ow
    grad = np.zeros(3 * 2 * hp * wp + 2)
    d_cols = np.ones((1, 1, 2 * 9, oh * cw))
    conv._col2im(np, d_cols, grad, 1, 2, shape)
    planes = grad[: 3 * 2 * hp * wp].reshape(3, 2, hp, wp)
    assert not planes[0].any() and not planes[2].any() and not grad[3 * 2 * hp * wp:].any()
    assert planes[1].any()


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_raise(threads):
    with pytest.raises((ValueError, TypeError), match="threads"):
        nn.Conv2d(1, 1, 3, threads=threads)


def test_max_pool_lanes_give_one_lanes_results_bit_for_bit(monkeypatch):
    """2×2 pooling in 3 lanes of samples: the same maxima, ties and gradients (integer
    values make many ties)."""
    from ermlab.nn import pooling

    monkeypatch.setattr(pooling, "LANE_MIN_BYTES", 1)
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (7, 3, 6, 8)).astype(np.float32)
    g = rng.standard_normal((7, 3, 3, 4)).astype(np.float32)
    one, three = nn.MaxPool2d(2), nn.MaxPool2d(2)
    one.threads, three.threads = 1, 3
    assert len(three._lanes(x)) == 3 and len(one._lanes(x)) == 1
    y1, y3 = one.forward(x), three.forward(x)
    np.testing.assert_array_equal(y3, y1)
    np.testing.assert_array_equal(three.backward(g), one.backward(g))
    expected = torch_max_pool_grad(x, g)
    if expected is not None:
        np.testing.assert_array_equal(three.backward(g), expected)


def torch_max_pool_grad(x, g):
    """torch's ∂L/∂x of 2×2 max pooling (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2).backward(torch.tensor(g))
    return tx.grad.numpy()
