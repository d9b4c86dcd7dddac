"""The training tests' data fixture (helpers live in training_helpers.py)."""

import pytest
from training_helpers import three_blobs


@pytest.fixture
def data():
    """(x_train, y_train, x_val, y_val): 96 + 48 examples, 4 features, 3 classes."""
    x, y = three_blobs(144, seed=0)
    return x[:96], y[:96], x[96:], y[96:]
