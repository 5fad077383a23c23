"""Gradient accumulation: backward adds into the buffers, as in PyTorch; tapes go stale when parameters move."""

from __future__ import annotations

import numpy as np
import pytest

from core import Model, StaleTapeError

MODELS = {
    "mlp": ({"layers": [{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "tanh"},
                        {"type": "linear", "out_features": 3}],
             "loss": {"type": "softmax_cross_entropy"}}, (4,)),
    "residual-layernorm": ({"layers": [{"type": "linear", "in_features": 4, "out_features": 5},
                                       {"type": "residual", "layers": [{"type": "layernorm"},
                                                                       {"type": "linear", "out_features": 7},
                                                                       {"type": "gelu"},
                                                                       {"type": "linear", "out_features": 5}]},
                                       {"type": "relu"}, {"type": "linear", "out_features": 2}],
                            "loss": {"type": "mse"}}, (4,)),
    "rnn": ({"layers": [{"type": "rnn", "input_size": 3, "hidden_size": 5, "return_sequences": True},
                        {"type": "rnn", "hidden_size": 4}, {"type": "linear", "out_features": 2}],
             "loss": {"type": "mse"}}, (6, 3)),
}


def make(name: str) -> tuple[Model, tuple[int, ...]]:
    spec, feature_shape = MODELS[name]
    return Model.from_spec({**spec, "dtype": "float64", "seed": 3}), feature_shape


def batch(model: Model, feature_shape, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *feature_shape))
    out_shape = model.output_shape(x.shape)
    if model.spec["loss"]["type"] == "softmax_cross_entropy":
        return x, rng.integers(0, out_shape[-1], n)
    return x, rng.standard_normal(out_shape)


def grads_of(model: Model) -> dict[str, np.ndarray]:
    return {n: g.copy() for n, g in model.gradients().items()}


def backward_once(model: Model, x, t) -> np.ndarray:
    outputs, tape = model.forward(x, train=True)
    _, g = model.loss(outputs, t)
    return model.backward(tape, g)


def assert_grads_close(got, want, factor=1.0):
    assert got.keys() == want.keys()
    for n in want:
        np.testing.assert_allclose(got[n], factor * want[n], rtol=1e-10, atol=1e-13, err_msg=n)


@pytest.mark.parametrize("name", list(MODELS))
def test_two_backward_passes_add_up(name):
    model, fs = make(name)
    (xa, ta), (xb, tb) = batch(model, fs, 5, 1), batch(model, fs, 3, 2)
    backward_once(model, xa, ta)
    ga = grads_of(model)
    model.zero_grad()
    backward_once(model, xb, tb)
    gb = grads_of(model)
    model.zero_grad()
    backward_once(model, xa, ta)
    backward_once(model, xb, tb)
    assert model.accumulated == 2
    assert_grads_close(grads_of(model), {n: ga[n] + gb[n] for n in ga})
    assert all(np.abs(ga[n] - gb[n]).max() > 1e-6 for n in ga)  # the two passes really differ


@pytest.mark.parametrize("name", list(MODELS))
def test_two_halves_give_twice_the_whole_batch(name):
    model, fs = make(name)
    x, t = batch(model, fs, 8, 4)
    model.forward_backward(x, t)
    whole = grads_of(model)
    model.zero_grad()
    model.forward_backward(x[:4], t[:4])
    model.forward_backward(x[4:], t[4:])
    assert_grads_close(grads_of(model), whole, factor=2.0)


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_grad_starts_accumulation_afresh(name):
    model, fs = make(name)
    (xa, ta), (xb, tb) = batch(model, fs, 5, 1), batch(model, fs, 5, 2)
    backward_once(model, xb, tb)
    only_b = grads_of(model)
    model.zero_grad()
    backward_once(model, xa, ta)
    model.zero_grad()
    assert model.accumulated == 0 and not any(g.any() for g in model.gradients().values())
    backward_once(model, xb, tb)
    assert_grads_close(grads_of(model), only_b)


@pytest.mark.parametrize("name", list(MODELS))
def test_pending_tapes_backward_in_reverse_order(name):
    model, fs = make(name)
    (xa, ta), (xb, tb) = batch(model, fs, 4, 1), batch(model, fs, 6, 2)
    dxa = backward_once(model, xa, ta)
    dxb = backward_once(model, xb, tb)
    sequential = grads_of(model)
    model.zero_grad()
    out_a, tape_a = model.forward(xa, train=True)
    out_b, tape_b = model.forward(xb, train=True)
    _, ga = model.loss(out_a, ta)
    _, gb = model.loss(out_b, tb)
    dxb2 = model.backward(tape_b, gb)
    dxa2 = model.backward(tape_a, ga)
    assert_grads_close(grads_of(model), sequential)
    np.testing.assert_allclose(dxa2, dxa, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dxb2, dxb, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_matches_the_three_calls(name):
    model, fs = make(name)
    x, t = batch(model, fs, 5, 9)
    backward_once(model, x, t)
    three = grads_of(model)
    model.zero_grad()
    model.forward_backward(x, t)
    assert_grads_close(grads_of(model), three)


@pytest.mark.parametrize("name", list(MODELS))
def test_train_batch_and_backprop_give_what_the_three_calls_give(name):
    model, fs = make(name)
    x, t = batch(model, fs, 5, 9)
    outputs, tape = model.forward(x, train=True)
    loss, g = model.loss(outputs, t)
    dx = model.backward(tape, g)
    three = grads_of(model)
    model.zero_grad()
    result = model.train_batch(x, t, need_input_grad=True)
    assert result.loss == loss
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.input_grad, dx, rtol=1e-12, atol=1e-15)
    assert_grads_close(grads_of(model), three)
    model.zero_grad()
    outputs, tape = model.forward(x, train=True)
    result = model.backprop(tape, outputs, targets=t, need_input_grad=True)
    assert result.loss == loss
    np.testing.assert_allclose(result.input_grad, dx, rtol=1e-12, atol=1e-15)
    assert_grads_close(grads_of(model), three)


def test_accumulation_matches_a_hand_computed_sum():
    # Linear + mse, independent of the engine: dL/dW = 2/(N M) (y − t)ᵀ x for each batch.
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": 3, "out_features": 2}],
                             "loss": {"type": "mse"}, "dtype": "float64"})
    w, b = model.parameters()["0.weight"].copy(), model.parameters()["0.bias"].copy()
    rng = np.random.default_rng(0)
    want_w, want_b = np.zeros_like(w), np.zeros_like(b)
    for n in (2, 5, 3):
        x, t = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
        model.forward_backward(x, t)
        diff = x @ w.T + b - t
        want_w += 2 / (n * 2) * diff.T @ x
        want_b += 2 / (n * 2) * diff.sum(0)
    np.testing.assert_allclose(model.gradients()["0.weight"], want_w, rtol=1e-12)
    np.testing.assert_allclose(model.gradients()["0.bias"], want_b, rtol=1e-12)


def test_tape_is_stale_after_a_step():
    model, fs = make("mlp")
    x, t = batch(model, fs, 4, 1)
    out, old_tape = model.forward(x, train=True)
    _, g = model.loss(out, t)
    model.forward_backward(x, t)
    model.step()
    with pytest.raises(StaleTapeError):
        model.backward(old_tape, g)
    # A fresh forward works again.
    out, tape = model.forward(x, train=True)
    model.backward(tape, model.loss(out, t)[1])


def test_tape_is_stale_after_set_parameters():
    model, fs = make("rnn")
    x, t = batch(model, fs, 4, 1)
    out, tape = model.forward(x, train=True)
    _, g = model.loss(out, t)
    model.set_parameters({n: p.copy() for n, p in model.parameters().items()})  # same values, new version
    with pytest.raises(StaleTapeError):
        model.backward(tape, g)
    assert model.accumulated == 0 and not any(v.any() for v in model.gradients().values())


def test_zero_grad_does_not_make_a_tape_stale():
    model, fs = make("mlp")
    x, t = batch(model, fs, 4, 1)
    out, tape = model.forward(x, train=True)
    model.zero_grad()
    model.backward(tape, model.loss(out, t)[1])
    assert model.accumulated == 1
