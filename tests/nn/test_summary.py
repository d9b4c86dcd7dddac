"""summary(): per-layer output shapes, parameters, activation memory; the seeds' VGG-16 figures."""

import numpy as np
import pytest

from ermlab import nn
from ermlab.backend import default_dtype
from ermlab.nn import zoo
from ermlab.nn.summary import ModelSummary, summary


@pytest.fixture(scope="module")
def vgg16_table():
    model = zoo.vgg16(rng=0)
    return model, model.summary((3, 224, 224))


def test_vgg16_reproduces_the_seeds_figures(vgg16_table):
    model, table = vgg16_table
    fc1 = table.row("classifier.0")
    assert fc1.type == "Linear" and fc1.output_shape == (4096,)
    assert fc1.weights == 7 * 7 * 512 * 4096 == 102_760_448  # the seeds count weights only
    assert fc1.params == 102_760_448 + 4096 == 102_764_544  # with the biases
    assert table.total_params == model.num_parameters() == 138_357_544  # "138M parameters"
    assert table.total_weights == 138_344_128
    first = table.row("features.0")
    assert first.output_shape == (64, 224, 224) and first.weights == 3 * 3 * 3 * 64 == 1728
    assert first.activations == 224 * 224 * 64 and first.nbytes == 4 * 224 * 224 * 64
    assert table.row("features.30").output_shape == (512, 7, 7)
    text = str(table)
    for figure in ("102,764,544", "102,760,448", "138,357,544", "138,344,128", "(64, 224, 224)"):
        assert figure in text


def test_vgg16_activation_memory_is_the_sum_of_the_seeds_lines(vgg16_table):
    """The seeds' table lists memory per CONV/POOL/FC output (ReLU in place, dropout aside)."""
    _, table = vgg16_table
    seeds = [224 * 224 * 3] + [224 * 224 * 64] * 2 + [112 * 112 * 64] + [112 * 112 * 128] * 2 \
        + [56 * 56 * 128] + [56 * 56 * 256] * 3 + [28 * 28 * 256] + [28 * 28 * 512] * 3 \
        + [14 * 14 * 512] + [14 * 14 * 512] * 3 + [7 * 7 * 512] + [4096, 4096, 1000]
    assert table.stored_activations == sum(seeds) == 15_237_608
    relu_outputs = sum(r.activations for r in table.rows if r.type == "ReLU")
    dropout_outputs = 2 * 4096
    assert table.total_activations == sum(seeds) + relu_outputs + dropout_outputs + 25088


def test_rows_follow_the_forward_pass_and_add_up():
    model = zoo.lenet5(rng=0)
    table = summary(model, (1, 28, 28))
    assert isinstance(table, ModelSummary)
    shapes = {r.name: r.output_shape for r in table.rows}
    assert shapes == {
        "features.0": (6, 28, 28), "features.1": (6, 28, 28), "features.2": (6, 14, 14),
        "features.3": (16, 10, 10), "features.4": (16, 10, 10), "features.5": (16, 5, 5),
        "flatten": (400,), "classifier.0": (120,), "classifier.1": (120,),
        "classifier.2": (84,), "classifier.3": (84,), "classifier.4": (10,),
    }
    assert sum(r.params for r in table.rows) == table.total_params == 61_706
    assert [r.params for r in table.rows if r.params] == [156, 2416, 48120, 10164, 850]


def test_graph_blocks_are_expanded_and_modes_restored():
    model = zoo.resnet20(stochastic_depth=0.5, rng=0)
    model.train()
    model.layer1.eval()
    table = model.summary((3, 32, 32))
    assert sum(r.params for r in table.rows) == table.total_params == model.num_parameters()
    assert table.row("layer2.0.shortcut").type == "ZeroPadShortcut"
    assert table.row("layer2.0.shortcut").output_shape == (32, 16, 16)
    assert table.row("layer3.2.residual.branch.3").output_shape == (64, 8, 8)
    assert table.row("fc").output_shape == (10,)
    # modes come back as they were, and no hook is left behind
    assert all(m.training == (not name.startswith("layer1")) for name, m in model.named_modules())
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(RuntimeError, match="without a forward pass in training mode"):
        model.fc.backward(np.ones((1, 10), np.float32))  # summary kept no cache


def test_dtype_and_batch_size():
    with default_dtype(np.float64):
        model = zoo.small_vgg(rng=0)
    table = model.summary((3, 32, 32), batch_size=2)
    assert table.dtype == np.float64
    assert table.row("features.0").nbytes == 8 * 32 * 32 * 32  # per example
    assert "float64" in str(table)


def test_errors():
    model = zoo.lenet5(rng=0)
    with pytest.raises(ValueError, match="shape of one example without the batch axis"):
        model.summary((1, 0, 28))
    with pytest.raises(ValueError, match="Conv2d"):
        model.summary((3, 28, 28))  # channel mismatch, reported by the layer
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        model.summary((1, 28, 28)).row("nope")


def small_input(name):
    """As in test_zoo: VGG and AlexNet need 32×32, LeNet-5 28×28; the others run on 8×8."""
    if name == "lenet5":
        return (1, 28, 28)
    return (3, 32, 32) if name.startswith(("vgg", "alexnet", "small_vgg")) else (3, 8, 8)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_rows_params_add_up_to_the_total_for_every_zoo_model(name):
    model = zoo.build(name, 10, small_input(name), rng=0)
    table = model.summary(small_input(name))
    assert sum(r.params for r in table.rows) == table.total_params == model.num_parameters()
    assert sum(r.weights for r in table.rows) == table.total_weights


def test_dropconnect_is_one_leaf_row_with_its_linear_parameters():
    """DropConnect computes (M ⊙ W) x + b from its Linear's parameters and never calls the
    Linear: the row is the DropConnect's, with the Linear's 20·30 + 30 parameters."""
    model = nn.Sequential(nn.DropConnect(nn.Linear(20, 30, rng=0), 0.5, rng=0), nn.ReLU(),
                          nn.Linear(30, 10, rng=0))
    table = model.summary((20,))
    assert [(r.name, r.type, r.output_shape, r.params, r.weights) for r in table.rows] == [
        ("0", "DropConnect", (30,), 630, 600), ("1", "ReLU", (30,), 0, 0),
        ("2", "Linear", (10,), 310, 300),
    ]
    assert sum(r.params for r in table.rows) == table.total_params == 940
    assert table.total_activations == 20 + 30 + 30 + 10
    assert table.stored_activations == 20 + 30 + 10  # the ReLU runs in place


def test_wrappers_that_call_their_children_are_expanded():
    """StochasticDepth and Maxout run their child's forward: the child's row carries the
    parameters, the wrapper adds none."""
    model = nn.Sequential(nn.StochasticDepth(nn.Linear(6, 6, rng=0), 0.5, rng=0),
                          nn.Maxout(6, 4, pieces=2, rng=0))
    table = model.summary((6,))
    assert [(r.name, r.params) for r in table.rows] == [("0.branch", 42), ("1.linear", 56)]
    assert sum(r.params for r in table.rows) == table.total_params


def test_a_forward_set_on_the_instance_is_restored_exactly():
    """summary hooks every module's forward; a user's own instance-level forward (a logging
    hook) must be there, and called, afterwards."""
    lin = nn.Linear(4, 3, rng=0)
    calls = []
    original = lin.forward

    def logged(x):
        calls.append(x.shape)
        return original(x)

    lin.forward = logged
    model = nn.Sequential(lin, nn.Tanh())
    table = model.summary((4,))
    assert calls == [(1, 4)]  # the hook ran inside summary's pass too
    assert table.row("0").params == 15
    assert lin.__dict__["forward"] is logged
    assert not any("forward" in m.__dict__ for m in (model, model[1]))
    model(np.zeros((2, 4), np.float32))
    assert calls == [(1, 4), (2, 4)]
