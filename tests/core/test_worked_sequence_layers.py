"""A one-step LSTM cell and an embedding worked out by hand, compared with what the engine gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import Model


def sigma(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_one_step_lstm_cell_by_hand():
    # D = H = 1, T = 1, h_0 = c_0 = 0, so only x's weights and the biases act:
    #   [a_i, a_f, a_g, a_o] = W_ih x + b_ih + b_hh = [0.6, 0.0, 0.7, 0.5] for x = 1
    #   c = σ(a_i) tanh(a_g),  h = σ(a_o) tanh(c),  L = h²  (mse against 0)
    model = Model.from_spec({"layers": [{"type": "lstm", "input_size": 1, "hidden_size": 1}],
                             "loss": {"type": "mse"}, "dtype": "float64"})
    w_ih = np.array([[0.5], [-0.3], [0.8], [0.2]])
    b_ih, b_hh = np.array([0.1, 0.2, -0.1, 0.0]), np.array([0.0, -0.2, 0.0, 0.3])
    model.set_parameters({"0.weight_ih_l0": w_ih, "0.weight_hh_l0": np.full((4, 1), 0.7),
                          "0.bias_ih_l0": b_ih, "0.bias_hh_l0": b_hh})
    i, g, o = sigma(0.6), math.tanh(0.7), sigma(0.5)
    c = i * g
    h = o * math.tanh(c)
    dh = 2 * h
    dc = dh * o * (1 - math.tanh(c) ** 2)
    # dL/da per gate: i' = i(1-i), g' = 1-g², o' = o(1-o); f multiplies c_0 = 0, so it gets nothing.
    da = np.array([dc * g * i * (1 - i), 0.0, dc * i * (1 - g * g), dh * math.tanh(c) * o * (1 - o)])

    outputs, tape = model.forward(np.array([[[1.0]]]), train=True)
    loss, grad_outputs = model.loss(outputs, np.zeros((1, 1)))
    grad_x = model.backward(tape, grad_outputs)

    assert outputs[0, 0] == pytest.approx(h, rel=1e-12) and loss == pytest.approx(h * h, rel=1e-12)
    grads = model.gradients()
    np.testing.assert_allclose(grads["0.weight_ih_l0"][:, 0], da * 1.0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["0.bias_ih_l0"], da, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["0.bias_hh_l0"], da, rtol=1e-12, atol=1e-15)
    assert not grads["0.weight_hh_l0"].any()  # h_0 = 0
    assert grad_x[0, 0, 0] == pytest.approx(float(da @ w_ih[:, 0]), rel=1e-12)


def test_a_repeated_token_gathers_the_gradient_of_each_use():
    # y = W[x]; with L = sum(y * G) (grad_output G), dL/dW[v] = sum of G over the positions holding v.
    model = Model.from_spec({"layers": [{"type": "embedding", "num_embeddings": 4, "embedding_dim": 2}],
                             "dtype": "float64"})
    x = np.array([[2, 0, 2]])
    grad_output = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    outputs, tape = model.forward(x, train=True)
    assert np.array_equal(outputs[0], model.parameters()["0.weight"][[2, 0, 2]])
    assert model.backward(tape, grad_output) is None  # indices have no gradient
    assert np.array_equal(model.gradients()["0.weight"], [[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [0.0, 0.0]])
