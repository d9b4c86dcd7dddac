"""PyTorch as an oracle: forward and backward of our modules vs torch autograd, in float64.

Our weights are copied into torch; the gradient fed back is a fixed random G,
so torch computes ∂(Σ G ⊙ y)/∂x and ∂(Σ G ⊙ y)/∂θ, which bprop must match to
1e-10.

Where frameworks differ: torch's ``softplus`` returns x itself for x > 20
(``threshold=20``) while ours is exact log(1 + eˣ); the inputs here stay
below that threshold.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch oracle absent (its CPU build: see README.md)")
F = torch.nn.functional

from ermlab import nn  # noqa: E402
from ermlab.backend import default_dtype  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def t(array, grad=False):
    return torch.tensor(np.asarray(array), dtype=torch.float64, requires_grad=grad)


def close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=what)


def run_ours(module, x, g):
    module.train()
    y = module.forward(x)
    module.zero_grad()
    return y, module.backward(g)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,d_in,d_out", [(1, 3, 2), (8, 5, 7)])
def test_linear_matches_torch(seed, bias, n, d_in, d_out):
    with default_dtype(np.float64):
        layer = nn.Linear(d_in, d_out, bias=bias, rng=seed)
    if bias:
        layer.bias.data[...] = normal(seed + 1, (d_out,))
    x, g = normal(seed + 2, (n, d_in)), normal(seed + 3, (n, d_out))
    y, gx = run_ours(layer, x, g)
    tx, tw = t(x, True), t(layer.weight.data, True)
    tb = t(layer.bias.data, True) if bias else None
    ty = F.linear(tx, tw, tb)
    ty.backward(t(g))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")
    close(layer.weight.grad, tw.grad, "∂L/∂W")
    if bias:
        close(layer.bias.grad, tb.grad, "∂L/∂b")


ACTIVATIONS = [
    ("sigmoid", nn.Sigmoid, torch.sigmoid),
    ("tanh", nn.Tanh, torch.tanh),
    ("relu", nn.ReLU, F.relu),
    ("leaky_relu", nn.LeakyReLU, F.leaky_relu),
    ("leaky_relu_0.3", lambda: nn.LeakyReLU(0.3), lambda x: F.leaky_relu(x, 0.3)),
    ("elu", nn.ELU, F.elu),
    ("elu_0.7", lambda: nn.ELU(0.7), lambda x: F.elu(x, alpha=0.7)),
    ("softplus", nn.Softplus, F.softplus),
    ("softmax", nn.Softmax, lambda x: F.softmax(x, dim=-1)),
    ("softmax_axis0", lambda: nn.Softmax(axis=0), lambda x: F.softmax(x, dim=0)),
    ("identity", nn.Identity, lambda x: x * 1),
]


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4)])
def test_activation_matches_torch(name, ours, theirs, seed, shape):
    x, g = normal(seed, shape, scale=4.0), normal(seed + 10, shape)
    x[0, 0] = 0.0  # the kink: both frameworks use g'(0) of the a ≤ 0 branch
    y, gx = run_ours(ours(), x, g)
    tx = t(x, True)
    ty = theirs(tx)
    ty.backward(t(g))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "softmax"])
def test_saturating_activations_match_torch_at_large_inputs(name):
    """Inputs of ±15 … ±19: no overflow, and agreement where e^{±a} is tiny."""
    ours, theirs = {a[0]: a[1:] for a in ACTIVATIONS}[name]
    x = np.array([[-19.0, -15.0, 0.5, 15.0, 19.0]])
    g = np.array([[1.0, -2.0, 0.5, 3.0, -1.0]])
    y, gx = run_ours(ours(), x, g)
    tx = t(x, True)
    ty = theirs(tx)
    ty.backward(t(g))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_maxout_matches_torch(pieces):
    with default_dtype(np.float64):
        layer = nn.Maxout(5, 4, pieces=pieces, rng=pieces)
    layer.linear.bias.data[...] = normal(9, layer.linear.bias.shape)
    x, g = normal(0, (6, 5)), normal(1, (6, 4))
    y, gx = run_ours(layer, x, g)
    tx, tw, tb = t(x, True), t(layer.linear.weight.data, True), t(layer.linear.bias.data, True)
    ty = F.linear(tx, tw, tb).view(6, 4, pieces).max(dim=2).values
    ty.backward(t(g))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")
    close(layer.linear.weight.grad, tw.grad, "∂L/∂W")
    close(layer.linear.bias.grad, tb.grad, "∂L/∂b")


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu", "leaky_relu"])
def test_mlp_matches_torch_sequential(activation):
    sizes = [6, 8, 5, 3]
    with default_dtype(np.float64):
        model = nn.mlp(sizes, activation=activation, rng=0)
    torch_act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
                 "elu": torch.nn.ELU, "leaky_relu": torch.nn.LeakyReLU}[activation]
    reference = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(6, 8), torch_act(), torch.nn.Linear(8, 5), torch_act(),
        torch.nn.Linear(5, 3),
    ).double()
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.bias.data[...] = normal(layer.out_features, layer.bias.shape, 0.1)
    state = {f"{int(k.split('.')[0]) + 1}.{k.split('.')[1]}": torch.from_numpy(v.copy())
             for k, v in model.state_dict().items()}
    reference.load_state_dict(state)  # torch's layout: the same keys up to the Flatten shift
    ours = nn.Sequential(nn.Flatten(), *model)
    x, g = normal(1, (7, 2, 3)), normal(2, (7, 3))
    y, gx = run_ours(ours, x, g)
    tx = t(x, True)
    ty = reference(tx)
    ty.backward(t(g))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")
    torch_grads = {f"{int(k.split('.')[0]) - 1}.{k.split('.')[1]}": p.grad
                   for k, p in reference.named_parameters()}
    for name, p in model.named_parameters():
        close(p.grad, torch_grads[name], name)


def test_residual_graph_matches_torch():
    """y = relu(x + W₂ relu(W₁ x + b₁) + b₂) — the Graph docstring's residual block."""
    with default_dtype(np.float64):
        g = nn.Graph(inputs="x")
        g.add("fc1", nn.Linear(8, 8, rng=0), "x").add("act1", nn.ReLU(), "fc1")
        g.add("fc2", nn.Linear(8, 8, rng=1), "act1").add("sum", nn.Add(), ["fc2", "x"])
        g.add("out", nn.ReLU(), "sum").set_output("out")
    g.fc1.bias.data[...] = normal(3, 8, 0.1)
    g.fc2.bias.data[...] = normal(4, 8, 0.1)
    x, grad = normal(5, (6, 8)), normal(6, (6, 8))
    y, gx = run_ours(g, x, grad)
    tx = t(x, True)
    params = {name: t(p.data, True) for name, p in g.named_parameters()}
    hidden = F.relu(F.linear(tx, params["fc1.weight"], params["fc1.bias"]))
    ty = F.relu(tx + F.linear(hidden, params["fc2.weight"], params["fc2.bias"]))
    ty.backward(t(grad))
    close(y, ty, "output")
    close(gx, tx.grad, "∂L/∂x")
    for name, p in g.named_parameters():
        close(p.grad, params[name].grad, name)


def test_state_dict_loads_into_torch_linear():
    """Our Linear uses torch's (out, in) layout, so the arrays transfer without transposes."""
    layer = nn.Linear(4, 3, rng=0)
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = normal(0, (5, 4)).astype(np.float32)
    np.testing.assert_allclose(layer.forward(x), reference(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-6, atol=1e-6)
