"""FractionalMaxPool2d(kernel_size=k) against torch.nn.functional.fractional_max_pool2d given
the same ``_random_samples``: forward and backward, float64 and float32."""

import numpy as np
import pytest

from ermlab.nn import FractionalMaxPool2d

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k, alpha, hw", [(2, 1.414, (11, 10)), (3, 1.5, (16, 9)),
                                          (2, 1.9, (28, 28)), (1, 1.2, (7, 12))])
def test_forward_and_backward_equal_torch(dtype, k, alpha, hw):
    rng = np.random.default_rng(hash((k, hw)) % 2**32)
    x = rng.normal(size=(3, 4, *hw)).astype(dtype)
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum wins in both
    samples = rng.random((3, 4, 2)).astype(dtype)
    pool = FractionalMaxPool2d(alpha, kernel_size=k).freeze_mask(samples)
    y = pool.forward(x)
    out = tuple(int(s / alpha) for s in hw)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.fractional_max_pool2d(xt, k, output_size=out,
                                                   _random_samples=torch.tensor(samples))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    g = rng.normal(size=y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    tol = 0 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(pool.backward(g), xt.grad.numpy(), rtol=tol, atol=tol)
