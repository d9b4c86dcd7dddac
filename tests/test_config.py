"""ermlab.config: a config dict becomes the model, loss, optimizer, regularizer and Trainer."""

from __future__ import annotations

import numpy
import pytest

from ermlab import config as configs
from ermlab import losses, nn, optim, regularizers


def test_defaults_build_an_adam_mlp():
    trainer = configs.build({}, n_inputs=64, n_outputs=10, rng=0)
    layers = list(trainer.model)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert (layers[0].weight.data.shape, layers[2].weight.data.shape) == ((128, 64), (10, 128))
    assert isinstance(trainer.loss, losses.SoftmaxCrossEntropy)
    assert isinstance(trainer.optimizer, optim.Adam)
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3  # Adam's own default
    assert trainer.regularizer is None and trainer.callbacks == []


def test_every_setting_reaches_its_object():
    config = {"hidden": "32,16", "activation": "tanh", "optimizer": "SGD", "lr": 0.05,
              "momentum": 0.9, "nesterov": True, "l1": 1e-5, "l2": 1e-4, "max_norm": 3.0,
              "dropout": 0.25, "loss": "hinge", "patience": 4}
    trainer = configs.build(config, 8, 3, rng=0, early_stopping=True)
    names = [type(m).__name__ for m in trainer.model]
    assert names == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert all(m.p == 0.25 for m in trainer.model if isinstance(m, nn.Dropout))
    group = trainer.optimizer.param_groups[0]
    assert isinstance(trainer.optimizer, optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.05, 0.9, True)
    terms = trainer.regularizer.regularizers
    assert [type(t) for t in terms] == [regularizers.L1, regularizers.L2, regularizers.MaxNorm]
    assert (terms[0].lam, terms[1].lam, terms[2].c) == (1e-5, 1e-4, 3.0)
    assert isinstance(trainer.loss, losses.MulticlassHinge)
    stopper = trainer.callbacks[0]
    assert (type(stopper).__name__, stopper.monitor, stopper.patience) == (
        "EarlyStopping", "val_loss", 4)


def test_sgd_without_lr_gets_the_fallback_and_lists_become_tuples():
    trainer = configs.build({"optimizer": "sgd", "hidden": []}, 2, 2, rng=0)
    assert trainer.optimizer.param_groups[0]["lr"] == configs.FALLBACK_LR
    adam = configs.build({"betas": [0.8, 0.9]}, 2, 2, rng=0).optimizer
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)


def test_same_rng_same_model():
    first = configs.build_model({"hidden": [5]}, 3, 2, rng=1)
    again = configs.build_model({"hidden": [5]}, 3, 2, rng=1)
    other = configs.build_model({"hidden": [5]}, 3, 2, rng=2)
    for a, b in zip(first.parameters(), again.parameters()):
        numpy.testing.assert_array_equal(a.data, b.data)
    assert not numpy.array_equal(first.parameters()[0].data, other.parameters()[0].data)


def test_float64_models_on_request():
    model = configs.build_model({}, 3, 2, rng=0, dtype="float64")
    assert all(p.data.dtype == numpy.float64 for p in model.parameters())


def test_validate_normalizes_and_classifies():
    full = configs.validate({"hidden": 7, "epochs": numpy.int64(3), "lr": numpy.float32(0.5)})
    assert full["hidden"] == (7,) and full["epochs"] == 3 and type(full["epochs"]) is int
    assert type(full["lr"]) is float
    assert configs.is_classification({}) and not configs.is_classification({"loss": "mse"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([("lr", 0.1)], "a config is a dict"),
        ({"hiden": [8]}, r"unknown config key\(s\) \['hiden'\]"),
        ({"momentum": 0.9}, r"'momentum' is an option of optimizer .*sgd, not of 'adam'"),
        ({"optimizer": "lbfgs"}, "closure the Trainer does not drive"),
        ({"hidden": [8, 0]}, "positive layer widths"),
        ({"hidden": [1.5]}, "positive layer widths"),
        ({"loss": "nll"}, "unknown loss 'nll'"),
        ({"lr": 0}, "'lr' must be a finite number > 0"),
        ({"l2": float("nan")}, "'l2' must be a finite number ≥ 0"),
        ({"dropout": 1.0}, r"'dropout' must be in \[0, 1\)"),
        ({"epochs": 2.5}, "'epochs' must be an integer ≥ 1"),
        ({"batch_size": 0}, "'batch_size' must be an integer ≥ 1"),
        ({"patience": True}, "'patience' must be an integer ≥ 0"),
        ({"max_norm": 0}, "'max_norm' must be a finite number > 0"),
    ],
)
def test_bad_configs_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        configs.validate(config)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        configs.build_model({"activation": "swish"}, 2, 2)


def test_mlp_memory_counts_parameters_gradients_optimizer_state_and_a_batch():
    sizes = [784, 512, 256, 10]
    model = configs.build_model({"hidden": sizes[1:-1]}, sizes[0], sizes[-1], rng=0)
    parameter_bytes = sum(p.data.nbytes for p in model.parameters())
    batch = 4 * 2 * 32 * sum(sizes)
    largest = 8 * 784 * 512  # the float64 draw that initializes the first weight matrix
    assert configs.mlp_memory(sizes, 32) == 4 * parameter_bytes + batch + largest
    assert configs.mlp_memory(sizes, 32, "float64") == 8 * parameter_bytes + 2 * batch + largest


def test_a_model_too_large_for_the_machine_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(configs, "machine_memory", lambda: 8 * 10**9)
    with pytest.raises(ValueError, match=r"needs about 10\.2 TB to train but this machine has "
                                         r"8\.0 GB of memory"):
        configs.build_model({"hidden": [10**10]}, 30, 2)
    assert configs.build_model({"hidden": [10**5]}, 30, 2).num_parameters() == 3_300_002
