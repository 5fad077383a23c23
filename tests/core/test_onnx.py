"""ONNX export: onnxruntime runs the exported graph and gives the engine's eval-mode forward."""

from __future__ import annotations

import numpy as np
import pytest

from core import ExportError, Model
from core.layers import LAYERS
from tests.optional import need

onnx = need("onnx")
ort = need("onnxruntime")

CONV = {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3}

# One model per layer type: its layers and one example's shape (after the batch axis).
CASES = {
    "linear": ([{"type": "linear", "in_features": 4, "out_features": 3}], (4,)),
    "relu": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "relu"}], (4,)),
    "leaky_relu": ([{"type": "linear", "in_features": 4, "out_features": 6},
                    {"type": "leaky_relu", "negative_slope": 0.2}], (4,)),
    "elu": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "elu", "alpha": 0.7}], (4,)),
    "gelu": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "gelu"}], (4,)),
    "sigmoid": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "sigmoid"}], (4,)),
    "tanh": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "tanh"}], (4,)),
    "softplus": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "softplus"}], (4,)),
    "dropout": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "dropout", "p": 0.5}], (4,)),
    "layernorm": ([{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "layernorm"}], (4,)),
    "batchnorm": ([CONV, {"type": "batchnorm"}], (2, 6, 5)),
    "residual": ([{"type": "linear", "in_features": 4, "out_features": 6},
                  {"type": "residual", "layers": [{"type": "linear", "out_features": 6}, {"type": "tanh"}]}], (4,)),
    "rnn": ([{"type": "rnn", "input_size": 3, "hidden_size": 5, "return_sequences": True},
             {"type": "rnn", "hidden_size": 4}], (6, 3)),
    "lstm": ([{"type": "lstm", "input_size": 3, "hidden_size": 5, "return_sequences": True},
              {"type": "lstm", "hidden_size": 4}], (6, 3)),
    "gru": ([{"type": "gru", "input_size": 3, "hidden_size": 5, "return_sequences": True},
             {"type": "gru", "hidden_size": 4}], (6, 3)),
    "embedding": ([{"type": "embedding", "num_embeddings": 7, "embedding_dim": 4},
                   {"type": "linear", "out_features": 3}], (5,)),
    "positional": ([{"type": "positional", "max_len": 9, "embedding_dim": 4}], (5, 4)),
    "attention": ([{"type": "attention", "embed_dim": 6, "num_heads": 2},
                   {"type": "attention", "num_heads": 3, "causal": True}], (5, 6)),
    "flatten": ([{"type": "flatten"}, {"type": "linear", "in_features": 12, "out_features": 3}], (3, 4)),
    "conv2d": ([{**CONV, "stride": [1, 2], "padding": [1, 2], "dilation": [2, 1]}], (2, 8, 9)),
    "maxpool2d": ([CONV, {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1}], (2, 8, 9)),
    "avgpool2d": ([CONV, {"type": "avgpool2d", "kernel_size": [2, 3], "padding": 1}], (2, 8, 9)),
}

IMAGE_STACK = ([
    {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
    {"type": "residual", "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
                                    {"type": "batchnorm"}, {"type": "gelu"}]},
    {"type": "flatten"}, {"type": "linear", "in_features": 64, "out_features": 8}, {"type": "batchnorm"}, {"type": "dropout", "p": 0.3},
    {"type": "layernorm"}, {"type": "linear", "out_features": 2},
], (1, 8, 8))

SEQUENCE_STACK = ([
    {"type": "rnn", "input_size": 3, "hidden_size": 6, "return_sequences": True},
    {"type": "residual", "layers": [{"type": "linear", "out_features": 6}, {"type": "tanh"}]},
    {"type": "layernorm"},
    {"type": "rnn", "hidden_size": 5},
    {"type": "batchnorm"},
    {"type": "linear", "out_features": 2},
], (7, 3))


def make_model(layers, example_shape, dtype="float32", train_steps=0):
    """Return a model whose parameters are all random (biases too); `train_steps` steps of SGD
    on random data give batchnorm trained running statistics."""
    model = Model.from_spec({"layers": layers, "loss": {"type": "mse"}, "optimizer": {"type": "sgd", "lr": 0.05},
                             "dtype": dtype, "seed": 3})
    rng = np.random.default_rng(7)
    model.set_parameters({name: p + 0.3 * rng.standard_normal(p.shape) for name, p in model.parameters().items()})
    for _ in range(train_steps):
        x = inputs_for(model, example_shape, 8, rng)
        model.train_step(x, rng.standard_normal(model.output_shape(x.shape)))
    return model


def inputs_for(model, example_shape, batch, rng):
    if model.input_rule.classes is not None:
        return rng.integers(0, model.input_rule.classes, (batch, *example_shape))
    return rng.standard_normal((batch, *example_shape)).astype(model.dtype)


def assert_runtime_matches(model, example_shape, atol=1e-5):
    """Export, check, and compare onnxruntime's outputs to the engine's eval forward at batch 1 and 5."""
    proto = model.to_onnx_model()
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["inputs"]
    assert [o.name for o in proto.graph.output] == ["outputs"]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(model.to_onnx(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for batch in (1, 5):
        x = inputs_for(model, example_shape, batch, rng)
        expected, _ = model.forward(x)
        if model.input_rule.shape is None:  # a model starting with flatten: ONNX takes (N, D)
            x = x.reshape(batch, -1)
        (got,) = session.run(["outputs"], {"inputs": x})
        assert got.dtype == model.dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=atol, atol=atol)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_every_layer_type_exports(kind):
    layers, example_shape = CASES[kind]  # a new layer type needs its case here
    assert_runtime_matches(make_model(layers, example_shape), example_shape)


@pytest.mark.parametrize("stack", [IMAGE_STACK, SEQUENCE_STACK], ids=["image", "sequence"])
def test_a_trained_mixed_stack_exports(stack):
    model = make_model(*stack, train_steps=3)
    assert not np.allclose(model.buffers()["1.running_mean" if stack is IMAGE_STACK else "4.running_mean"], 0)
    assert_runtime_matches(model, stack[1])


# onnxruntime's CPU kernels for Conv, RNN/LSTM/GRU, LeakyRelu and Elu are float32 only: a float64
# model of the layers it runs in double.
DOUBLE_STACK = ([
    {"type": "embedding", "num_embeddings": 7, "embedding_dim": 6},
    {"type": "positional", "max_len": 9},
    {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "attention", "num_heads": 2, "causal": True}]},
    {"type": "residual", "layers": [{"type": "linear", "out_features": 6}, {"type": "softplus"},
                                    {"type": "dropout", "p": 0.1}, {"type": "linear", "out_features": 6}]},
    {"type": "flatten"}, {"type": "linear", "in_features": 30, "out_features": 8}, {"type": "batchnorm"},
    {"type": "tanh"}, {"type": "linear", "out_features": 3}, {"type": "sigmoid"},
], (5,))


def test_a_float64_model_exports_as_double():
    model = make_model(*DOUBLE_STACK, dtype="float64", train_steps=3)
    proto = model.to_onnx_model()
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert_runtime_matches(model, DOUBLE_STACK[1], atol=1e-10)


def test_an_embedding_model_takes_int64_indices():
    model = make_model(*CASES["embedding"])
    assert model.to_onnx_model().graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_without_onnx_the_export_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(ExportError, match=r"pip install 'gradserve\[onnx\]'"):
        make_model(*CASES["linear"]).to_onnx()
