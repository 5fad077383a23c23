"""Diagnostics of gated RNNs and attention: gate saturation is measured and flagged, norms are per layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import Model

X = np.random.default_rng(0).standard_normal((8, 6, 3))
LABELS = np.random.default_rng(1).integers(0, 2, 8)


def gated(kind: str, scale: float = 1.0) -> Model:
    model = Model.from_spec({"layers": [{"type": kind, "input_size": 3, "hidden_size": 5},
                                        {"type": "linear", "out_features": 2}],
                             "loss": {"type": "softmax_cross_entropy"}})
    model.set_parameters({name: p * (scale if name.startswith("0.") else 1) for name, p in model.parameters().items()})
    return model


@pytest.mark.parametrize("kind, gates", [("lstm", {"i", "f", "g", "o"}), ("gru", {"r", "z", "n"})])
def test_gates_of_a_fresh_gated_rnn_are_not_saturated(kind, gates):
    model = gated(kind)
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    layer = report["layers"][0]
    assert layer["saturated_fraction"] < 0.05 and set(layer["gates"]) == gates
    assert report["flags"]["saturated_layers"] == []
    assert layer["grad_norm"] > 0 and report["parameters"]["0.weight_hh_l0"]["grad_norm"] > 0


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_saturated_gates_are_flagged(kind):
    model = gated(kind, scale=100.0)  # pre-activations of size ~100: every sigmoid at 0 or 1, every tanh at +-1
    model.forward_backward(X, LABELS)
    report = model.diagnostics()
    assert report["layers"][0]["saturated_fraction"] > 0.9
    assert report["flags"]["saturated_layers"] == ["0"]


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _gates_by_hand(kind: str, params: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every step's gate values of an lstm or gru layer "0." from zero state, by torch's equations in float64."""
    w_ih, w_hh, b_ih, b_hh = (params[f"0.{name}_l0"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    hidden = w_hh.shape[1]
    h, c, seen = np.zeros((len(x), hidden)), np.zeros((len(x), hidden)), []
    for step in range(x.shape[1]):
        a_x, a_h = x[:, step] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if kind == "lstm":
            a = np.split(a_x + a_h, 4, axis=1)
            i, f, g, o = _sigmoid(a[0]), _sigmoid(a[1]), np.tanh(a[2]), _sigmoid(a[3])
            c = f * c + i * g
            h = o * np.tanh(c)
            seen.append({"i": i, "f": f, "g": g, "o": o})
        else:
            (x_r, x_z, x_n), (h_r, h_z, h_n) = np.split(a_x, 3, axis=1), np.split(a_h, 3, axis=1)
            r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
            n = np.tanh(x_n + r * h_n)
            h = (1 - z) * n + z * h
            seen.append({"r": r, "z": z, "n": n})
    return {name: np.stack([step[name] for step in seen]) for name in seen[0]}


@pytest.mark.parametrize("kind, tanh_gate", [("lstm", "g"), ("gru", "n")])
def test_gate_saturation_is_the_fraction_of_gate_values_near_their_bounds(kind, tanh_gate):
    model = Model.from_spec({"layers": [{"type": kind, "input_size": 3, "hidden_size": 5},
                                        {"type": "linear", "out_features": 2}],
                             "loss": {"type": "softmax_cross_entropy"}, "dtype": "float64"})
    model.set_parameters({name: p * (4.0 if name.startswith("0.") else 1) for name, p in model.parameters().items()})
    model.forward_backward(X, LABELS)
    measured = model.diagnostics()["layers"][0]["gates"]
    expected = {name: float(np.mean(np.abs(g) > 0.99 if name == tanh_gate else (g < 0.01) | (g > 0.99)))
                for name, g in _gates_by_hand(kind, model.parameters(), X).items()}
    assert 0 < min(expected.values()) and max(expected.values()) < 1  # some saturated, not all: the count tells
    assert measured == pytest.approx(expected, abs=1e-12)


def test_report_of_a_transformer_names_its_layers_and_is_json():
    model = Model.from_spec({
        "layers": [{"type": "embedding", "num_embeddings": 5, "embedding_dim": 4}, {"type": "positional", "max_len": 3},
                   {"type": "residual", "layers": [{"type": "attention", "num_heads": 2, "causal": True}]},
                   {"type": "lstm", "hidden_size": 3}, {"type": "linear", "out_features": 2}],
        "loss": {"type": "softmax_cross_entropy"},
    })
    model.forward_backward(np.array([[0, 1, 4], [3, 3, 2]]), np.array([0, 1]))
    model.step()
    report = json.loads(json.dumps(model.diagnostics()))
    assert "2.block.0.out_proj.weight" in report["parameters"]
    assert [layer["type"] for layer in report["layers"]] == ["embedding", "positional", "residual", "lstm", "linear"]
    assert all(layer["grad_norm"] > 0 for layer in report["layers"])
    assert [a["name"] for a in report["activations"]] == ["3"]
