"""The seeds' sanity claims for plain SGD: an MLP learns XOR and two interleaved spirals."""

import numpy as np

from ermlab import losses, nn, optim
from ermlab.data import toy
from ermlab.training import Trainer


def train_plain_sgd(x, y, sizes, activation, lr, epochs, batch_size, seed):
    model = nn.mlp(sizes, activation=activation, rng=seed)
    optimizer = optim.SGD(model.parameters(), lr=lr)
    assert optimizer.param_groups[0]["momentum"] == 0
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), optimizer)
    trainer.fit(x, y, epochs=epochs, batch_size=batch_size, rng=seed)
    return trainer


def test_xor_is_learned_exactly():
    x, y = toy.xor()
    trainer = train_plain_sgd(x, y, [2, 8, 2], "tanh", lr=0.5, epochs=500, batch_size=None,
                              seed=0)
    np.testing.assert_array_equal(trainer.predict(x), y)
    assert trainer.history["loss"][-1] < 0.05


def test_two_spirals_reach_98_percent_training_accuracy():
    x, y = toy.two_spirals(n=400, rng=1)
    trainer = train_plain_sgd(x, y, [2, 128, 128, 2], "relu", lr=0.1, epochs=800, batch_size=16,
                              seed=2)
    accuracy = np.mean(trainer.predict(x) == y)
    assert accuracy >= 0.98, f"training accuracy {accuracy:.3f}"


def test_a_linear_model_cannot_learn_xor():
    """The control: without a hidden layer XOR is not linearly separable."""
    x, y = toy.xor()
    trainer = train_plain_sgd(x, y, [2, 2], "tanh", lr=0.5, epochs=500, batch_size=None, seed=0)
    assert np.mean(trainer.predict(x) == y) <= 0.75
