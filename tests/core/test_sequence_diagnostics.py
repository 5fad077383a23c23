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
