"""Every layer and every option that changes its math passes a float64 gradient check."""

import numpy as np
import pytest

from core import Model, gradcheck
from tests.core.conftest import check_gradients

LIN = {"type": "linear", "in_features": 4, "out_features": 5}


def test_linear():
    check_gradients([LIN], (3, 4))


def test_linear_on_sequences():
    check_gradients([{"type": "rnn", "input_size": 3, "hidden_size": 4, "return_sequences": True},
                     {"type": "linear", "out_features": 2}], (2, 3, 3))


@pytest.mark.parametrize("activation", [
    {"type": "relu"}, {"type": "leaky_relu"}, {"type": "leaky_relu", "negative_slope": 0.2},
    {"type": "elu"}, {"type": "elu", "alpha": 0.5}, {"type": "gelu"}, {"type": "sigmoid"},
    {"type": "tanh"}, {"type": "softplus"},
])
def test_activation(activation):
    check_gradients([LIN, activation], (6, 4))


def test_dropout_in_training_holds_its_mask():
    check_gradients([LIN, {"type": "dropout", "p": 0.4}, {"type": "linear", "out_features": 3}], (8, 4))


def test_dropout_in_eval_is_identity():
    check_gradients([LIN, {"type": "dropout", "p": 0.4}], (8, 4), train=False)


def test_layernorm():
    check_gradients([LIN, {"type": "layernorm"}, {"type": "linear", "out_features": 3}], (5, 4))


def test_batchnorm_train():
    check_gradients([LIN, {"type": "batchnorm"}, {"type": "linear", "out_features": 3}], (6, 4))


def test_batchnorm_eval():
    check_gradients([LIN, {"type": "batchnorm"}, {"type": "linear", "out_features": 3}], (6, 4), train=False)


def test_residual():
    check_gradients([LIN, {"type": "residual", "layers": [{"type": "linear", "out_features": 5}, {"type": "tanh"}]}],
                    (4, 4))


def test_nested_residual():
    inner = {"type": "residual", "layers": [{"type": "linear", "in_features": 5, "out_features": 5}, {"type": "gelu"}]}
    check_gradients([LIN, {"type": "residual", "layers": [inner, {"type": "layernorm"}]}], (4, 4))


def test_rnn_last_step():
    check_gradients([{"type": "rnn", "input_size": 3, "hidden_size": 4}], (2, 5, 3))


def test_rnn_return_sequences():
    check_gradients([{"type": "rnn", "input_size": 3, "hidden_size": 4, "return_sequences": True}], (2, 5, 3))


def test_rnn_single_step():
    check_gradients([{"type": "rnn", "input_size": 3, "hidden_size": 4}], (3, 1, 3))


def test_flatten():
    check_gradients([{"type": "flatten"}, {"type": "linear", "in_features": 6, "out_features": 2}], (3, 2, 3))


def test_flatten_after_sequence():
    check_gradients([{"type": "rnn", "input_size": 2, "hidden_size": 3, "return_sequences": True},
                     {"type": "flatten"}, {"type": "linear", "in_features": 12, "out_features": 2}], (2, 4, 2))


def test_residual_mlp_with_layernorm_end_to_end():
    block = {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out_features": 8},
                                            {"type": "relu"}, {"type": "linear", "out_features": 8}]}
    check_gradients([{"type": "linear", "in_features": 5, "out_features": 8}, block, block,
                     {"type": "layernorm"}, {"type": "linear", "out_features": 3}],
                    (6, 5), "softmax_cross_entropy", labels=True)


def test_rnn_model_end_to_end():
    check_gradients([{"type": "rnn", "input_size": 3, "hidden_size": 6}, {"type": "tanh"},
                     {"type": "linear", "out_features": 2}], (4, 7, 3), "softmax_cross_entropy", labels=True)


def test_directional_mode_checks_big_models_in_one_pass_per_parameter():
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": 50, "out_features": 40}, {"type": "tanh"},
                                        {"type": "linear", "out_features": 3}], "loss": {"type": "mse"}})
    x = np.random.default_rng(0).standard_normal((8, 50))
    report = gradcheck(model, x, np.zeros((8, 3)), mode="directional")
    assert report.passed and report.parameters["0.weight"].entries == 1


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    from core.layers.activations import Tanh

    monkeypatch.setattr(Tanh, "backward", lambda self, dy, y: dy * (1 - y))  # missing the square
    model = Model.from_spec({"layers": [LIN, {"type": "tanh"}], "loss": {"type": "mse"}, "dtype": "float64"})
    x = np.random.default_rng(0).standard_normal((3, 4))
    report = gradcheck(model, x, np.zeros((3, 5)), max_entries=None)
    assert not report.passed and not report.parameters["0.weight"].passed


def test_gradcheck_leaves_the_live_model_alone():
    model = Model.from_spec({"layers": [LIN, {"type": "batchnorm"}, {"type": "dropout", "p": 0.5}],
                             "loss": {"type": "mse"}})
    before = {k: v.copy() for k, v in {**model.parameters(), **model.buffers()}.items()}
    rng_state = model.rng.bit_generator.state
    gradcheck(model, np.ones((4, 4)), np.zeros((4, 5)))
    after = {**model.parameters(), **model.buffers()}
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model.rng.bit_generator.state == rng_state and model.accumulated == 0
