"""Determinism and initialization: same spec and seed give the same bits; He or Xavier by layer kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import Model

SPEC = {
    "layers": [{"type": "linear", "in_features": 5, "out_features": 16}, {"type": "relu"},
               {"type": "dropout", "p": 0.25},
               {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out_features": 16},
                                               {"type": "gelu"}]},
               {"type": "linear", "out_features": 3}],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "adam", "lr": 0.01},
    "seed": 7,
}


def make(seed: int = 7, dtype: str = "float32", spec=SPEC) -> Model:
    return Model.from_spec({**spec, "seed": seed, "dtype": dtype})


def snapshot(model: Model) -> dict[str, bytes]:
    return {n: p.tobytes() for n, p in model.parameters().items()}


def train(model: Model, steps: int = 4) -> None:
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model.forward_backward(rng.standard_normal((8, 5)), rng.integers(0, 3, 8))
        model.step()


def test_same_seed_same_initial_bits():
    assert snapshot(make()) == snapshot(make())


def test_same_seed_same_bits_after_training_with_dropout():
    a, b = make(), make()
    make(seed=99).forward(np.ones((2, 5)), train=True)  # another model's activity changes nothing
    train(a)
    train(b)
    assert snapshot(a) == snapshot(b)
    assert snapshot(a) != snapshot(make())  # and training did move them


def test_different_seed_differs():
    a, b = snapshot(make(seed=1)), snapshot(make(seed=2))
    assert a["0.weight"] != b["0.weight"]
    assert a["4.weight"] != b["4.weight"]
    assert a["0.bias"] == b["0.bias"]  # biases are zero either way


def test_different_seed_draws_different_dropout_masks():
    x = np.ones((4, 5))
    a, b = make(seed=1), make(seed=2)
    b.set_parameters(a.parameters())
    assert not np.array_equal(a.forward(x, train=True)[0], b.forward(x, train=True)[0])


def test_float32_weights_are_the_float64_ones_rounded():
    w32, w64 = make(dtype="float32").parameters(), make(dtype="float64").parameters()
    for n in w32:
        assert w32[n].dtype == np.float32 and w64[n].dtype == np.float64
        assert np.array_equal(w32[n], w64[n].astype(np.float32))


def linear_then(after: list[dict], d: int = 1000, m: int = 800, seed: int = 0) -> np.ndarray:
    model = Model.from_spec({"layers": [{"type": "linear", "in_features": d, "out_features": m}, *after],
                             "dtype": "float64", "seed": seed})
    assert not model.parameters()["0.bias"].any()
    return model.parameters()["0.weight"]


@pytest.mark.parametrize("after", [
    [{"type": "relu"}],
    [{"type": "leaky_relu"}],
    [{"type": "elu"}],
    [{"type": "gelu"}],
    [{"type": "dropout", "p": 0.1}, {"type": "relu"}],
    [{"type": "layernorm"}, {"type": "relu"}],
    [{"type": "batchnorm"}, {"type": "relu"}],
], ids=lambda a: "-".join(layer["type"] for layer in a))
def test_he_normal_before_a_relu_family_activation(after):
    w = linear_then(after)
    std = math.sqrt(2 / 1000)
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.01)
    # A normal, not a uniform: values beyond 3 std exist (about 0.27% of 800k), and the kurtosis is 3.
    assert np.abs(w).max() > 4 * std
    assert ((w / w.std()) ** 4).mean() == pytest.approx(3.0, rel=0.03)


@pytest.mark.parametrize("after", [
    [],
    [{"type": "tanh"}],
    [{"type": "sigmoid"}],
    [{"type": "softplus"}],
    [{"type": "linear", "out_features": 10}, {"type": "relu"}],  # the next layer is linear, not relu
    [{"type": "dropout", "p": 0.1}, {"type": "tanh"}],
], ids=lambda a: "-".join(layer["type"] for layer in a) or "last")
def test_xavier_uniform_otherwise(after):
    w = linear_then(after)
    bound = math.sqrt(6 / (1000 + 800))
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert ((w / w.std()) ** 4).mean() == pytest.approx(1.8, rel=0.03)  # a uniform's kurtosis


def test_fan_in_and_fan_out_are_the_right_way_round():
    # He uses fan_in (in_features), Xavier both: check with a strongly rectangular layer.
    he = linear_then([{"type": "relu"}], d=2000, m=100)
    assert he.shape == (100, 2000)
    assert he.std() == pytest.approx(math.sqrt(2 / 2000), rel=0.02)
    xavier = linear_then([], d=2000, m=100)
    assert np.abs(xavier).max() <= math.sqrt(6 / 2100)


def test_rnn_init_is_torchs_uniform():
    model = Model.from_spec({"layers": [{"type": "rnn", "input_size": 50, "hidden_size": 400}],
                             "dtype": "float64"})
    bound = 1 / math.sqrt(400)
    for name, p in model.parameters().items():
        assert np.abs(p).max() <= bound, name
        assert p.std() == pytest.approx(bound / math.sqrt(3), rel=0.1), name


def test_norm_layers_start_as_identity():
    model = make()
    assert np.array_equal(model.parameters()["3.block.0.weight"], np.ones(16, np.float32))
    assert not model.parameters()["3.block.0.bias"].any()


@pytest.mark.parametrize("optimizer", [{"type": "adam", "lr": 1e-3, "clip_grad_norm": 1.0},
                                       {"type": "rmsprop", "momentum": 0.9, "centered": True}])
def test_same_bits_when_the_optimizer_splits_big_parameters_over_threads(optimizer):
    # 600 x 500 weights: several chunks, updated on several threads; the result must not depend on timing.
    spec = {"layers": [{"type": "linear", "in_features": 600, "out_features": 500}, {"type": "relu"},
                       {"type": "dropout", "p": 0.1}, {"type": "linear", "out_features": 3}],
            "loss": {"type": "softmax_cross_entropy"}, "optimizer": optimizer}
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((16, 600)), rng.integers(0, 3, 16)) for _ in range(3)]
    runs = []
    for _ in range(3):
        model = make(seed=5, spec=spec)
        for x, t in data:
            model.forward_backward(x, t)
            model.step()
        runs.append(snapshot(model))
    assert runs[0] == runs[1] == runs[2]
