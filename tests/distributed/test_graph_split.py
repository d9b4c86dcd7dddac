"""SplitGraph: a Graph split into partitions joined by Send/Receive equals the unsplit graph.

The oracle is the unsplit ``nn.Graph`` built with the same seeds (separate modules), in float64.
"""

import itertools

import numpy as np
import pytest

from ermlab import losses, nn, optim
from ermlab.backend import default_dtype
from ermlab.distributed import SplitGraph
from ermlab.training import Trainer

WIDTH = 4


def residual_graph(seed=0):
    """x fans out to fc1 and the residual Add; act fans out to fc2 and branch.

        act = tanh(W₁x + b₁);  residual = W₂ act + b₂ + x;  branch = sigmoid(act)
        out = W₃ [residual, branch] + b₃
    """
    with default_dtype(np.float64):
        g = nn.Graph(inputs="x")
        g.add("fc1", nn.Linear(WIDTH, WIDTH, rng=seed), "x")
        g.add("act", nn.Tanh(), "fc1")
        g.add("fc2", nn.Linear(WIDTH, WIDTH, rng=seed + 1), "act")
        g.add("residual", nn.Add(), ["fc2", "x"])
        g.add("branch", nn.Sigmoid(), "act")
        g.add("concat", nn.Concatenate(), ["residual", "branch"])
        g.add("out", nn.Linear(2 * WIDTH, 3, rng=seed + 2), "concat")
    return g.set_output("out")


# act is read in partitions 1 and 2, x in partitions 0 and 1, residual in partition 2.
RESIDUAL_SPLIT = [["fc1", "act"], ["fc2", "residual"], ["branch", "concat", "out"]]


def multi_input_graph(seed=0):
    """Inputs a, b, c (c unused): out = W₃ [tanh(W₁a + W₂b), W₁a]."""
    with default_dtype(np.float64):
        g = nn.Graph(inputs=["a", "b", "c"])
        g.add("ea", nn.Linear(3, WIDTH, rng=seed), "a")
        g.add("eb", nn.Linear(5, WIDTH, rng=seed + 1), "b")
        g.add("sum", nn.Add(), ["ea", "eb"])
        g.add("act", nn.Tanh(), "sum")
        g.add("cat", nn.Concatenate(), ["act", "ea"])
        g.add("out", nn.Linear(2 * WIDTH, 2, rng=seed + 2), "cat")
    return g.set_output("out")


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def passes(model, inputs, grad_out):
    model.train()
    model.zero_grad()
    out = model.forward(*inputs)
    back = model.backward(grad_out)
    back = back if isinstance(back, tuple) else (back,)
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    return out, back, grads


def assert_same_passes(oracle, split, inputs, grad_out):
    out_a, back_a, grads_a = passes(oracle, inputs, grad_out)
    out_b, back_b, grads_b = passes(split, inputs, grad_out)
    np.testing.assert_allclose(out_b, out_a, rtol=0, atol=1e-12)
    assert len(back_a) == len(back_b)
    for a, b in zip(back_a, back_b):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        np.testing.assert_allclose(grads_b[name], grads_a[name], rtol=0, atol=1e-12,
                                   err_msg=name)
        assert np.abs(grads_a[name]).sum() > 0, name  # the test can see a missing gradient


def test_residual_fan_out_across_partitions_equals_unsplit():
    x, g = normal(1, (6, WIDTH)), normal(2, (6, 3))
    split = SplitGraph(residual_graph(), RESIDUAL_SPLIT)
    assert [p.boxes for p in split.partitions] == RESIDUAL_SPLIT
    assert split.partitions[1].receives == ["x", "act"]
    assert split.partitions[0].sends == ["act"]
    assert_same_passes(residual_graph(), split, (x,), g)


def test_multi_input_graph_equals_unsplit_and_unused_input_gets_zero_gradient():
    inputs = (normal(1, (5, 3)), normal(2, (5, 5)), normal(3, (5, 7)))
    split = SplitGraph(multi_input_graph(), [["ea"], ["eb"], ["sum", "act", "cat", "out"]])
    assert_same_passes(multi_input_graph(), split, inputs, normal(4, (5, 2)))
    split.forward(*inputs)
    assert np.array_equal(split.backward(normal(4, (5, 2)))[2], np.zeros((5, 7)))


def test_partitions_numbered_against_the_flow_run_in_dependency_order():
    """Partition 0 reads from partition 1: allowed, the partitions run as 1 then 0."""
    split = SplitGraph(residual_graph(), [["fc2", "residual", "branch", "concat", "out"],
                                          ["fc1", "act"]])
    assert [p.device for p in split.partitions] == [1, 0]
    assert_same_passes(residual_graph(), split, (normal(1, (6, WIDTH)),), normal(2, (6, 3)))


def test_devices_mapping_gives_the_same_split():
    devices = {box: f"gpu{k}" for k, group in enumerate(RESIDUAL_SPLIT) for box in group}
    split = SplitGraph(residual_graph(), devices=devices)
    assert [p.boxes for p in split.partitions] == RESIDUAL_SPLIT
    assert [p.device for p in split.partitions] == ["gpu0", "gpu1", "gpu2"]
    assert_same_passes(residual_graph(), split, (normal(1, (6, WIDTH)),), normal(2, (6, 3)))


def test_eval_mode_forward_equals_unsplit():
    x = normal(1, (6, WIDTH))
    split = SplitGraph(residual_graph(), RESIDUAL_SPLIT).eval()
    assert all(not p.graph.training for p in split.partitions)
    np.testing.assert_allclose(split.forward(x), residual_graph().eval().forward(x),
                               rtol=0, atol=1e-12)


def test_bytes_sent_per_step_are_the_crossing_activations_and_gradients():
    """act goes to partitions 1 and 2, residual to partition 2: three (n, WIDTH) float64
    arrays each way; the graph input x is fed, not sent."""
    n = 6
    split = SplitGraph(residual_graph(), RESIDUAL_SPLIT)
    split.forward(normal(1, (n, WIDTH)))
    assert split.traffic == {"forward": 3 * n * WIDTH * 8, "backward": 0}
    split.backward(normal(2, (n, 3)), input_grad=False)
    assert split.traffic == {"forward": 3 * n * WIDTH * 8, "backward": 3 * n * WIDTH * 8}
    report = split.report()
    assert f"{3 * n * WIDTH * 8} forward (activations)" in report
    assert f"{3 * n * WIDTH * 8} backward (gradients)" in report
    print(report)


class Recorder(nn.Module):
    """y = x; remembers every x it was given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return x

    def grad_input(self, grad_out):
        return grad_out


def test_values_cross_as_copies():
    """The receiving partition holds a copy of the sender's array, never the array itself."""
    with default_dtype(np.float64):
        g = nn.Graph(inputs="x").add("fc", nn.Linear(3, 3, rng=0), "x")
    g.add("here", Recorder(), "fc").add("there", Recorder(), "fc")
    g.add("sum", nn.Add(), ["here", "there"]).set_output("sum")
    split = SplitGraph(g, [["fc", "here"], ["there", "sum"]])
    split.forward(normal(1, (4, 3)))
    sent, received = g.here.seen[0], g.there.seen[0]
    np.testing.assert_array_equal(received, sent)
    assert not np.shares_memory(received, sent)


def test_training_with_sgd_gives_the_unsplit_weights():
    def fit(model):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((48, WIDTH))
        y = rng.integers(0, 3, 48)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        Trainer(model, losses.SoftmaxCrossEntropy(), opt, rng=1).fit(
            x, y, epochs=2, batch_size=16)
        return model.state_dict()

    start = residual_graph().state_dict()
    a = fit(residual_graph())
    b = fit(SplitGraph(residual_graph(), n_partitions=2))
    assert a.keys() == b.keys()
    for name in a:
        assert not np.allclose(a[name], start[name]), name  # training moved it
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-12, err_msg=name)


def test_balanced_rule_is_contiguous_and_minimises_the_largest_partition():
    g = residual_graph()
    order = g.order()
    size = {b: sum(p.size for p in g._modules[b].parameters()) for b in order}
    for n in (1, 2, 3):
        split = SplitGraph(g, n_partitions=n)
        groups = [p.boxes for p in split.partitions]
        assert sum(groups, []) == order
        best = min(max(sum(size[b] for b in order[i:j]) for i, j in zip((0, *c), (*c, len(order))))
                   for c in itertools.combinations(range(1, len(order)), n - 1))
        assert max(p.num_parameters() for p in split.partitions) == best


@pytest.mark.parametrize("kwargs, message", [
    ({"partitions": [["fc1", "nope"], ["act"]]}, "'nope', which is not a box"),
    ({"partitions": [["fc1", "act"], ["act", "fc2"]]}, "box 'act' is in partitions 0 and 1"),
    ({"partitions": [["fc1", "act", "fc2", "residual", "branch", "concat", "out"], []]},
     "partition 1 is empty"),
    ({"partitions": [["fc1", "act"], ["fc2"]]}, "are in no partition"),
    ({"partitions": "fc1"}, "must be a list of groups of box names"),
    ({"partitions": ["fc1", "act"]}, "partition 0 must be a list of box names"),
    ({"partitions": [["fc1", "fc2", "residual", "concat", "out"], ["act", "branch"]]},
     "read from each other in a cycle"),
    ({"devices": {"fc1": 0}}, "are in no partition"),
    ({"n_partitions": 0}, "n_partitions must be an integer in [1, 7]"),
    ({"n_partitions": 8}, "n_partitions must be an integer in [1, 7]"),
    ({}, "exactly one of partitions=, devices=, n_partitions="),
    ({"partitions": RESIDUAL_SPLIT, "n_partitions": 2}, "exactly one of"),
])
def test_bad_split_is_one_line_error_before_anything_runs(kwargs, message):
    with pytest.raises(ValueError) as error:
        SplitGraph(residual_graph(), **kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_module_shared_across_partitions_is_refused():
    with default_dtype(np.float64):
        encoder = nn.Linear(3, 3, rng=0)
        g = nn.Graph(inputs=["a", "b"])
        g.add("ea", encoder, "a").add("eb", encoder, "b")
        g.add("sum", nn.Add(), ["ea", "eb"]).set_output("sum")
    with pytest.raises(ValueError, match="share one module"):
        SplitGraph(g, [["ea"], ["eb", "sum"]])
    split = SplitGraph(g, [["ea", "eb"], ["sum"]])  # together they are fine
    assert len(split.parameters()) == 2


@pytest.fixture(scope="module")
def ray_split(ray_session):
    """The residual graph split over three actors, started once for this module's Ray tests;
    ``fresh`` gives each test the driver's weights of a new residual_graph()."""
    split = SplitGraph(residual_graph(), RESIDUAL_SPLIT, placement="ray")
    yield split
    split.close()


def fresh(split):
    split.disown()  # the driver's parameters are the truth again (ActorUpdates owned them)
    split.load_state_dict(residual_graph().state_dict())
    split.zero_grad()
    return split


def test_ray_placement_equals_unsplit_and_trains_the_same(ray_split):
    """Each partition an actor: activations and gradients go actor to actor by reference."""
    split = fresh(ray_split)
    multi = None
    try:
        assert_same_passes(residual_graph(), split, (normal(1, (6, WIDTH)),), normal(2, (6, 3)))
        multi = SplitGraph(multi_input_graph(), [["ea"], ["eb"], ["sum", "act", "cat", "out"]],
                           placement="ray")
        inputs = (normal(1, (5, 3)), normal(2, (5, 5)), normal(3, (5, 7)))
        assert_same_passes(multi_input_graph(), multi, inputs, normal(4, (5, 2)))
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((32, WIDTH)), rng.integers(0, 3, 32)
        trained = []
        for model in (residual_graph(), split):
            opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            Trainer(model, losses.SoftmaxCrossEntropy(), opt, rng=1).fit(
                x, y, epochs=2, batch_size=16)
            trained.append(model.state_dict())
        for name in trained[0]:
            np.testing.assert_allclose(trained[1][name], trained[0][name], rtol=0, atol=1e-12,
                                       err_msg=name)
    finally:
        if multi is not None:
            multi.close()


def test_ray_placement_refuses_an_unknown_placement_and_buffers():
    with pytest.raises(ValueError, match="placement must be 'process' or 'ray'"):
        SplitGraph(residual_graph(), RESIDUAL_SPLIT, placement="gpu")
    with default_dtype(np.float64):
        g = nn.Graph(inputs="x").add("fc", nn.Linear(3, 3, rng=0), "x")
        g.add("bn", nn.BatchNorm1d(3), "fc").set_output("bn")
    with pytest.raises(ValueError, match="does not carry buffers"):
        SplitGraph(g, [["fc"], ["bn"]], placement="ray")


def test_ray_actors_own_parameters_and_optimizer_only_activations_travel(ray_split):
    """ActorUpdates: θ and the optimizer step stay in the actors; gradients the actors hold
    equal the unsplit graph's; Adam training with L2 equals the unsplit run; the bytes per
    step are the crossing activations and gradients (three (n, WIDTH) float64 arrays each way,
    as in process), not the weights."""
    from ermlab import regularizers
    from ermlab.distributed.graph_split import ActorUpdates

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, WIDTH)), rng.integers(0, 3, 32)
    trained = []
    split = fresh(ray_split)
    for model, strategy in ((residual_graph(), None), (split, ActorUpdates())):
        opt = optim.Adam(model.parameters(), lr=0.02)
        trainer = Trainer(model, losses.SoftmaxCrossEntropy(), opt, regularizers.L2(1e-3),
                          rng=1, strategy=strategy)
        history = trainer.fit(x, y, epochs=2, batch_size=16)
        trained.append((model.state_dict(), opt.state_dict()["state"]))
    logs = history["bytes_per_step"]
    assert logs == [2 * 3 * 16 * WIDTH * 8] * 2
    for name in trained[0][0]:
        np.testing.assert_allclose(trained[1][0][name], trained[0][0][name], rtol=0,
                                   atol=1e-12, err_msg=name)
    for key, state in trained[0][1].items():  # Adam's moments came back from the actors
        np.testing.assert_allclose(trained[1][1][key]["exp_avg"], state["exp_avg"],
                                   atol=1e-12)
    oracle, g = residual_graph(), normal(2, (6, 3))
    oracle.load_state_dict(split.state_dict())  # the trained weights, on both sides
    _, _, expected = passes(oracle, (normal(1, (6, WIDTH)),), g)
    split.own(optim.SGD(split.parameters(), lr=0.1))
    split.train().forward(normal(1, (6, WIDTH)))
    split.backward(g, input_grad=False)
    held = split.actor_grads()
    assert all(not p.grad.any() for p in split.parameters())  # none came to the driver
    for name, grad in expected.items():
        np.testing.assert_allclose(held[name], grad, rtol=0, atol=1e-12, err_msg=name)
    assert split.bytes_per_step == 2 * 3 * 6 * WIDTH * 8
