"""Gated RNNs, tokens and attention: every layer and option passes a float64 gradient check."""

import numpy as np
import pytest

from core import InputError, Model, SpecError, gradcheck
from tests.core.conftest import check_gradients

LSTM = {"type": "lstm", "input_size": 3, "hidden_size": 4}
GRU = {"type": "gru", "input_size": 3, "hidden_size": 4}
EMBEDDING = {"type": "embedding", "num_embeddings": 7, "embedding_dim": 4}
CE = "softmax_cross_entropy"


@pytest.mark.parametrize("rnn", [LSTM, GRU], ids=["lstm", "gru"])
def test_gated_rnn_last_step(rnn):
    check_gradients([rnn], (2, 5, 3))


@pytest.mark.parametrize("rnn", [LSTM, GRU], ids=["lstm", "gru"])
def test_gated_rnn_return_sequences(rnn):
    check_gradients([{**rnn, "return_sequences": True}], (2, 5, 3))


@pytest.mark.parametrize("rnn", [LSTM, GRU], ids=["lstm", "gru"])
def test_gated_rnn_single_step(rnn):
    check_gradients([rnn], (3, 1, 3))


@pytest.mark.parametrize("rnn", [LSTM, GRU], ids=["lstm", "gru"])
def test_gated_rnns_stack(rnn):
    check_gradients([{**rnn, "return_sequences": True}, {"type": rnn["type"], "hidden_size": 3},
                     {"type": "linear", "out_features": 2}], (2, 4, 3), CE, labels=True)


def test_lstm_backward_in_blocks_of_steps(monkeypatch):
    """Backward transposes the gates' gradients a block of steps at a time (lstm.BLOCK_BYTES): blocks
    of 2 of 5 steps (the last one short) give the gradients of one block, and pass the check."""
    from core.layers import lstm

    spec = [{**LSTM, "return_sequences": True}, {"type": "lstm", "hidden_size": 4}]  # the first one's input grad too
    x = np.random.default_rng(0).standard_normal((2, 5, 3))

    def gradients():
        model = Model.from_spec({"layers": spec, "loss": {"type": "mse"}, "dtype": "float64", "seed": 0})
        model.forward_backward(x, np.zeros((2, 4)))
        return {name: g.copy() for name, g in model.gradients().items()}

    whole = gradients()
    monkeypatch.setattr(lstm, "BLOCK_BYTES", 4 * 4 * 2 * 8 * 2)  # (4H, N) float64 steps: 2 a block
    in_blocks = gradients()
    for name, g in whole.items():
        np.testing.assert_allclose(in_blocks[name], g, rtol=1e-12, atol=1e-14, err_msg=name)
    check_gradients(spec, (2, 5, 3))


def test_lstm_feeds_a_gru():
    check_gradients([{**LSTM, "return_sequences": True}, {"type": "gru", "hidden_size": 3, "return_sequences": True}],
                    (2, 4, 3))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention(causal):
    check_gradients([{"type": "attention", "embed_dim": 6, "num_heads": 2, "causal": causal}], (2, 4, 6))


def test_attention_with_one_head():
    check_gradients([{"type": "attention", "embed_dim": 4, "num_heads": 1}], (2, 3, 4))


def test_positional():
    check_gradients([{"type": "positional", "max_len": 6, "embedding_dim": 3}], (2, 4, 3))


def test_embedding_checks_its_parameters_only():
    check_gradients([EMBEDDING, {"type": "linear", "out_features": 3}], (3, 5))


def test_token_model_end_to_end():
    block = {"type": "residual",
             "layers": [{"type": "layernorm"}, {"type": "attention", "num_heads": 2, "causal": True}]}
    check_gradients([EMBEDDING, {"type": "positional", "max_len": 5}, block, {"type": "linear", "out_features": 7}],
                    (2, 5), CE, labels=True)


def test_cross_entropy_per_position_with_labels():
    check_gradients([{**LSTM, "return_sequences": True}, {"type": "linear", "out_features": 3}], (2, 4, 3),
                    CE, labels=True)


def test_cross_entropy_per_position_with_probabilities():
    check_gradients([{**LSTM, "return_sequences": True}, {"type": "linear", "out_features": 3}], (2, 4, 3), CE)


def test_cross_entropy_per_position_with_ignore_index():
    check_gradients([{**LSTM, "return_sequences": True}, {"type": "linear", "out_features": 3}], (3, 4, 3),
                    {"type": CE, "ignore_index": -100}, labels=True)


# ---- specs, inputs and targets ------------------------------------------------------------------

def errors_of(spec: dict) -> list[dict]:
    with pytest.raises(SpecError) as e:
        Model.from_spec(spec)
    return e.value.errors


def test_parameters_are_named_and_counted_as_torch():
    model = Model.from_spec({"layers": [EMBEDDING, {"type": "positional", "max_len": 5},
                                        {"type": "attention", "num_heads": 2},
                                        {"type": "lstm", "hidden_size": 3}, {"type": "linear", "out_features": 2}]})
    assert model.parameter_shapes() == {
        "0.weight": (7, 4), "1.weight": (5, 4),
        "2.in_proj_weight": (12, 4), "2.in_proj_bias": (12,), "2.out_proj.weight": (4, 4), "2.out_proj.bias": (4,),
        "3.weight_ih_l0": (12, 4), "3.weight_hh_l0": (12, 3), "3.bias_ih_l0": (12,), "3.bias_hh_l0": (12,),
        "4.weight": (2, 3), "4.bias": (2,),
    }
    assert model.num_parameters == sum(p.size for p in model.parameters().values())
    assert model.input_dtype == np.int64 and model.parameters()["0.weight"].dtype == np.float32


def test_initializations_are_as_torch():
    e, h = 64, 32
    model = Model.from_spec({"layers": [{"type": "embedding", "num_embeddings": 500, "embedding_dim": e},
                                        {"type": "positional", "max_len": 500}, {"type": "attention", "num_heads": 4},
                                        {"type": "gru", "hidden_size": h}]})
    p = model.parameters()
    assert abs(p["0.weight"].std() - 1) < 0.02 and abs(p["1.weight"].std() - 0.02) < 0.001
    assert np.abs(p["2.in_proj_weight"]).max() <= np.sqrt(6 / (4 * e)) and not p["2.in_proj_bias"].any()
    assert np.abs(p["2.out_proj.weight"]).max() <= np.sqrt(6 / (2 * e)) and not p["2.out_proj.bias"].any()
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert np.abs(p[f"3.{name}"]).max() <= 1 / np.sqrt(h) and np.abs(p[f"3.{name}"]).max() > 0.9 / np.sqrt(h)


def test_embed_dim_must_divide_into_heads():
    errors = errors_of({"layers": [{"type": "attention", "embed_dim": 6, "num_heads": 4}]})
    assert errors[0]["loc"] == ["layers", 0, "num_heads"] and "not divisible" in errors[0]["msg"]


@pytest.mark.parametrize("layers, loc", [
    ([{"type": "linear", "in_features": 3, "out_features": 4}, EMBEDDING], ["layers", 1]),
    ([{"type": "dropout", "p": 0.1}, EMBEDDING], ["layers", 1]),
    ([{"type": "residual", "layers": [EMBEDDING]}], ["layers", 0, "layers", 0]),
], ids=["after_linear", "after_dropout", "in_a_block"])
def test_an_embedding_comes_first(layers, loc):
    errors = errors_of({"layers": layers})
    assert errors[0]["loc"] == loc and "first layer" in errors[0]["msg"]


def test_gated_rnns_need_sequences():
    errors = errors_of({"layers": [{"type": "linear", "in_features": 3, "out_features": 4},
                                   {"type": "gru", "hidden_size": 2}]})
    assert errors[0]["loc"] == ["layers", 1] and "(N, T, D)" in errors[0]["msg"]


def test_a_sequence_longer_than_max_len_is_an_input_error():
    model = Model.from_spec({"layers": [EMBEDDING, {"type": "positional", "max_len": 5}]})
    model.forward(np.zeros((2, 5), np.int64))
    with pytest.raises(InputError) as e:
        model.forward(np.zeros((2, 6), np.int64))
    assert e.value.errors[0]["loc"] == ["inputs"] and "longer than max_len=5" in e.value.errors[0]["msg"]


def test_an_embedding_takes_indices_in_range_and_keeps_them_integer():
    model = Model.from_spec({"layers": [EMBEDDING]})
    assert model.validate_inputs(np.array([[0, 6]])).dtype == np.int64
    for bad in (np.array([[0, 7]]), np.array([[-1, 0]]), np.array([[0.0, 1.0]])):
        with pytest.raises(InputError) as e:
            model.forward(bad)
        assert e.value.errors[0]["loc"] == ["inputs"]


def test_float_models_take_their_dtype():
    assert Model.from_spec({"layers": [LSTM], "dtype": "float64"}).input_dtype == np.float64


def test_gradcheck_of_an_embedding_model_reports_no_input_check():
    model = Model.from_spec({"layers": [EMBEDDING], "loss": {"type": "mse"}})
    report = gradcheck(model, np.array([[1, 2, 2]]), np.zeros((1, 3, 4)))
    assert report.passed and report.inputs is None and report.parameters["0.weight"].passed


def test_labels_must_fit_per_position_outputs():
    model = Model.from_spec({"layers": [{**LSTM, "return_sequences": True}], "loss": {"type": CE, "ignore_index": -1}})
    x = np.zeros((2, 3, 3))
    assert model.forward_backward(x, np.array([[0, -1, 3], [1, 2, -1]])) > 0
    for bad, says in ((np.array([0, 1]), "(N, T)"), (np.array([[0, 4, 0], [0, 0, 0]]), "[0, 4)"),
                      (np.full((2, 3, 4), 0.25), "labels, not probabilities")):
        with pytest.raises(InputError) as e:
            model.forward_backward(x, bad)
        assert says in e.value.errors[0]["msg"]


def test_ignore_index_must_be_an_integer():
    errors = errors_of({"layers": [LSTM], "loss": {"type": CE, "ignore_index": "pad"}})
    assert errors[0]["loc"] == ["loss", "ignore_index"]


def test_all_positions_ignored_gives_nan_loss_and_zero_gradient_as_torch():
    model = Model.from_spec({"layers": [{**LSTM, "return_sequences": True}], "loss": {"type": CE, "ignore_index": 0}})
    loss = model.forward_backward(np.ones((1, 2, 3)), np.zeros((1, 2), np.int64))
    assert np.isnan(loss) and all(not g.any() for g in model.gradients().values())


TOKEN_MODEL = {
    "layers": [EMBEDDING, {"type": "positional", "max_len": 5},
               {"type": "residual", "layers": [{"type": "attention", "num_heads": 2, "causal": True}]},
               {"type": "lstm", "hidden_size": 3, "return_sequences": True}, {"type": "gru", "hidden_size": 3},
               {"type": "linear", "out_features": 2}],
    "loss": {"type": CE}, "optimizer": {"type": "adam", "lr": 0.01},
}
TOKENS = np.array([[0, 1, 6, 2], [3, 3, 5, 4]])


def test_float32_stays_float32_through_a_train_step():
    model = Model.from_spec(TOKEN_MODEL)
    outputs, tape = model.forward(TOKENS, train=True)
    loss, grad_outputs = model.loss(outputs, np.array([0, 1]))
    model.backward(tape, grad_outputs)
    assert outputs.dtype == grad_outputs.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.gradients().values())
    model.step()
    assert all(p.dtype == np.float32 for p in model.parameters().values())


def test_checkpoint_round_trip_keeps_dotted_names_and_optimizer_state():
    model = Model.from_spec(TOKEN_MODEL)
    model.forward_backward(TOKENS, np.array([0, 1]))
    model.step()
    copy = Model.from_bytes(model.to_bytes())
    assert "2.block.0.out_proj.weight" in copy.parameters()
    assert all(np.array_equal(copy.parameters()[k], v) for k, v in model.parameters().items())
    assert copy.forward_backward(TOKENS, np.array([0, 1])) == model.forward_backward(TOKENS, np.array([0, 1]))
    copy.step()
    model.step()
    assert all(np.array_equal(copy.parameters()[k], v) for k, v in model.parameters().items())
