"""Properties over random layer stacks and batch shapes: gradients check, shapes hold, float32 stays float32."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Model, gradcheck

ACTIVATIONS = ["relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus"]
OPTIMIZERS = [
    {"type": "sgd", "lr": 0.01},
    {"type": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"type": "adam", "lr": 1e-3, "weight_decay": 1e-3},
    {"type": "adamw", "lr": 1e-3},
    {"type": "rmsprop", "lr": 1e-3, "momentum": 0.5, "centered": True},
    {"type": "sgd", "lr": 0.01, "clip_grad_norm": 0.1, "clip_grad_value": 0.01},
]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
size = st.integers(1, 5)


@st.composite
def layer(draw, features: int, batchnorm: bool, depth: int = 0) -> tuple[dict, int]:
    """Return (one layer's spec, the features it gives); batchnorm only where inputs are (N, C), N > 1."""
    kinds = ["linear", "activation", "layernorm", "dropout"] + (["residual"] if depth == 0 else [])
    kind = draw(st.sampled_from(kinds + (["batchnorm"] if batchnorm else [])))
    if kind == "batchnorm":
        return {"type": "batchnorm"}, features
    if kind == "linear":
        m = draw(size)
        given_size = draw(st.booleans())  # sizes may be inferred from the previous layer
        return {"type": "linear", "out_features": m, **({"in_features": features} if given_size else {})}, m
    if kind == "activation":
        return {"type": draw(st.sampled_from(ACTIVATIONS))}, features
    if kind == "layernorm":
        return {"type": "layernorm"}, features
    if kind == "dropout":
        return {"type": "dropout", "p": draw(st.sampled_from([0.0, 0.2, 0.5]))}, features
    inner, f = [], features
    for _ in range(draw(st.integers(1, 3))):
        spec, f = draw(layer(f, batchnorm, depth + 1))
        inner.append(spec)
    if f != features:
        inner.append({"type": "linear", "out_features": features})
    return {"type": "residual", "layers": inner}, features


@st.composite
def problem(draw, dtype: str):
    """Return (model, inputs, targets) for a random stack, batch and loss."""
    d = draw(size)
    n = draw(size)
    sequence = draw(st.booleans())
    layers, f = [], d
    if sequence:
        t = draw(st.integers(1, 4))
        h = draw(size)
        return_sequences = draw(st.booleans())
        layers.append({"type": "rnn", "input_size": d, "hidden_size": h, "return_sequences": return_sequences})
        f = h
        input_shape = (n, t, d)
    else:
        input_shape = (n, d)
        layers.append({"type": "linear", "in_features": d, "out_features": draw(size)})
        f = layers[0]["out_features"]
    two_d = not sequence or not return_sequences
    for _ in range(draw(st.integers(0, 4))):
        spec, f = draw(layer(f, batchnorm=two_d and n > 1))
        layers.append(spec)
    out = draw(size)
    layers.append({"type": "linear", "out_features": out})
    losses = ["mse", "bce_with_logits", "huber"] + (["softmax_cross_entropy"] if two_d else [])
    loss = draw(st.sampled_from(losses))
    model = Model.from_spec({"layers": layers, "loss": {"type": loss}, "dtype": dtype,
                             "optimizer": draw(st.sampled_from(OPTIMIZERS)), "seed": draw(st.integers(0, 2**32))})
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    # Random biases and norm weights too: zero biases put ReLU kinks exactly at 0 (a constant
    # layernorm(1) output, a linear of dead units), where no finite difference can agree.
    model.set_parameters({name: rng.standard_normal(p.shape) * 0.5 + (name.endswith(".weight") and p.ndim == 1)
                          for name, p in model.parameters().items()})
    x = rng.standard_normal(input_shape)
    out_shape = (*input_shape[:-1], out) if sequence and return_sequences else (n, out)
    if loss == "softmax_cross_entropy":
        targets = rng.integers(0, out, n) if draw(st.booleans()) else rng.dirichlet(np.ones(out), n)
    elif loss == "bce_with_logits":
        targets = rng.random(out_shape)
    else:
        targets = rng.standard_normal(out_shape)
    return model, x, targets, out_shape


@SETTINGS
@given(problem("float64"))
def test_gradients_check(case):
    model, x, targets, _ = case
    before = live_state(model)
    report = gradcheck(model, x, targets)
    assert report.passed, (model.spec, x, targets, report.to_dict())
    assert live_state(model) == before  # the check ran on a copy


def live_state(model: Model):
    arrays = {**model.parameters(), **model.buffers(), **{"grad." + n: g for n, g in model.gradients().items()}}
    return ({n: a.tobytes() for n, a in arrays.items()}, model.version, model.accumulated,
            str(model.rng.bit_generator.state))


@SETTINGS
@given(problem("float64"))
def test_gradients_check_in_directional_mode_against_a_grad_output(case):
    model, x, _, out_shape = case
    grad_output = np.random.default_rng(0).standard_normal(out_shape)
    report = gradcheck(model, x, grad_output=grad_output, mode="directional")
    assert report.passed, (model.spec, x, targets, report.to_dict())


@SETTINGS
@given(problem("float32"))
def test_shapes_are_as_output_shape_says(case):
    model, x, targets, out_shape = case
    assert model.output_shape(x.shape) == out_shape
    for train in (False, True):
        outputs, tape = model.forward(x, train=train)
        assert outputs.shape == out_shape
    _, grad_outputs = model.loss(outputs, targets)
    assert grad_outputs.shape == out_shape
    grad_x = model.backward(tape, grad_outputs)
    assert grad_x.shape == x.shape
    for name, g in model.gradients().items():
        assert g.shape == model.parameters()[name].shape == model.parameter_shapes()[name]


@SETTINGS
@given(problem("float32"))
def test_float32_stays_float32_through_a_train_step(case):
    model, x, targets, _ = case  # x and targets are float64: the model casts them down, never up
    f32 = np.dtype(np.float32)
    outputs, tape = model.forward(x, train=True)
    assert outputs.dtype == f32
    loss, grad_outputs = model.loss(outputs, targets)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad_outputs.dtype == f32
    assert model.backward(tape, grad_outputs).dtype == f32
    assert model.forward_backward(x, targets) is not None
    assert all(g.dtype == f32 for g in model.gradients().values())
    for _ in range(2):  # the second step runs on state made by the first
        model.forward_backward(x, targets)
        model.step()
    assert all(p.dtype == f32 for p in model.parameters().values())
    assert all(g.dtype == f32 for g in model.gradients().values())
    for name, slots in model.optimizer.state.items():
        for slot, value in slots.items():
            expected = np.dtype(np.int64) if slot == "step" else f32
            assert value.dtype == expected, (name, slot, value.dtype)
    assert all(np.isfinite(p).all() for p in model.parameters().values())
    assert model.forward(x)[0].dtype == f32
    # A float32 model is checked in float64, on a copy, to the same tolerances.
    assert gradcheck(model, x, targets).passed
    assert all(p.dtype == f32 for p in model.parameters().values())
