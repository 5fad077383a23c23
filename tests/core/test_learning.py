"""Learning works end to end: a two-layer net fits a spiral, an RNN learns the sign of a sum, a CNN reads digits."""

from __future__ import annotations

import numpy as np

from core import Model
from tests.optional import need


def spiral(points_per_class: int = 100, classes: int = 3, seed: int = 0):
    """cs231n's spiral: `classes` interleaved arms in 2-D, with a little angular noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((points_per_class * classes, 2))
    y = np.zeros(points_per_class * classes, dtype=np.int64)
    for k in range(classes):
        rows = slice(points_per_class * k, points_per_class * (k + 1))
        r = np.linspace(0.0, 1, points_per_class)
        t = np.linspace(k * 4, (k + 1) * 4, points_per_class) + rng.standard_normal(points_per_class) * 0.2
        x[rows] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[rows] = k
    return x, y


def accuracy(model: Model, x, y) -> float:
    outputs, _ = model.forward(x, train=False)
    return float((outputs.argmax(axis=-1) == y).mean())


def test_two_layer_net_fits_a_three_class_spiral():
    x, y = spiral()
    model = Model.from_spec({
        "layers": [{"type": "linear", "in_features": 2, "out_features": 100}, {"type": "relu"},
                   {"type": "linear", "out_features": 3}],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "adam", "lr": 0.01},
        "seed": 0,
    })
    assert accuracy(model, x, y) < 0.6  # a linear-ish start cannot separate spirals
    losses = []
    for _ in range(1000):
        losses.append(model.forward_backward(x, y))
        model.step()
    assert losses[-1] < 0.25 * losses[0]
    assert accuracy(model, x, y) >= 0.95


def sign_of_sum(n: int, t: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, 1))
    return x, (x.sum(axis=(1, 2)) > 0).astype(np.int64)


def test_rnn_learns_the_sign_of_a_sum():
    x, y = sign_of_sum(512, 8, seed=1)
    x_test, y_test = sign_of_sum(512, 8, seed=2)
    model = Model.from_spec({
        "layers": [{"type": "rnn", "input_size": 1, "hidden_size": 16}, {"type": "linear", "out_features": 2}],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "adam", "lr": 0.01},
        "seed": 0,
    })
    rng = np.random.default_rng(3)
    for epoch in range(40):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            rows = order[start:start + 64]
            model.forward_backward(x[rows], y[rows])
            model.step(lr=0.01 if epoch < 30 else 0.002)  # a lower rate at the end settles the fit
    assert accuracy(model, x, y) >= 0.95
    assert accuracy(model, x_test, y_test) >= 0.93


def test_rnn_learns_the_sign_of_a_running_sum():
    # Every step's output is the sign of the sum so far: backprop through time with return_sequences.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((512, 8, 1))
    y = (np.cumsum(x, axis=1) > 0).astype(np.float64)  # (N, T, 1)
    model = Model.from_spec({
        "layers": [{"type": "rnn", "input_size": 1, "hidden_size": 16, "return_sequences": True},
                   {"type": "linear", "out_features": 1}],
        "loss": {"type": "bce_with_logits"},
        "optimizer": {"type": "adam", "lr": 0.01},
        "seed": 0,
    })
    for epoch in range(40):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            rows = order[start:start + 64]
            model.forward_backward(x[rows], y[rows])
            model.step(lr=0.01 if epoch < 30 else 0.002)
    logits, _ = model.forward(x)
    assert logits.shape == (512, 8, 1)
    assert float(((logits > 0) == (y > 0.5)).mean()) >= 0.95


def test_a_small_cnn_reads_sklearn_digits():
    datasets = need("sklearn.datasets")  # the digits ship with scikit-learn (the dev extra)
    digits = datasets.load_digits()  # 1797 8x8 images, no download
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:int(0.8 * len(y))], order[int(0.8 * len(y)):]
    model = Model.from_spec({
        "input_shape": [1, 8, 8],
        "layers": [{"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                   {"type": "maxpool2d", "kernel_size": 2},
                   {"type": "conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1}, {"type": "relu"},
                   {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                   {"type": "linear", "out_features": 10}],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "adam", "lr": 0.003},
        "seed": 0,
    })
    for _ in range(20):
        batches = rng.permutation(train)
        for start in range(0, len(batches), 64):
            batch = batches[start:start + 64]
            model.forward_backward(x[batch], y[batch])
            model.step()
    assert accuracy(model, x[test], y[test]) >= 0.97
