"""The compiled convolution kernels read and write only inside their buffers.

Numba does not check indices unless asked, so a buffer one slack short reads past its end
silently (and ``_direct``'s runs of positions deliberately run past each row, into slack
sized for them, see ``_direct.VECTOR``). Here a child process runs the direct and Winograd
layers of ``test_direct``'s and ``test_winograd``'s geometries in float32 and float64,
forward and backward, with ``NUMBA_BOUNDSCHECK=1`` (an out-of-range index raises
IndexError) and a cache of its own, and compares them with im2col."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba", reason="the direct and Winograd kernels need Numba")

SCRIPT = textwrap.dedent("""
    import numpy as np
    from numba.core import config
    assert config.BOUNDSCHECK, "NUMBA_BOUNDSCHECK did not reach the child"
    from ermlab import nn
    # (C, O, H, W, padding, kernel, stride): LeNet-5's C3 and its 140-position runs, a
    # 252-position transposed convolution (C3's ∂L/∂x), odd sizes, strides 2 and 3, 3×3
    # nine taps, outputs not a multiple of four; and two Winograd layers
    direct = [(6, 16, 14, 14, 0, 5, 1), (16, 6, 10, 10, 4, 5, 1), (3, 5, 9, 7, 1, 3, 1),
              (4, 6, 10, 7, 2, 5, 2), (3, 4, 10, 11, 1, 3, 3), (16, 16, 9, 9, 1, 3, 1),
              (1, 6, 13, 13, 2, 5, 1), (2, 3, 5, 6, 1, 1, 1)]
    winograd = [(16, 16, 9, 7, 1, 3, 1), (8, 12, 6, 6, 0, 3, 1)]
    rng = np.random.default_rng(0)
    for algorithm, cases in (("direct", direct), ("winograd", winograd)):
        for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-10)):
            for c, o, h, w, p, k, s in cases:
                x = rng.standard_normal((3, c, h, w)).astype(dtype)
                results = []
                for name in (algorithm, "im2col"):
                    conv = nn.Conv2d(c, o, k, stride=s, padding=p, rng=1, dtype=dtype,
                                     algorithm=name, threads=2)
                    y = conv.forward(x)
                    g = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
                    results.append((y, conv.backward(g), conv.weight.grad.copy()))
                for ours, reference in zip(*results):
                    scale = max(1.0, float(np.abs(reference).max()))
                    assert np.abs(ours - reference).max() <= tol * scale, (algorithm, c, o)
    print("in bounds")
""")


def test_direct_and_winograd_kernels_stay_inside_their_buffers(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               ERMLAB_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "in bounds"
