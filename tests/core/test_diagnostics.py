"""Diagnostics: dead ReLUs, saturated activations and exploding updates are flagged; the report is JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import Model
from core import diagnostics

RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, 6))
LABELS = RNG.integers(0, 3, 32)


def mlp(activation: str, optimizer=None, **extra) -> Model:
    return Model.from_spec({
        "layers": [{"type": "linear", "in_features": 6, "out_features": 16}, {"type": activation},
                   {"type": "linear", "out_features": 3}],
        "loss": {"type": "softmax_cross_entropy"}, "optimizer": optimizer or {"type": "sgd", "lr": 0.01}, **extra,
    })


def test_healthy_model_raises_no_activation_flags():
    model = mlp("relu")
    model.forward_backward(X, LABELS)
    model.step()
    report = model.diagnostics()
    assert report["flags"]["vanishing_gradients"] == []
    assert report["flags"]["dead_relu_layers"] == [] and report["flags"]["saturated_layers"] == []
    assert report["grad_source"] == "last_step" and report["step"] == 1


def test_healthy_model_is_not_flagged_exploding_after_its_first_step():
    # Zero-initialized biases move by 100% of their norm on the first step; that is not an explosion.
    model = mlp("relu")
    model.forward_backward(X, LABELS)
    model.step()
    report = model.diagnostics()
    assert report["grad_norm"] < 10
    assert report["flags"]["exploding_gradients"] is False


def test_dead_relu_is_flagged():
    model = mlp("relu")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.bias"][:] = -100.0  # |x @ W.T| is far below 100 for these inputs: every unit is off
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["flags"]["dead_relu_layers"] == ["1"]
    assert report["layers"][1]["dead_fraction"] == 1.0
    assert report["layers"][1]["dead"] is True
    # No gradient reaches the first layer through dead units.
    assert report["parameters"]["0.weight"]["grad_norm"] == 0.0
    assert "0.weight" in report["flags"]["vanishing_gradients"]


def test_dead_relu_inside_a_residual_block_is_flagged():
    model = Model.from_spec({
        "layers": [{"type": "linear", "in_features": 6, "out_features": 8},
                   {"type": "residual", "layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                                                   {"type": "linear", "out_features": 8}]},
                   {"type": "linear", "out_features": 3}],
        "loss": {"type": "softmax_cross_entropy"},
    })
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["1.block.0.bias"][:] = -100.0
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    assert model.diagnostics()["flags"]["dead_relu_layers"] == ["1.block.1"]


def test_partly_dead_relu_below_the_threshold_is_not_flagged():
    model = mlp("relu")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.bias"][:4] = -100.0  # 4 of 16 units dead: a quarter, under DEAD_FRACTION
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["layers"][1]["dead_fraction"] == 0.25
    assert report["flags"]["dead_relu_layers"] == []


def test_saturated_tanh_is_flagged():
    model = mlp("tanh")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.weight"] *= 200.0  # pre-activations of size ~100: tanh is at ±1
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["flags"]["saturated_layers"] == ["1"]
    assert report["layers"][1]["saturated_fraction"] > 0.9


def test_unsaturated_tanh_is_not_flagged():
    model = mlp("tanh")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.weight"] *= 0.01
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["layers"][1]["saturated_fraction"] == 0.0
    assert report["flags"]["saturated_layers"] == []


def test_saturated_sigmoid_is_flagged():
    model = mlp("sigmoid")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.bias"][:] = 50.0
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    assert model.diagnostics()["flags"]["saturated_layers"] == ["1"]


def test_huge_learning_rate_is_flagged_as_exploding():
    model = mlp("relu", {"type": "sgd", "lr": 1e4})
    model.forward_backward(X, LABELS)
    model.step()
    report = model.diagnostics()
    assert report["flags"]["exploding_gradients"] is True
    # The weight matrix itself moved by far more than a tenth of its norm.
    assert report["parameters"]["0.weight"]["update_to_param"] > diagnostics.EXPLODING_UPDATE_RATIO


def test_huge_gradient_norm_is_flagged_as_exploding():
    model = mlp("relu")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["2.weight"] *= 1e5  # logits ~1e5: a wrong class gives dL/dW of that size
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["grad_source"] == "accumulated"
    assert report["grad_norm"] > diagnostics.EXPLODING_NORM
    assert report["flags"]["exploding_gradients"] is True


def test_update_ratio_is_update_norm_over_parameter_norm():
    model = mlp("relu", {"type": "sgd", "lr": 0.1})
    before = {n: p.copy() for n, p in model.parameters().items()}
    model.forward_backward(X, LABELS)
    model.step()
    report = model.diagnostics()
    w = model.parameters()["0.weight"]
    entry = report["parameters"]["0.weight"]
    assert abs(entry["param_norm"] - np.linalg.norm(w.astype(np.float64))) < 1e-4
    assert abs(entry["update_norm"] - np.linalg.norm(w - before["0.weight"])) < 1e-5
    assert abs(entry["update_to_param"] - entry["update_norm"] / entry["param_norm"]) < 1e-12


def test_report_is_json_serializable_in_every_state():
    model = mlp("tanh", {"type": "adam"}, dtype="float64")
    json.dumps(model.diagnostics(), allow_nan=False)  # before any training
    model.forward_backward(X, LABELS)
    json.dumps(model.diagnostics(), allow_nan=False)  # with pending gradients
    model.step()
    text = json.dumps(model.diagnostics(), allow_nan=False)  # after a step
    assert json.loads(text)["step"] == 1


def test_report_of_a_nested_model_is_json_serializable():
    model = Model.from_spec({
        "layers": [{"type": "rnn", "input_size": 3, "hidden_size": 4, "return_sequences": True},
                   {"type": "flatten"}, {"type": "linear", "in_features": 8, "out_features": 8}, {"type": "relu"},
                   {"type": "residual", "layers": [{"type": "batchnorm"}, {"type": "linear", "out_features": 8},
                                                   {"type": "sigmoid"}]},
                   {"type": "linear", "out_features": 2}],
        "loss": {"type": "mse"}, "optimizer": {"type": "rmsprop"},
    })
    x = RNG.standard_normal((5, 2, 3))
    model.forward_backward(x, np.zeros((5, 2)))
    model.step()
    report = json.loads(json.dumps(model.diagnostics(), allow_nan=False))
    assert [e["type"] for e in report["layers"]] == ["rnn", "flatten", "linear", "relu", "residual", "linear"]
    assert set(report["parameters"]) == set(model.parameters())


def test_step_record_is_none_before_the_first_step():
    assert mlp("relu").step_record() is None


def test_step_record_holds_the_step_its_mean_loss_and_norms():
    model = mlp("relu")
    losses = [model.forward_backward(X[:16], LABELS[:16]), model.forward_backward(X[16:], LABELS[16:])]
    result = model.step(lr=0.05)
    record = model.step_record()
    assert record["step"] == result.step == 1 and record["lr"] == 0.05
    assert record["loss"] == (losses[0] + losses[1]) / 2
    assert (record["grad_norm"], record["update_norm"]) == (result.grad_norm, result.update_norm)
    for name, p in model.parameters().items():
        stats = record["parameters"][name]
        assert stats["param_norm"] == pytest.approx(np.linalg.norm(p))
        assert stats["update_to_param"] == pytest.approx(model.history.update_norms[name] / np.linalg.norm(p))
    assert set(record["activations"]) == {"1"} and set(record["activations"]["1"]) == {"dead_fraction"}
    assert record["flags"] == []
    json.dumps(record)


def test_step_record_of_a_grad_output_step_has_no_loss():
    model = mlp("relu")
    model.forward_backward(X, grad_output=np.ones((32, 3)))
    model.step()
    assert model.step_record()["loss"] is None


def test_zero_grad_forgets_the_losses_of_the_batches_it_clears():
    model = mlp("relu")
    model.forward_backward(X, LABELS * 0)
    model.zero_grad()
    loss = model.forward_backward(X, LABELS)
    model.step()
    assert model.step_record()["loss"] == loss


def test_step_record_names_each_flag_with_its_layer():
    model = mlp("relu")
    params = {n: p.copy() for n, p in model.parameters().items()}
    params["0.bias"][:] = -100.0  # every unit of the ReLU off
    model.set_parameters(params)
    model.forward_backward(X, LABELS)
    model.step()
    assert {"dead_relu_layers:1", "vanishing_gradients:0.weight"} <= set(model.step_record()["flags"])
    assert diagnostics.flag_names(model.diagnostics()["flags"]) == model.step_record()["flags"]
