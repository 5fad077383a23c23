"""ONNX export: a model's eval-mode forward as an ONNX graph, built with the onnx package's helper API.

    proto = to_onnx_model(model)          # onnx.ModelProto, checked by onnx.checker
    data = model.to_onnx()                # the same, serialized

The graph takes `inputs` (the model's dtype, INT64 class indices for an embedding model) and
gives `outputs`, the batch axis symbolic ("batch"). Each layer class has one rule in EXPORTS,
`rule(graph, layer, x, prefix) -> y` (value names in, value names out), a table keyed by class
as LAYERS is keyed by spec type; a class without a rule is an ExportError naming its type.

Parameters keep their state_dict names as initializers where ONNX takes them as they are;
rearranged ones (transposed weights, the recurrent gates in ONNX's order) get a suffix.
Recurrent layers run time-major, as onnxruntime runs ONNX's RNN/LSTM/GRU only with layout 0.
`onnx` is imported here only when an export runs: the engine works without it.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ExportError
from .layers import (LAYERS, ELU, GELU, GRU, LSTM, RNN, Attention, AvgPool2d, BatchNorm, Conv2d, Dropout, Embedding,
                     Flatten, LayerNorm, LeakyReLU, Linear, MaxPool2d, Positional, ReLU, Residual, Sigmoid, Softplus,
                     Tanh)

# Gelu with approximate="tanh" is in opset 20; onnxruntime 1.32 runs every op used here at it.
OPSET = 20
IR_VERSION = 10
BATCH = "batch"
INSTALL_HINT = "ONNX export needs the onnx package: pip install 'gradserve[onnx]'"


def _onnx():
    """Return (onnx, helper, numpy_helper), or raise ExportError naming the extra to install."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ExportError(INSTALL_HINT) from None
    return onnx, helper, numpy_helper


class Graph:
    """The nodes and initializers of a graph being built; every method returns value names."""

    def __init__(self, helper, numpy_helper, dtype: np.dtype) -> None:
        self.helper, self.numpy_helper, self.dtype = helper, numpy_helper, dtype
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()

    def _fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._names:
            name, k = f"{hint}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, value, name: str, dtype=None) -> str:
        """Add an initializer (in the model's dtype unless given another)."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self._fresh(name)
        self.initializers.append(self.numpy_helper.from_array(array.copy(order="C"), name))
        return name

    def ints(self, values, name: str) -> str:
        return self.const(np.asarray(values, np.int64), name, np.int64)

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs):
        """Add a node; return its output name (or the list of them when outputs > 1)."""
        names = [self._fresh(name if outputs == 1 else f"{name}_{k}") for k in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, inputs, names, name=self._fresh(f"{name}_node"), **attrs))
        return names[0] if outputs == 1 else names

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        """x @ weight.T + bias over the last axis of x (any leading axes)."""
        y = self.op("MatMul", [x, self.const(weight.T, f"{name}.weight:T")], f"{name}.matmul")
        return self.op("Add", [y, self.const(bias, f"{name}.bias")], name)


def export_layers(g: Graph, layers: list, x: str, prefix: str = "") -> str:
    """Add every layer's rule in turn; return the last output's name."""
    for i, layer in enumerate(layers):
        rule = EXPORTS.get(type(layer))
        if rule is None:
            kind = next((k for k, cls in LAYERS.items() if cls is type(layer)), type(layer).__name__)
            raise ExportError(f"layer {prefix}{i} ({kind}) has no ONNX export")
        x = rule(g, layer, x, f"{prefix}{i}")
    return x


# ---- the rules, simple to complex --------------------------------------------------------------

def _unary(op_type: str, **attrs):
    return lambda g, layer, x, name: g.op(op_type, [x], name, **attrs)


def _leaky_relu(g, layer, x, name):
    return g.op("LeakyRelu", [x], name, alpha=float(layer.negative_slope))


def _elu(g, layer, x, name):
    return g.op("Elu", [x], name, alpha=float(layer.alpha))


def _softplus(g, layer, x, name):
    # max(x, 0) + log1p(exp(-|x|)), as the engine: no overflow for large x.
    tail = g.op("Exp", [g.op("Neg", [g.op("Abs", [x], f"{name}.abs")], f"{name}.neg")], f"{name}.exp")
    tail = g.op("Log", [g.op("Add", [tail, g.const(1.0, f"{name}.one")], f"{name}.add")], f"{name}.log")
    return g.op("Add", [g.op("Relu", [x], f"{name}.relu"), tail], name)


def _linear(g, layer, x, name):
    return g.linear(x, layer.params["weight"], layer.params["bias"], name)


def _layernorm(g, layer, x, name):
    p = layer.params
    return g.op("LayerNormalization", [x, g.const(p["weight"], f"{name}.weight"), g.const(p["bias"], f"{name}.bias")],
                name, axis=-1, epsilon=float(layer.eps))


def _batchnorm(g, layer, x, name):
    p, b = layer.params, layer.buffers
    inputs = [x, g.const(p["weight"], f"{name}.weight"), g.const(p["bias"], f"{name}.bias"),
              g.const(b["running_mean"], f"{name}.running_mean"), g.const(b["running_var"], f"{name}.running_var")]
    return g.op("BatchNormalization", inputs, name, epsilon=float(layer.eps))


def _residual(g, layer, x, name):
    return g.op("Add", [x, export_layers(g, layer.block, x, f"{name}.block.")], name)


def _flatten(g, layer, x, name):
    return g.op("Flatten", [x], name, axis=1)


def _conv2d(g, layer, x, name):
    p = layer.params
    (ph, pw), kernel = layer.padding, list(p["weight"].shape[2:])
    return g.op("Conv", [x, g.const(p["weight"], f"{name}.weight"), g.const(p["bias"], f"{name}.bias")], name,
                kernel_shape=kernel, strides=list(layer.stride), pads=[ph, pw, ph, pw], dilations=list(layer.dilation))


def _pool(op_type: str, **attrs):
    def rule(g, layer, x, name):
        (ph, pw) = layer.padding
        return g.op(op_type, [x], name, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                    pads=[ph, pw, ph, pw], **attrs)
    return rule


def _embedding(g, layer, x, name):
    return g.op("Gather", [g.const(layer.params["weight"], f"{name}.weight"), x], name, axis=0)


def _positional(g, layer, x, name):
    # x + P[:T], T read from x's shape at run time.
    t = g.op("Shape", [x], f"{name}.steps", start=1, end=2)
    rows = g.op("Slice", [g.const(layer.params["weight"], f"{name}.weight"), g.ints([0], f"{name}.start"), t,
                          g.ints([0], f"{name}.axis")], f"{name}.rows")
    return g.op("Add", [x, rows], name)


# torch stacks the gates i, f, g, o (LSTM) and r, z, n (GRU); ONNX wants i, o, f, c and z, r, h.
GATE_ORDER = {RNN: [0], LSTM: [0, 3, 1, 2], GRU: [1, 0, 2]}
RECURRENT_OPS = {RNN: "RNN", LSTM: "LSTM", GRU: "GRU"}


def _onnx_gates(a: np.ndarray, order: list[int]) -> np.ndarray:
    """Return the (G*H, ...) rows of `a` with their H-row gate blocks in ONNX's order."""
    return np.concatenate([np.split(a, len(order))[k] for k in order]) if len(order) > 1 else a


def _recurrent(g, layer, x, name):
    p, order, hidden = layer.params, GATE_ORDER[type(layer)], layer.hidden_size
    w = g.const(_onnx_gates(p["weight_ih_l0"], order)[None], f"{name}.weight_ih_l0:onnx")  # (1, G*H, D)
    r = g.const(_onnx_gates(p["weight_hh_l0"], order)[None], f"{name}.weight_hh_l0:onnx")  # (1, G*H, H)
    b = np.concatenate([_onnx_gates(p["bias_ih_l0"], order), _onnx_gates(p["bias_hh_l0"], order)])[None]
    attrs = {"linear_before_reset": 1} if isinstance(layer, GRU) else {}
    xt = g.op("Transpose", [x], f"{name}.time_major", perm=[1, 0, 2])  # (T, N, D)
    ys, last = g.op(RECURRENT_OPS[type(layer)], [xt, w, r, g.const(b, f"{name}.bias:onnx")], f"{name}.steps",
                    outputs=2, hidden_size=hidden, **attrs)
    if not layer.return_sequences:  # Y_h: (1, N, H)
        return g.op("Squeeze", [last, g.ints([0], f"{name}.directions")], name)
    ys = g.op("Squeeze", [ys, g.ints([1], f"{name}.directions")], f"{name}.sequence")  # (T, N, H)
    return g.op("Transpose", [ys], name, perm=[1, 0, 2])


def _attention(g, layer, x, name):
    p, heads = layer.params, layer.num_heads
    e = p["out_proj.weight"].shape[0]
    d = e // heads
    qkv = g.linear(x, p["in_proj_weight"], p["in_proj_bias"], f"{name}.in_proj")  # (N, T, 3E)
    qkv = g.op("Reshape", [qkv, g.ints([0, 0, 3, heads, d], f"{name}.heads")], f"{name}.split_heads")
    qkv = g.op("Transpose", [qkv], f"{name}.qkv", perm=[2, 0, 3, 1, 4])  # (3, N, heads, T, d)
    q, k, v = (g.op("Gather", [qkv, g.ints(i, f"{name}.{part}_index")], f"{name}.{part}", axis=0)
               for i, part in enumerate("qkv"))
    q = g.op("Mul", [q, g.const(1 / math.sqrt(d), f"{name}.scale")], f"{name}.q_scaled")  # before the product, as torch
    kt = g.op("Transpose", [k], f"{name}.k_t", perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, kt], f"{name}.scores")  # (N, heads, T, T)
    if layer.causal:
        # -inf above the diagonal, zeros elsewhere: ConstantOfShape (T, T) then the strict upper triangle.
        tt = g.op("Concat", [g.op("Shape", [x], f"{name}.t", start=1, end=2)] * 2, f"{name}.tt", axis=0)
        fill = g.helper.make_tensor("value", g.helper.np_dtype_to_tensor_dtype(g.dtype), [1], [-np.inf])
        full = g.op("ConstantOfShape", [tt], f"{name}.minus_inf", value=fill)
        mask = g.op("Trilu", [full, g.ints(1, f"{name}.above_diagonal")], f"{name}.mask", upper=1)
        scores = g.op("Add", [scores, mask], f"{name}.masked")
    probs = g.op("Softmax", [scores], f"{name}.probs", axis=-1)
    context = g.op("Transpose", [g.op("MatMul", [probs, v], f"{name}.context")], f"{name}.merge", perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [context, g.ints([0, 0, e], f"{name}.embed")], f"{name}.merged")  # (N, T, E)
    return g.linear(merged, p["out_proj.weight"], p["out_proj.bias"], f"{name}.out_proj")


EXPORTS = {
    Linear: _linear,
    ReLU: _unary("Relu"),
    LeakyReLU: _leaky_relu,
    ELU: _elu,
    GELU: _unary("Gelu", approximate="tanh"),
    Sigmoid: _unary("Sigmoid"),
    Tanh: _unary("Tanh"),
    Softplus: _softplus,
    Dropout: _unary("Identity"),  # eval mode
    LayerNorm: _layernorm,
    BatchNorm: _batchnorm,  # eval mode: the running statistics
    Residual: _residual,
    RNN: _recurrent,
    LSTM: _recurrent,
    GRU: _recurrent,
    Embedding: _embedding,
    Positional: _positional,
    Attention: _attention,
    Flatten: _flatten,
    Conv2d: _conv2d,
    MaxPool2d: _pool("MaxPool"),
    AvgPool2d: _pool("AveragePool", count_include_pad=1),
}


# ---- the model -------------------------------------------------------------------------------

def _dims(shape: tuple, names: list[str | None]) -> list:
    """Return ONNX dims: each known size, else its symbolic name (None: unknown, unnamed)."""
    return [size if size is not None else names[i] for i, size in enumerate(shape)]


def _signature(model) -> tuple[list | None, list]:
    """Return the dims of `inputs` and of `outputs`."""
    rule = model.input_rule
    start, out = model.signature()  # any rank flattened: the engine takes it, ONNX wants one, (N, D)
    letters = rule.layout.split(", ") if rule.shape is not None and not rule.exact else [None] * len(start)
    in_dims = _dims(start, [BATCH, *letters[1:]])
    # The time axis carries through a sequence model (rnn sequences, attention, embedding): named alike.
    steps = "T" if len(in_dims) > 1 and in_dims[1] == "T" else None
    out_names = [BATCH] + [steps if i == 1 and len(out) >= 3 else None for i in range(1, len(out))]
    return in_dims, _dims(out, out_names)


def to_onnx_model(model):
    """Return the model's eval-mode forward as an onnx.ModelProto, checked by onnx.checker."""
    onnx, helper, numpy_helper = _onnx()
    g = Graph(helper, numpy_helper, model.dtype)
    y = export_layers(g, model.layers, "inputs")
    g.nodes.append(helper.make_node("Identity", [y], ["outputs"], name="outputs_node"))
    float_type = helper.np_dtype_to_tensor_dtype(model.dtype)
    in_type = helper.np_dtype_to_tensor_dtype(model.input_dtype)
    in_dims, out_dims = _signature(model)
    graph = helper.make_graph(g.nodes, model.spec.get("id", "gradserve"),
                              [helper.make_tensor_value_info("inputs", in_type, in_dims)],
                              [helper.make_tensor_value_info("outputs", float_type, out_dims)],
                              initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gradserve",
                              ir_version=IR_VERSION)
    onnx.checker.check_model(proto)
    return proto


def to_onnx(model) -> bytes:
    """Return the model's eval-mode forward as a serialized ONNX ModelProto."""
    return to_onnx_model(model).SerializeToString()
