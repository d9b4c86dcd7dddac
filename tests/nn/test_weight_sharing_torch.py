"""Weight sharing against PyTorch: the same module applied at several places, float64.

torch's autograd sums the gradient of every use of a parameter; ermlab's containers
must give the same ∂L/∂θ, the same ∂L/∂x, the same batch-norm running statistics
(updated once per call) and the same optimizer trajectory.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")

from ermlab import nn, optim  # noqa: E402
from ermlab.backend import default_dtype  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def t(array, grad=False):
    return torch.tensor(np.asarray(array), dtype=torch.float64, requires_grad=grad)


def close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=what)


def torch_linear(lin):
    twin = torch.nn.Linear(lin.in_features, lin.out_features).double()
    with torch.no_grad():
        twin.weight.copy_(t(lin.weight.data))
        twin.bias.copy_(t(lin.bias.data))
    return twin


def torch_conv(conv):
    twin = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                           stride=conv.stride, padding=conv.padding).double()
    with torch.no_grad():
        twin.weight.copy_(t(conv.weight.data))
        twin.bias.copy_(t(conv.bias.data))
    return twin


def backprop(model, inputs, g):
    model.train()
    model.forward(*inputs)
    model.zero_grad()
    return model.backward(g)


def test_linear_used_twice_matches_torch():
    """The issue's example: lin = Linear(3, 3); Sequential(lin, Tanh(), lin)."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    x, g = normal(1, (4, 3)), normal(2, (4, 3))
    grad_x = backprop(nn.Sequential(lin, nn.Tanh(), lin), (x,), g)
    twin, tx = torch_linear(lin), t(x, grad=True)
    (twin(torch.tanh(twin(tx))) * t(g)).sum().backward()
    close(lin.weight.grad, twin.weight.grad, "∂L/∂W")
    close(lin.bias.grad, twin.bias.grad, "∂L/∂b")
    close(grad_x, tx.grad, "∂L/∂x")


def test_graph_box_sharing_and_nested_sharing_match_torch():
    """encoder in two boxes; lin inside two different Sequentials, one of them nested."""
    with default_dtype(np.float64):
        encoder, lin = nn.Linear(4, 3, rng=0), nn.Linear(3, 3, rng=1)
    g = nn.Graph(inputs=["a", "b"])
    g.add("ea", encoder, "a").add("eb", encoder, "b")
    g.add("left", nn.Sequential(lin, nn.Tanh()), "ea")
    g.add("right", nn.Sequential(nn.Sequential(nn.Sigmoid(), lin), nn.Tanh(), lin), "eb")
    g.add("sum", nn.Add(), ["left", "right"]).set_output("sum")
    a, b, grad = normal(1, (5, 4)), normal(2, (5, 4)), normal(3, (5, 3))
    grad_a, grad_b = backprop(g, (a, b), grad)
    te, tl = torch_linear(encoder), torch_linear(lin)
    ta, tb = t(a, grad=True), t(b, grad=True)
    left = torch.tanh(tl(te(ta)))
    right = tl(torch.tanh(tl(torch.sigmoid(te(tb)))))
    ((left + right) * t(grad)).sum().backward()
    for ours, theirs, what in ((encoder, te, "encoder"), (lin, tl, "lin")):
        close(ours.weight.grad, theirs.weight.grad, f"{what} ∂L/∂W")
        close(ours.bias.grad, theirs.bias.grad, f"{what} ∂L/∂b")
    close(grad_a, ta.grad, "∂L/∂a")
    close(grad_b, tb.grad, "∂L/∂b")


@pytest.mark.parametrize("channels,kernel,padding", [(2, 3, 1), (3, 1, 0), (16, 3, 1)])
def test_conv_used_twice_matches_torch_over_two_steps(channels, kernel, padding):
    """im2col, 1×1 and transposed-convolution paths; the second step reuses buffers."""
    with default_dtype(np.float64):
        conv = nn.Conv2d(channels, channels, kernel, padding=padding, rng=0)
    model = nn.Sequential(conv, nn.Tanh(), conv)
    twin = torch_conv(conv)
    for step in range(2):
        x, g = normal(step, (2, channels, 5, 5)), normal(10 + step, (2, channels, 5, 5))
        grad_x = backprop(model, (x,), g)
        twin.zero_grad()
        tx = t(x, grad=True)
        (twin(torch.tanh(twin(tx))) * t(g)).sum().backward()
        close(conv.weight.grad, twin.weight.grad, f"step {step} ∂L/∂W")
        close(conv.bias.grad, twin.bias.grad, f"step {step} ∂L/∂b")
        close(grad_x, tx.grad, f"step {step} ∂L/∂x")


def test_batch_norm_used_twice_matches_torch_with_its_running_statistics():
    with default_dtype(np.float64):
        norm, lin = nn.BatchNorm1d(3), nn.Linear(3, 3, rng=0)
    model = nn.Sequential(norm, lin, nn.Tanh(), norm)
    tn, tl = torch.nn.BatchNorm1d(3).double(), torch_linear(lin)
    x, g = normal(1, (6, 3)), normal(2, (6, 3))
    grad_x = backprop(model, (x,), g)
    tx = t(x, grad=True)
    (tn(torch.tanh(tl(tn(tx)))) * t(g)).sum().backward()
    close(norm.weight.grad, tn.weight.grad, "∂L/∂γ")
    close(norm.bias.grad, tn.bias.grad, "∂L/∂β")
    close(lin.weight.grad, tl.weight.grad, "∂L/∂W")
    close(grad_x, tx.grad, "∂L/∂x")
    close(norm.running_mean, tn.running_mean, "running_mean")
    close(norm.running_var, tn.running_var, "running_var")
    assert int(norm.num_batches_tracked) == int(tn.num_batches_tracked) == 2


def test_sgd_with_momentum_on_a_shared_model_follows_torch():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin = torch_linear(lin)
    topt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    x, target = normal(1, (8, 3)), normal(2, (8, 3))
    for _ in range(5):
        y = model.forward(x)
        opt.zero_grad()
        model.backward((y - target) / len(x), input_grad=False)
        opt.step()
        topt.zero_grad()
        (0.5 * ((twin(torch.tanh(twin(t(x)))) - t(target)) ** 2).sum() / len(x)).backward()
        topt.step()
    close(lin.weight.data, twin.weight, "W after 5 steps")
    close(lin.bias.data, twin.bias, "b after 5 steps")
