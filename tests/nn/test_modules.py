"""Modules: gradient checks by finite differences, the backward contract, state, modes, bad input.

Gradient checks run in float64 and require a maximum relative error
|a − n| / max(|a|, |n|, 1e-8) ≤ 1e-6 between bprop and centred differences.
The step is ε = 1e-5 rather than gradcheck's default 1e-6: the rounding error
of the difference quotient, ~u·|f|/ε, then stays below 1e-6 relative even for
gradient entries of size 1e-2, while the truncation error O(ε²) stays ~1e-10.
"""

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.gradcheck import check_module

TOL = 1e-6
EPS = 1e-5
SEEDS = [0, 1, 2]


def normal(seed, shape, margin=1e-3):
    """Standard normals kept ``margin`` away from 0 (the kink of ReLU-like activations)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


def assert_gradcheck(module, *inputs, **kwargs):
    kwargs.setdefault("eps", EPS)
    result = check_module(module, *inputs, **kwargs)
    assert result.max_rel_error <= TOL, result
    return result


# -- gradient checks ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,d_in,d_out", [(1, 1, 1), (4, 3, 5), (7, 6, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(seed, n, d_in, d_out, bias):
    with default_dtype(np.float64):
        layer = nn.Linear(d_in, d_out, bias=bias, rng=seed)
    if bias:  # a nonzero bias, so the check covers it in the forward pass too
        layer.bias.data[...] = normal(seed + 100, (d_out,))
    result = assert_gradcheck(layer, normal(seed, (n, d_in)), rng=seed)
    assert ("param:bias" in result.errors) == bias
    assert {"input", "param:weight"} <= set(result.errors)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 2, 1)])
def test_flatten_gradcheck(seed, shape):
    flatten = nn.Flatten()
    x = normal(seed, shape)
    assert flatten.forward(x).shape == (shape[0], int(np.prod(shape[1:])))
    assert_gradcheck(flatten, x, rng=seed)
    with default_dtype(np.float64):
        model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape[1:])), 3, rng=seed))
    assert_gradcheck(model, x, rng=seed)


ACTIVATION_CASES = [
    ("identity", nn.Identity),
    ("sigmoid", nn.Sigmoid),
    ("tanh", nn.Tanh),
    ("relu", nn.ReLU),
    ("leaky_relu", nn.LeakyReLU),
    ("leaky_relu_0.2", lambda: nn.LeakyReLU(0.2)),
    ("elu", nn.ELU),
    ("elu_0.5", lambda: nn.ELU(alpha=0.5)),
    ("softplus", nn.Softplus),
    ("softmax", nn.Softmax),
    ("softmax_axis0", lambda: nn.Softmax(axis=0)),
]


@pytest.mark.parametrize("name,make", ACTIVATION_CASES, ids=[c[0] for c in ACTIVATION_CASES])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(5, 4), (3, 7), (2, 3, 4)])
def test_activation_gradcheck(name, make, seed, shape):
    x = 2.0 * normal(seed, shape)
    assert_gradcheck(make(), x, rng=seed)


@pytest.mark.parametrize("pieces", [1, 2, 3])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n,d_in,d_out", [(4, 3, 2), (6, 5, 4)])
def test_maxout_gradcheck(pieces, seed, n, d_in, d_out):
    with default_dtype(np.float64):
        layer = nn.Maxout(d_in, d_out, pieces=pieces, rng=seed)
    layer.linear.bias.data[...] = 0.1 * normal(seed + 1, layer.linear.bias.shape)
    x = normal(seed, (n, d_in))
    z = layer.linear.forward(x).reshape(n, d_out, pieces)
    if pieces > 1:  # finite differences need a clear winner in every unit
        top2 = np.sort(z, axis=2)[..., -2:]
        assert np.min(top2[..., 1] - top2[..., 0]) > 1e-4
    y = layer.forward(x)
    np.testing.assert_array_equal(y, z.max(axis=2))
    assert_gradcheck(layer, x, rng=seed)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "elu", "softplus"])
@pytest.mark.parametrize("sizes", [[4, 3], [5, 6, 3], [3, 4, 4, 2]], ids=str)
def test_mlp_gradcheck(activation, sizes):
    with default_dtype(np.float64):
        model = nn.mlp(sizes, activation=activation, rng=len(sizes))
    for layer in model:
        if isinstance(layer, nn.Linear):
            layer.bias.data[...] = 0.1 * normal(7, layer.bias.shape)
    assert_gradcheck(model, normal(len(sizes), (5, sizes[0])), rng=3)


def test_sequential_with_maxout_and_softmax_gradcheck():
    with default_dtype(np.float64):
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(12, 6, rng=0), nn.Tanh(), nn.Maxout(6, 4, pieces=2, rng=1),
            nn.LeakyReLU(0.1), nn.Linear(4, 3, rng=2), nn.Softmax(),
        )
    assert_gradcheck(model, normal(0, (5, 2, 2, 3)), rng=1)


def test_empty_sequential_is_identity():
    model = nn.Sequential()
    x = normal(0, (2, 3))
    assert model.forward(x) is x
    assert model.backward(x) is x
    model.forward(x)  # (a container's forward pass serves one backward)
    assert model.backward(x, input_grad=False) is None


# -- the backward contract -----------------------------------------------------------


def contract_cases():
    with default_dtype(np.float64):
        yield "linear", nn.Linear(4, 3, rng=0), (normal(0, (5, 4)),)
        yield "maxout", nn.Maxout(4, 3, pieces=2, rng=0), (normal(1, (5, 4)),)
        yield "mlp", nn.mlp([4, 6, 5, 3], activation="tanh", rng=0), (normal(2, (5, 4)),)
        g = nn.Graph(inputs="x")
        g.add("fc1", nn.Linear(4, 4, rng=1), "x").add("act", nn.Tanh(), "fc1")
        g.add("sum", nn.Add(), ["act", "x"]).add("out", nn.Linear(4, 2, rng=2), "sum")
        yield "residual_graph", g.set_output("out"), (normal(3, (5, 4)),)
        g2 = nn.Graph(inputs=["a", "b"])
        g2.add("cat", nn.Concatenate(), ["a", "b"]).add("fc", nn.Linear(5, 2, rng=3), "cat")
        g2.add("sum", nn.Add(), ["fc", "fc_b"]).add("fc_b", nn.Linear(3, 2, rng=4), "b")
        yield "two_input_graph", g2.set_output("sum"), (normal(4, (5, 2)), normal(5, (5, 3)))


CONTRACT = list(contract_cases())


def param_grads(module):
    return {name: p.grad.copy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("name,module,inputs", CONTRACT, ids=[c[0] for c in CONTRACT])
def test_input_grad_false_returns_none_and_same_parameter_grads(name, module, inputs):
    module.train()
    y = module.forward(*inputs)
    g = normal(9, y.shape)
    module.zero_grad()
    assert module.backward(g) is not None
    full = param_grads(module)
    module.zero_grad()
    module.forward(*inputs)
    assert module.backward(g, input_grad=False) is None
    skipped = param_grads(module)
    assert full.keys() == skipped.keys() and full
    for key in full:
        np.testing.assert_allclose(skipped[key], full[key], rtol=1e-14, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("name,module,inputs", CONTRACT, ids=[c[0] for c in CONTRACT])
def test_gradients_accumulate_and_zero_grad_resets(name, module, inputs):
    module.train()
    y = module.forward(*inputs)
    g = normal(10, y.shape)
    module.zero_grad()
    module.backward(g)
    once = param_grads(module)
    module.forward(*inputs)  # a container's forward pass serves one backward
    module.backward(g)
    twice = param_grads(module)
    for key in once:
        assert np.any(once[key] != 0), key
        np.testing.assert_allclose(twice[key], 2 * once[key], rtol=1e-14, atol=1e-15,
                                   err_msg=key)
    module.zero_grad()
    for key, p in module.named_parameters():
        assert p.grad_is_zero, key
        assert not p.grad.any(), key
        assert not p.grad_is_zero, key  # handed out: the caller may write into it
    module.forward(*inputs)
    module.backward(g)  # after zero_grad, one call gives the one-call gradient again
    for key, grad in param_grads(module).items():
        np.testing.assert_array_equal(grad, once[key], err_msg=key)


def test_gradcheck_of_contract_models():
    for _, module, inputs in CONTRACT:
        assert_gradcheck(module, *inputs, rng=4)


# -- state_dict ------------------------------------------------------------------------


def test_state_dict_round_trip():
    model = nn.mlp([4, 5, 3], rng=0)
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["0.weight"][...] = 7.0  # a copy: editing it leaves the model alone
    assert not np.any(model[0].weight.data == 7.0)
    other = nn.mlp([4, 5, 3], rng=1)
    assert not np.array_equal(other[0].weight.data, model[0].weight.data)
    before = other[0].weight.data
    other.load_state_dict(model.state_dict())
    assert other[0].weight.data is before  # loaded in place
    x = normal(0, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(other.forward(x), model.forward(x))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)
        assert v1.dtype == v2.dtype == np.float32


def test_load_state_dict_keeps_dtype():
    model = nn.Linear(3, 2, rng=0)
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    target = nn.Linear(3, 2, rng=1)
    target.load_state_dict(state)
    assert target.weight.dtype == np.float32
    np.testing.assert_array_equal(target.weight.data, model.weight.data)


def test_load_state_dict_missing_key():
    model = nn.mlp([4, 5, 3], rng=0)
    state = model.state_dict()
    del state["2.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\]"):
        model.load_state_dict(state)


def test_load_state_dict_unexpected_key():
    model = nn.mlp([4, 5, 3], rng=0)
    state = model.state_dict()
    state["4.weight"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys \['4.weight'\]"):
        model.load_state_dict(state)


def test_load_state_dict_shape_mismatch():
    model = nn.mlp([4, 5, 3], rng=0)
    state = nn.mlp([4, 6, 3], rng=0).state_dict()
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(6, 4\); .* expects \(5, 4\)"):
        model.load_state_dict(state)


def test_a_failed_load_leaves_the_module_unchanged():
    """Every key and shape is checked before anything is copied: a mismatch in the last
    entry must not leave the entries before it overwritten."""
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Linear(4, 2, rng=1))
    before = model.state_dict()
    state = {k: np.full_like(v, 9.0) for k, v in before.items()}
    state["1.weight"] = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"'1.weight' has shape \(2, 5\); .* expects \(2, 4\)"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_a_value_that_is_not_an_array_is_refused_before_any_copy():
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Linear(4, 2, rng=1))
    before = model.state_dict()
    state = {k: np.full_like(v, 9.0) for k, v in before.items()}
    state["1.bias"] = [0.0, 0.0]
    with pytest.raises(TypeError, match=r"'1.bias' is a list, not an array.*numpy.asarray"):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# -- modes -------------------------------------------------------------------------------


def test_train_eval_propagate_to_every_submodule():
    g = nn.Graph(inputs="x")
    g.add("body", nn.mlp([3, 4, 3], rng=0), "x").add("sum", nn.Add(), ["body", "x"])
    g.set_output("sum")
    modules = list(g.modules())
    assert len(modules) == 6 and all(m.training for m in modules)
    assert g.eval() is g
    assert not any(m.training for m in modules)
    assert g.train() is g
    assert all(m.training for m in modules)
    g.train(False)
    assert not any(m.training for m in modules)


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(3, 2, rng=0), nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU,
    nn.Softplus, nn.Softmax, nn.Flatten, lambda: nn.Maxout(3, 2, rng=0),
    lambda: nn.mlp([3, 4, 2], rng=0),
], ids=["linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "softmax",
        "flatten", "maxout", "mlp"])
def test_backward_in_eval_mode_raises(make):
    module = make().eval()
    x = normal(0, (4, 3)).astype(np.float32)
    y = module.forward(x)
    with pytest.raises(RuntimeError, match="without a forward pass in training mode"):
        module.backward(np.ones_like(y))


def test_backward_after_eval_forward_raises_even_after_training():
    layer = nn.Linear(3, 2, rng=0)
    x = normal(0, (4, 3)).astype(np.float32)
    layer.forward(x)  # training mode: caches x
    layer.eval()
    y = layer.forward(2 * x)
    with pytest.raises(RuntimeError, match="without a forward pass in training mode"):
        layer.backward(np.ones_like(y))


def test_eval_mode_forward_matches_training_forward():
    model = nn.mlp([3, 5, 2], activation="tanh", rng=0)
    x = normal(0, (4, 3)).astype(np.float32)
    y_train = model.forward(x)
    np.testing.assert_array_equal(model.eval().forward(x), y_train)


# -- bad input --------------------------------------------------------------------------


def test_linear_wrong_feature_count_names_expected_and_got():
    layer = nn.Linear(4, 3, rng=0)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 4\); got \(2, 5\)"):
        layer.forward(np.zeros((2, 5), np.float32))


def test_linear_one_dimensional_input():
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 4\); got \(4,\)"):
        nn.Linear(4, 3, rng=0).forward(np.zeros(4, np.float32))


def test_linear_three_dimensional_input_suggests_flatten():
    with pytest.raises(ValueError, match=r"got \(2, 2, 2\) — add nn.Flatten\(\) before it"):
        nn.Linear(4, 3, rng=0).forward(np.zeros((2, 2, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32, np.float16])
def test_linear_wrong_dtype_float32_layer(dtype):
    layer = nn.Linear(4, 3, rng=0)
    with pytest.raises(ValueError, match=f"float32 parameters but got input of dtype "
                                         f"{np.dtype(dtype).name}.*astype"):
        layer.forward(np.zeros((2, 4), dtype))


def test_linear_wrong_dtype_float64_layer():
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    with pytest.raises(ValueError, match="float64 parameters but got input of dtype float32"):
        layer.forward(np.zeros((2, 4), np.float32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="positive sizes"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="at least one piece"):
        nn.Maxout(3, 2, pieces=0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.mlp([3, 2, 1], activation="swish")
    with pytest.raises(ValueError, match="at least two positive layer sizes"):
        nn.mlp([3])
    with pytest.raises(TypeError, match="argument 1 is int"):
        nn.Sequential(nn.ReLU(), 3)


def test_add_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        nn.Add().forward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least two inputs"):
        nn.Add().forward(np.zeros((2, 3)))


def test_linear_backward_values_by_hand():
    with default_dtype(np.float64):
        layer = nn.Linear(2, 2, rng=0)
    layer.weight.data[...] = [[1.0, 2.0], [3.0, 4.0]]
    layer.bias.data[...] = [0.5, -0.5]
    x = np.array([[1.0, -1.0]])
    np.testing.assert_array_equal(layer.forward(x), [[-0.5, -1.5]])
    g = np.array([[1.0, 10.0]])
    layer.zero_grad()
    np.testing.assert_array_equal(layer.backward(g), [[31.0, 42.0]])
    np.testing.assert_array_equal(layer.weight.grad, [[1.0, -1.0], [10.0, -10.0]])
    np.testing.assert_array_equal(layer.bias.grad, [1.0, 10.0])


def test_attributes_register_and_unregister_parameters_and_submodules():
    """Assigning a Parameter or a Module registers it; assigning anything else to its name
    unregisters it; plain values (a forward cache) are not registered."""

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.ones(2, np.float32))
            self.inner = nn.Linear(2, 2)
            self.cache = np.zeros(3)

    holder = Holder()
    assert holder.weight.name == "weight"
    assert len(holder.parameters()) == 3 and holder._modules == {"inner": holder.inner}
    holder.cache = np.ones(3)
    assert "cache" not in holder._parameters and "cache" not in holder._modules
    holder.weight = np.zeros(2)  # a plain array now: no longer a parameter
    holder.inner = None
    assert holder.parameters() == [] and holder._modules == {}
    holder.cache = nn.Parameter(np.ones(1, np.float32))  # a cache name made a parameter
    assert holder.parameters() == [holder.cache] and holder.cache.name == "cache"


def test_a_module_that_skips_the_base_init_is_told_so():
    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.ones(2, np.float32))

    with pytest.raises(RuntimeError, match=r"must call super\(\).__init__\(\)"):
        Forgetful()
