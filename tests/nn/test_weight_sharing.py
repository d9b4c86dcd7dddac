"""Weight sharing: one module called at several places, each call site with its own cache.

The oracles are centred finite differences (float64) and the same network built from
separate modules that hold the same values; the PyTorch comparisons are in
test_weight_sharing_torch.py. See ``ermlab.nn.module`` for the forward-cache contract.
"""

import weakref

import numpy as np
import pytest

from ermlab import nn, optim
from ermlab.backend import default_dtype
from ermlab.data.transforms import Augment
from ermlab.gradcheck import check_module
from ermlab.nn import blocks, stochastic
from ermlab.nn.module import Module

EPS, TOL = 1e-5, 1e-6  # see tests/nn/test_modules.py for the choice of ε


def normal(seed, shape, margin=1e-3):
    """Standard normals kept ``margin`` away from 0 (the kink of ReLU-like activations)."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


def assert_gradcheck(module, *inputs):
    result = check_module(module, *inputs, eps=EPS)
    assert result.max_rel_error <= TOL, result


def grads(module):
    return {name: p.grad.copy() for name, p in module.named_parameters()}


# -- the example, and sharing in every container -------------------------------


def test_linear_used_twice_in_a_sequential_passes_the_gradient_check():
    """y = W tanh(W x + b) + b: ∂L/∂W is the sum of both uses (was off by ~100 %)."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    assert_gradcheck(nn.Sequential(lin, nn.Tanh(), lin), normal(1, (4, 3)))


def test_shared_weight_gradient_is_the_sum_over_call_sites_by_hand():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    x, g = normal(1, (4, 3)), normal(2, (4, 3))
    model.forward(x)
    model.zero_grad()
    grad_x = model.backward(g)
    w, b = lin.weight.data, lin.bias.data
    h = np.tanh(x @ w.T + b)
    g_a = (g @ w) * (1 - h ** 2)                       # ∂L/∂(first pre-activation)
    np.testing.assert_allclose(lin.weight.grad, g.T @ h + g_a.T @ x, rtol=1e-13)
    np.testing.assert_allclose(lin.bias.grad, g.sum(0) + g_a.sum(0), rtol=1e-13)
    np.testing.assert_allclose(grad_x, g_a @ w, rtol=1e-13)


def test_graph_with_one_module_in_two_boxes_passes_the_gradient_check():
    """A siamese net: one encoder on both inputs, then a head on the concatenation."""
    with default_dtype(np.float64):
        encoder, head = nn.Linear(4, 3, rng=0), nn.Linear(6, 2, rng=1)
    g = nn.Graph(inputs=["a", "b"])
    g.add("ea", encoder, "a").add("eb", encoder, "b").add("ta", nn.Tanh(), "ea")
    g.add("cat", nn.Concatenate(), ["ta", "eb"]).add("head", head, "cat").set_output("head")
    assert [name for name, _ in g.named_parameters()] == [
        "ea.weight", "ea.bias", "head.weight", "head.bias"]
    assert_gradcheck(g, normal(1, (5, 4)), normal(2, (5, 4)))


def test_module_shared_by_two_nested_containers_passes_the_gradient_check():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    g = nn.Graph(inputs=["a", "b"])
    g.add("left", nn.Sequential(lin, nn.Tanh()), "a")
    g.add("right", nn.Sequential(nn.Sigmoid(), lin, nn.Tanh()), "b")
    g.add("sum", nn.Add(), ["left", "right"]).set_output("sum")
    assert_gradcheck(g, normal(1, (4, 3)), normal(2, (4, 3)))


def test_shared_container_holding_a_shared_module_passes_the_gradient_check():
    """Sharing nested two deep: inner = (W, tanh, W) used twice → W used four times."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    inner = nn.Sequential(lin, nn.Tanh(), lin)
    assert_gradcheck(nn.Sequential(inner, nn.Sigmoid(), inner), normal(1, (4, 3)))


def test_shared_conv_and_shared_block_without_batch_norm_pass_the_gradient_check():
    with default_dtype(np.float64):
        conv = nn.Conv2d(2, 2, 3, padding=1, rng=0)
        branch = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, rng=1), nn.Tanh(),
                               nn.Conv2d(2, 2, 1, rng=2))
        block = nn.residual_block(branch)
        inception = blocks.InceptionModule(2, 1, 1, 1, 1, 1, 1, batch_norm=False, rng=3)
        head = nn.Conv2d(4, 2, 1, rng=4)
    for i, p in enumerate(inception.parameters()):  # biases off 0: no ReLU input sits at 0
        if p.name == "bias":
            p.data[...] = 0.5 + 0.1 * i
    assert_gradcheck(nn.Sequential(conv, nn.Tanh(), conv), normal(1, (2, 2, 4, 4)))
    assert_gradcheck(nn.Sequential(block, nn.Tanh(), block), normal(2, (2, 2, 4, 4)))
    twice = nn.Sequential(inception, head, nn.Tanh(), inception)
    assert_gradcheck(twice, normal(3, (2, 2, 4, 4)))


def test_shared_maxout_and_stochastic_depth_pass_the_gradient_check():
    with default_dtype(np.float64):
        maxout = nn.Maxout(3, 3, pieces=2, rng=0)
        depth = nn.StochasticDepth(nn.Sequential(nn.Linear(3, 3, rng=1), nn.Tanh()), 0.5,
                                   mode="row", rng=2)
    assert_gradcheck(nn.Sequential(maxout, nn.Tanh(), maxout), normal(1, (4, 3)))
    model = nn.Sequential(depth, nn.Sigmoid(), depth)
    with stochastic.frozen_masks(model):
        depth.freeze_mask(np.array([True, False, True, True]))
        assert_gradcheck(model, normal(2, (4, 3)))


def test_an_activation_instance_given_to_a_builder_serves_every_layer():
    """mlp(..., activation=nn.Tanh()) puts that one Tanh after each hidden layer."""
    with default_dtype(np.float64):
        shared = nn.mlp([4, 5, 5, 3], activation=nn.Tanh(), rng=0)
        named = nn.mlp([4, 5, 5, 3], activation="tanh", rng=0)
    assert shared[1] is shared[3]
    x, g = normal(1, (6, 4)), normal(2, (6, 3))
    for model in (shared, named):
        model.forward(x)
        model.zero_grad()
        model.backward(g)
    for (name, ours), (_, theirs) in zip(shared.named_parameters(), named.named_parameters(),
                                         strict=True):
        np.testing.assert_array_equal(ours.grad, theirs.grad, err_msg=name)
    assert_gradcheck(shared, x)


def test_shared_dropout_draws_and_keeps_one_mask_per_call_site():
    """Shared Dropout == two Dropouts drawing the same masks from one generator."""
    x, g = normal(1, (6, 5)), normal(2, (6, 5))
    results = []
    for shared in (True, False):
        with default_dtype(np.float64):
            lin = nn.Linear(5, 5, rng=0)
        generator = np.random.default_rng(7)
        first = nn.Dropout(0.5, rng=generator)
        second = first if shared else nn.Dropout(0.5, rng=generator)
        model = nn.Sequential(first, lin, nn.Tanh(), second)
        y = model.forward(x)
        model.zero_grad()
        results.append((y, model.backward(g), lin.weight.grad.copy()))
    (y_shared, gx_shared, gw_shared), (y_apart, gx_apart, gw_apart) = results
    np.testing.assert_array_equal(y_shared, y_apart)
    np.testing.assert_array_equal(gx_shared, gx_apart)
    np.testing.assert_array_equal(gw_shared, gw_apart)
    assert np.any(gx_shared != 0) and np.any(gx_shared == 0)


def test_shared_parameters_are_listed_once():
    lin, norm = nn.Linear(3, 3, rng=0), nn.BatchNorm1d(3)
    model = nn.Sequential(lin, norm, nn.Tanh(), lin, norm)
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias"]
    assert model.num_parameters() == 12 + 3 + 3
    assert [name for name, _ in model.named_modules()] == ["", "0", "1", "2"]
    assert sorted(model.state_dict()) == sorted([
        "0.weight", "0.bias", "1.weight", "1.bias",
        "1.running_mean", "1.running_var", "1.num_batches_tracked"])
    state = model.state_dict()
    model.load_state_dict(state)


def test_an_optimizer_step_on_a_shared_model_equals_the_step_on_its_unrolled_twin():
    """Twin: separate Linear layers whose parameters are the same Parameter objects."""
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
        twin_a = nn.Linear(3, 3, rng=0)
    twin_b = nn.Linear(3, 3)
    twin_b.weight, twin_b.bias = twin_a.weight, twin_a.bias
    shared = nn.Sequential(lin, nn.Tanh(), lin)
    twin = nn.Sequential(twin_a, nn.Tanh(), twin_b)
    x, target = normal(1, (8, 3)), normal(2, (8, 3))
    for model in (shared, twin):
        opt = optim.Adam(model.parameters(), lr=0.05)
        assert len(model.parameters()) == 2
        for _ in range(5):
            y = model.forward(x)
            opt.zero_grad()
            model.backward((y - target) / len(x), input_grad=False)
            opt.step()
    np.testing.assert_allclose(lin.weight.data, twin_a.weight.data, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(lin.bias.data, twin_a.bias.data, rtol=1e-13, atol=1e-15)
    assert not np.allclose(lin.weight.data, nn.Linear(3, 3, rng=0).weight.data)


def test_a_forward_without_backward_leaves_nothing_behind():
    with default_dtype(np.float64):
        lin = nn.Linear(3, 3, rng=0)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    x1, x2, g = normal(1, (4, 3)), normal(2, (4, 3)), normal(3, (4, 3))
    model.forward(x2)
    model.zero_grad()
    expected = model.backward(g), grads(model)
    model.forward(x1)
    model.forward(x2)
    model.zero_grad()
    got = model.backward(g), grads(model)
    np.testing.assert_array_equal(got[0], expected[0])
    for key in expected[1]:
        np.testing.assert_array_equal(got[1][key], expected[1][key])


class _Probe(Module):
    """Identity that records, as its forward and its bprop run, which of ``watched`` (weak
    references to arrays) are still alive."""

    def __init__(self):
        super().__init__()
        self.watched, self.alive = [], []

    def _look(self):
        self.alive.append([ref() is not None for ref in self.watched])

    def forward(self, x):
        self._look()
        return x

    def grad_input(self, grad_out):
        self._look()
        return grad_out


def _probed(container, first, second, probe, last):
    """first → Tanh → second in ``container``, ``probe`` after them (``last``) or before."""
    boxes = [first, nn.Tanh(), second]
    boxes = boxes + [probe] if last else [probe] + boxes
    if container == "sequential":
        return nn.Sequential(*boxes)
    if container == "graph":
        model = nn.Graph(inputs="x")
        source = "x"
        for index, box in enumerate(boxes):
            model.add(f"b{index}", box, source)
            source = f"b{index}"
        return model.set_output(source)
    # the leaf that holds the Tanh's output, second, is StochasticDepth's branch
    return nn.Sequential(*boxes[:-2 if last else -1],
                         stochastic.StochasticDepth(second, survival_prob=1.0),
                         *([probe] if last else []))


def _twin_gradient(x, g):
    twin = nn.Sequential(nn.Linear(3, 5, rng=0), nn.Tanh(), nn.Linear(5, 4, rng=1))
    twin.forward(x)
    twin.backward(g)
    return twin[0].weight.grad


CONTAINERS = ["sequential", "graph", "stochastic_depth"]


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_training_forward_lets_the_last_passes_caches_go_as_it_runs(container):
    """A forward pass after one that no backward followed does not hold the first pass's
    caches: by the time it reaches its last box, the first pass's cached arrays of the
    boxes before are gone (each container drops its snapshots as it starts; they used to
    stay until its end, both passes' caches held at once)."""
    first, second, probe = nn.Linear(3, 5, rng=0), nn.Linear(5, 4, rng=1), _Probe()
    model = _probed(container, first, second, probe, last=True)
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    g = np.ones((6, 4), dtype=np.float32)
    model.forward(x)
    probe.watched = [weakref.ref(second._x)]  # the Tanh's output of the first pass
    model.forward(x + 1)
    assert probe.alive[-1] == [False]
    model.zero_grad()
    model.backward(g)  # the second pass's caches are all there
    np.testing.assert_array_equal(first.weight.grad, _twin_gradient(x + 1, g))


@pytest.mark.parametrize("container", CONTAINERS)
def test_bprop_lets_each_box_s_cache_go_once_its_bprop_is_done(container):
    """A container's bprop lets each box's cache go once that box's bprop is done (its
    snapshot and the box's binding), as PyTorch frees a node's saved tensors: when the
    first box's bprop runs, the cached output of the Tanh, which the boxes after it held,
    is gone (kept, the whole forward cache stayed until the next step: the CIFAR ResNet-18
    at batch 128 peaked 143 MiB higher, the small VGG at 1024 ~150). A second backward
    after one forward is then a clear error; a forward before each backward accumulates."""
    first, second, probe = nn.Linear(3, 5, rng=0), nn.Linear(5, 4, rng=1), _Probe()
    model = _probed(container, first, second, probe, last=False)
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    g = np.ones((6, 4), dtype=np.float32)
    model.forward(x)
    probe.watched = [weakref.ref(second._x)]
    model.zero_grad()
    model.backward(g)
    assert probe.alive == [[], [False]]  # in forward (nothing watched yet), then in bprop
    np.testing.assert_array_equal(first.weight.grad, _twin_gradient(x, g))
    with pytest.raises(RuntimeError, match="or a second time after one"):
        model.backward(g)
    model.forward(x)
    model.backward(g)
    np.testing.assert_array_equal(first.weight.grad, 2 * _twin_gradient(x, g))


def test_reading_an_undeclared_cache_entry_is_a_clear_error():
    class Square(Module):
        def forward(self, x):
            self._x = x
            return x * x

        def grad_input(self, grad_out):
            return 2 * self._cached("_x") * grad_out

    layer = Square()
    layer.forward(np.ones(2))
    with pytest.raises(TypeError, match=r"reads '_x' .* Square.forward_cache; add it"):
        layer.backward(np.ones(2))


# -- every module: cache_state() holds everything its backward needs -------------------


def module_cases():
    """(name, module, input shapes) for every kind of module in ermlab.nn."""
    with default_dtype(np.float64):
        yield "Linear", nn.Linear(4, 3, rng=0), [(5, 4)]
        yield "Flatten", nn.Flatten(), [(2, 3, 2)]
        yield "Identity", nn.Identity(), [(2, 3)]
        for name in ("Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "Softplus", "Softmax"):
            yield name, getattr(nn, name)(), [(3, 4)]
        yield "Maxout", nn.Maxout(4, 3, pieces=3, rng=0), [(5, 4)]
        yield "Conv2d", nn.Conv2d(2, 3, 3, padding=1, rng=0), [(2, 2, 5, 5)]
        yield "Conv2d/strided", nn.Conv2d(2, 4, 3, stride=2, groups=2, rng=0), [(2, 2, 7, 7)]
        yield "Conv2d/1x1", nn.Conv2d(3, 2, 1, stride=2, rng=0), [(2, 3, 4, 4)]
        yield "Conv2d/transposed", nn.Conv2d(16, 2, 3, padding=1, rng=0), [(2, 16, 4, 4)]
        yield "MaxPool2d", nn.MaxPool2d(2), [(2, 2, 4, 4)]
        yield "AvgPool2d", nn.AvgPool2d(3, stride=1, padding=1), [(2, 2, 4, 4)]
        yield "GlobalAvgPool2d", nn.GlobalAvgPool2d(), [(2, 3, 2, 2)]
        yield "FractionalMaxPool2d", nn.FractionalMaxPool2d(1.5, rng=0), [(2, 2, 6, 6)]
        yield "LocalResponseNorm", nn.LocalResponseNorm(3), [(2, 4, 2, 2)]
        yield "BatchNorm1d", nn.BatchNorm1d(3), [(5, 3)]
        yield "BatchNorm2d", nn.BatchNorm2d(2), [(3, 2, 2, 2)]
        yield "Add", nn.Add(), [(2, 3), (2, 3)]
        yield "Concatenate", nn.Concatenate(), [(2, 3), (2, 2)]
        yield "Dropout", nn.Dropout(0.5, rng=0), [(4, 5)]
        yield "DropConnect", stochastic.DropConnect(nn.Linear(4, 3, rng=0), rng=0), [(5, 4)]
        yield "GaussianNoise", stochastic.GaussianNoise(0.5, rng=0), [(4, 5)]
        yield "StochasticDepth", nn.StochasticDepth(nn.Linear(3, 3, rng=0), 0.5, mode="row",
                                                    rng=0), [(4, 3)]
        yield "ZeroPadShortcut", blocks.ZeroPadShortcut(2, 4, stride=2), [(2, 2, 4, 4)]
        yield "Sequential", nn.Sequential(nn.Linear(3, 3, rng=0), nn.Tanh()), [(4, 3)]
        g = nn.Graph(inputs=["a", "b"]).add("fc", nn.Linear(3, 3, rng=0), "a")
        yield "Graph", g.add("sum", nn.Add(), ["fc", "b"]).set_output("sum"), [(4, 3), (4, 3)]
        yield "BasicBlock", nn.BasicBlock(2, 2, rng=0), [(2, 2, 3, 3)]
        yield "Bottleneck", nn.Bottleneck(4, 1, rng=0), [(2, 4, 3, 3)]
        yield "ResNeXtBlock", nn.ResNeXtBlock(4, 1, cardinality=2, base_width=64, rng=0), \
            [(2, 4, 3, 3)]
        yield "InceptionModule", nn.InceptionModule(2, 1, 1, 1, 1, 1, 1, rng=0), [(2, 2, 4, 4)]
        from ermlab.distributed.graph_split import SplitGraph  # (H10) a Graph split in two
        g = nn.Graph(inputs=["a", "b"]).add("fc", nn.Linear(3, 3, rng=0), "a")
        g.add("act", nn.Tanh(), "fc").add("sum", nn.Add(), ["act", "b"]).set_output("sum")
        yield "SplitGraph", SplitGraph(g, [["fc"], ["act", "sum"]]), [(4, 3), (4, 3)]
        from ermlab.robustness import AffineInput  # (issue 14) preprocessing as a box
        yield "AffineInput", AffineInput(normal(1, (3, 2)), normal(2, (3, 2)), (6,)), [(4, 3, 2)]
        from ermlab.lab.problems.quadratic import NoisyQuadraticModel  # (issue 12) the NQM
        yield "NoisyQuadraticModel", NoisyQuadraticModel(normal(3, (3,)), rng=0), [(4, 3)]


CASES = list(module_cases())


@pytest.mark.parametrize("name,module,shapes", CASES, ids=[c[0] for c in CASES])
def test_restoring_a_cache_state_restores_the_backward_of_that_call(name, module, shapes):
    """forward(x₁), keep cache_state(), forward(x₂), restore: backward is x₁'s, exactly."""
    x0, x1, x2 = ([normal(seed + i, s) for i, s in enumerate(shapes)] for seed in (0, 10, 20))
    module.train()
    with stochastic.frozen_masks(module):
        y = module.forward(*x0)
        g = normal(30, y.shape)
        module.backward(g)                        # a finished step (Conv2d: a spare buffer)
        module.forward(*x1)
        module.zero_grad()
        expected = module.backward(g), grads(module)
        module.forward(*x1)
        state = module.cache_state()
        module.forward(*x2)
        module.restore_cache(state)
        module.zero_grad()
        got = module.backward(g), grads(module)
    got_x = got[0] if isinstance(got[0], tuple) else (got[0],)
    expected_x = expected[0] if isinstance(expected[0], tuple) else (expected[0],)
    for ours, theirs in zip(got_x, expected_x, strict=True):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: input gradient")
    for key in expected[1]:
        np.testing.assert_array_equal(got[1][key], expected[1][key], err_msg=f"{name}: {key}")


def test_every_module_class_is_covered_by_the_cache_test():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    covered = {name.split("/")[0] for name, _, _ in CASES}
    no_backward = {Augment, stochastic.Stochastic}  # no bprop of its own / an abstract base
    missing = {
        cls.__name__ for cls in subclasses(Module)
        if cls.__module__.startswith("ermlab.") and not cls.__name__.startswith("_")
        and cls not in no_backward and cls.__name__ not in covered
    }
    assert not missing, f"add these modules to module_cases(): {sorted(missing)}"
