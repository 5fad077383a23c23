"""Gradients worked out by hand, compared with what the engine accumulates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import InputError, Model


def sigma(z):
    return 1.0 / (1.0 + math.exp(-z))


def single_neuron(w: float, b: float) -> Model:
    model = Model.from_spec({
        "layers": [{"type": "linear", "in_features": 1, "out_features": 1}, {"type": "sigmoid"}],
        "loss": {"type": "mse"}, "dtype": "float64",
    })
    model.set_parameters({"0.weight": np.array([[w]]), "0.bias": np.array([b])})
    return model


@pytest.mark.parametrize("w, b, x, y", [(0.5, 0.0, 2.0, 1.0), (-1.3, 0.2, 0.7, 0.0), (2.0, -1.0, -1.5, 0.25)])
def test_sigmoid_neuron_squared_error(w, b, x, y):
    # L = (σ(wx + b) − y)²  ⇒  dL/dw = 2(a − y)·σ'(z)·x,  dL/db = 2(a − y)·σ'(z),  dL/dx = 2(a − y)·σ'(z)·w
    z = w * x + b
    a = sigma(z)
    dsigma = a * (1 - a)
    model = single_neuron(w, b)
    outputs, tape = model.forward(np.array([[x]]), train=True)
    loss, grad_outputs = model.loss(outputs, np.array([[y]]))
    grad_x = model.backward(tape, grad_outputs)
    assert outputs[0, 0] == pytest.approx(a, rel=1e-12)
    assert loss == pytest.approx((a - y) ** 2, rel=1e-12)
    assert model.gradients()["0.weight"][0, 0] == pytest.approx(2 * (a - y) * dsigma * x, rel=1e-12)
    assert model.gradients()["0.bias"][0] == pytest.approx(2 * (a - y) * dsigma, rel=1e-12)
    assert grad_x[0, 0] == pytest.approx(2 * (a - y) * dsigma * w, rel=1e-12)


def test_sigmoid_neuron_over_a_batch_is_the_mean():
    w, b = 0.8, -0.3
    xs, ys = np.array([1.0, -2.0, 0.5, 3.0]), np.array([1.0, 0.0, 0.0, 1.0])
    per_example = []
    for x, y in zip(xs, ys):
        a = sigma(w * x + b)
        per_example.append(2 * (a - y) * a * (1 - a) * x)
    model = single_neuron(w, b)
    loss = model.forward_backward(xs[:, None], ys)  # (N,) targets for (N, 1) outputs
    a = np.array([sigma(w * x + b) for x in xs])
    assert loss == pytest.approx(float(np.mean((a - ys) ** 2)), rel=1e-12)
    assert model.gradients()["0.weight"][0, 0] == pytest.approx(sum(per_example) / len(xs), rel=1e-12)


def two_layer(seed=0, n=6, d=4, h=5, c=3):
    rng = np.random.default_rng(seed)
    params = {"0.weight": rng.standard_normal((h, d)), "0.bias": rng.standard_normal(h) * 0.1,
              "2.weight": rng.standard_normal((c, h)), "2.bias": rng.standard_normal(c) * 0.1}
    model = Model.from_spec({
        "layers": [{"type": "linear", "in_features": d, "out_features": h}, {"type": "relu"},
                   {"type": "linear", "out_features": c}],
        "loss": {"type": "softmax_cross_entropy"}, "dtype": "float64",
    })
    model.set_parameters(params)
    return model, params, rng.standard_normal((n, d))


def by_hand(params, x, y_onehot):
    """Forward and backward of relu(x W1ᵀ + b1) W2ᵀ + b2 with softmax cross-entropy, in plain numpy."""
    n = x.shape[0]
    z1 = x @ params["0.weight"].T + params["0.bias"]
    a = np.maximum(z1, 0)
    logits = a @ params["2.weight"].T + params["2.bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -(y_onehot * np.log(p)).sum() / n
    delta = (p - y_onehot) / n                    # dL/dlogits
    dW2 = a.T @ delta                             # (H, C), cs231n layout; torch's is its transpose
    db2 = delta.sum(0)
    da = delta @ params["2.weight"]
    dz1 = da * (z1 > 0)
    dW1 = x.T @ dz1
    return {"loss": loss, "delta": delta, "2.weight": dW2.T, "2.bias": db2, "0.weight": dW1.T,
            "0.bias": dz1.sum(0), "x": dz1 @ params["0.weight"]}


def test_softmax_cross_entropy_two_layer_net_with_labels():
    model, params, x = two_layer()
    labels = np.array([0, 2, 1, 1, 0, 2], dtype=np.int64)
    want = by_hand(params, x, np.eye(3)[labels])
    outputs, tape = model.forward(x, train=True)
    loss, grad_logits = model.loss(outputs, labels)
    assert loss == pytest.approx(want["loss"], rel=1e-12)
    np.testing.assert_allclose(grad_logits, want["delta"], rtol=1e-12, atol=1e-15)  # (p − y) / N
    grad_x = model.backward(tape, grad_logits)
    for name in ("2.weight", "2.bias", "0.weight", "0.bias"):
        np.testing.assert_allclose(model.gradients()[name], want[name], rtol=1e-10, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(grad_x, want["x"], rtol=1e-10, atol=1e-14)


def test_softmax_cross_entropy_two_layer_net_with_probability_targets():
    model, params, x = two_layer(seed=1, n=5)
    rng = np.random.default_rng(7)
    targets = rng.random((5, 3))
    targets /= targets.sum(1, keepdims=True)
    want = by_hand(params, x, targets)
    loss = model.forward_backward(x, targets)
    assert loss == pytest.approx(want["loss"], rel=1e-12)
    for name in ("2.weight", "2.bias", "0.weight", "0.bias"):
        np.testing.assert_allclose(model.gradients()[name], want[name], rtol=1e-10, atol=1e-14, err_msg=name)
    outputs, _ = model.forward(x)
    _, grad_logits = model.loss(outputs, targets)
    np.testing.assert_allclose(grad_logits, want["delta"], rtol=1e-12, atol=1e-15)


def test_one_hot_probabilities_give_the_same_gradient_as_labels():
    model, params, x = two_layer(seed=2, n=4)
    labels = np.array([2, 0, 0, 1], dtype=np.int64)
    outputs, _ = model.forward(x)
    loss_l, grad_l = model.loss(outputs, labels)
    loss_p, grad_p = model.loss(outputs, np.eye(3)[labels])
    assert loss_l == pytest.approx(loss_p, rel=1e-12)
    np.testing.assert_allclose(grad_l, grad_p, rtol=1e-12, atol=1e-16)


def test_softmax_cross_entropy_of_equal_logits_is_log_c():
    # By hand: equal logits give p = 1/C everywhere, so L = log C and dL/dlogits = (1/C − y) / N.
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": 2, "out_features": 4}],
                             "loss": {"type": "softmax_cross_entropy"}, "dtype": "float64"})
    logits = np.zeros((2, 4))
    loss, grad = model.loss(logits, np.array([1, 3], dtype=np.int64))
    assert loss == pytest.approx(math.log(4), rel=1e-12)
    np.testing.assert_allclose(grad, [[0.125, -0.375, 0.125, 0.125], [0.125, 0.125, 0.125, -0.375]], rtol=1e-12)


def test_softmax_cross_entropy_on_sequences_is_refused_or_per_position():
    model = Model.from_spec({
        "layers": [{"type": "rnn", "input_size": 2, "hidden_size": 4, "return_sequences": True},
                   {"type": "linear", "out_features": 3}],
        "loss": {"type": "softmax_cross_entropy"}, "dtype": "float64",
    })
    outputs, _ = model.forward(np.random.default_rng(0).standard_normal((2, 5, 2)))
    targets = np.full((2, 5, 3), 1 / 3)
    try:
        loss, _ = model.loss(outputs, targets)
    except InputError:
        return  # refusing is one right answer: DESIGN gives (N, C) logits only
    # The other: softmax over the classes at each position, averaged over N·T positions.
    log_p = outputs - np.log(np.exp(outputs).sum(-1, keepdims=True))
    assert loss == pytest.approx(float(-(targets * log_p).sum(-1).mean()), rel=1e-9)
