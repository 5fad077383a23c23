"""Learning works for sequences: gated RNNs remember across 50 steps where a vanilla RNN cannot,
and a small causal transformer learns to copy strings."""

from __future__ import annotations

import numpy as np
import pytest

from core import Model

T, HIDDEN = 50, 16


def first_element(rng: np.random.Generator, n: int):
    """x: (N, 50, 1) of noise whose first step is the class, -1 or +1; y: that class, 0 or 1."""
    x = rng.standard_normal((n, T, 1))
    y = rng.integers(0, 2, n)
    x[:, 0, 0] = 2 * y - 1
    return x, y


def remembering_accuracy(kind: str, steps: int = 400) -> float:
    model = Model.from_spec({
        "layers": [{"type": kind, "input_size": 1, "hidden_size": HIDDEN}, {"type": "linear", "out_features": 2}],
        "loss": {"type": "softmax_cross_entropy"},
        "optimizer": {"type": "adam", "lr": 0.003, "clip_grad_norm": 1.0},
        "seed": 0,
    })
    if kind != "rnn":
        # The usual gated-RNN start (Jozefowicz et al. 2015): bias the second gate block, LSTM's
        # forget gate f and GRU's update gate z, towards keeping the state. From torch's init
        # (f, z ~ 0.5) the first step's signal would reach the end scaled by ~0.5**49.
        params = {name: p.copy() for name, p in model.parameters().items()}
        params["0.bias_ih_l0"][HIDDEN:2 * HIDDEN] += 3.0
        model.set_parameters(params)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        model.forward_backward(*first_element(rng, 64))
        model.step()
    x, y = first_element(np.random.default_rng(2), 1000)
    outputs, _ = model.forward(x)
    return float((outputs.argmax(axis=1) == y).mean())


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gated_rnns_remember_the_first_of_50_steps(kind):
    assert remembering_accuracy(kind) >= 0.95


def test_a_vanilla_rnn_of_the_same_size_does_not():
    assert remembering_accuracy("rnn") <= 0.6


def copying(rng: np.random.Generator, n: int, length: int = 6, letters: int = 8):
    """Strings "abcdef|abcdef" as tokens (| is token `letters`); x: (N, 12) all but the last, y: (N, 12) the next
    token, its first half ignored (-1): a random string cannot be predicted, its copy can."""
    s = rng.integers(0, letters, (n, length))
    seq = np.concatenate([s, np.full((n, 1), letters), s], axis=1)
    x, y = seq[:, :-1], seq[:, 1:].copy()
    y[:, :length] = -1
    return x, y


def test_a_two_block_causal_transformer_learns_to_copy():
    e, vocab = 32, 9

    def block():
        return [{"type": "residual",
                 "layers": [{"type": "layernorm"}, {"type": "attention", "num_heads": 2, "causal": True}]},
                {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out_features": 4 * e},
                                                {"type": "gelu"}, {"type": "linear", "out_features": e}]}]
    model = Model.from_spec({
        "layers": [{"type": "embedding", "num_embeddings": vocab, "embedding_dim": e},
                   {"type": "positional", "max_len": 12},
                   *block(), *block(), {"type": "layernorm"}, {"type": "linear", "out_features": vocab}],
        "loss": {"type": "softmax_cross_entropy", "ignore_index": -1},
        "optimizer": {"type": "adam", "lr": 0.003},
        "seed": 0,
    })
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(250):
        losses.append(model.forward_backward(*copying(rng, 32)))
        model.step()
    assert np.mean(losses[-10:]) < losses[0] / 10
    x, y = copying(np.random.default_rng(1), 200)
    outputs, _ = model.forward(x)
    assert outputs.shape == (200, 12, vocab)
    assert float((outputs[:, 6:].argmax(axis=-1) == y[:, 6:]).mean()) >= 0.95
