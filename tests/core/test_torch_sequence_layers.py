"""Gated RNNs, embeddings, attention and per-position cross-entropy against PyTorch.

Each gradserve model's parameters are loaded into the matching torch modules with
load_state_dict(strict=True) (so names and shapes are torch's), then outputs, input gradients
and parameter gradients are compared in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import Model
from tests.optional import need

torch = need("torch", "pip install torch==2.13.0 (a CPU build; .ci/run installs it)")
nn = torch.nn

TORCH_RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}
RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 5, 4))  # (N, T, D)
TOKENS = RNG.integers(0, 7, (3, 5))  # (N, T) indices into 7 rows


def causal_mask(t: int):
    return torch.triu(torch.ones(t, t), 1).bool()


def recurrent(kind: str, d: int, h: int, return_sequences: bool) -> nn.Module:
    """nn.LSTM / nn.GRU (batch_first) giving every step's output, or the last step's, as gradserve's layer."""

    class Recurrent(TORCH_RNNS[kind]):
        def forward(self, x):
            y = super().forward(x)[0]
            return y if return_sequences else y[:, -1]
    return Recurrent(d, h, batch_first=True)


class SelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention called as gradserve's attention layer: x as query, key and value."""

    def __init__(self, e: int, heads: int, causal: bool) -> None:
        super().__init__(e, heads, batch_first=True)
        self.causal = causal

    def forward(self, x):
        mask = causal_mask(x.shape[1]) if self.causal else None
        return super().forward(x, x, x, need_weights=False, attn_mask=mask)[0]


class Positional(nn.Module):
    def __init__(self, max_len: int, e: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, e))

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class Residual(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x)


def loaded(model: Model, *modules: nn.Module) -> nn.Sequential:
    """Return nn.Sequential(*modules) in float64 holding the model's parameters (strict names and shapes)."""
    net = nn.Sequential(*modules).double()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.parameters().items()}, strict=True)
    return net


def assert_same_as_torch(layers: list[dict], modules: list[nn.Module], x: np.ndarray) -> None:
    """Outputs, input gradient and every parameter gradient of gradserve and torch agree."""
    model = Model.from_spec({"layers": layers, "dtype": "float64", "seed": 3})
    net = loaded(model, *modules)
    outputs, tape = model.forward(x, train=True)
    grad_output = RNG.standard_normal(outputs.shape)
    grad_x = model.backward(tape, grad_output)

    indices = x.dtype.kind == "i"
    xt = torch.tensor(x, requires_grad=not indices)
    yt = net(xt)
    (yt * torch.from_numpy(grad_output)).sum().backward()
    np.testing.assert_allclose(outputs, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    if not indices:
        np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    torch_grads = {name: p.grad.numpy() for name, p in net.named_parameters()}
    assert set(torch_grads) == set(model.gradients())
    for name, g in torch_grads.items():
        np.testing.assert_allclose(model.gradients()[name], g, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last_step", "sequences"])
def test_gated_rnn(kind, return_sequences):
    assert_same_as_torch([{"type": kind, "input_size": 4, "hidden_size": 6, "return_sequences": return_sequences}],
                         [recurrent(kind, 4, 6, return_sequences)], X)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stacked_gated_rnns(kind):
    assert_same_as_torch(
        [{"type": kind, "input_size": 4, "hidden_size": 6, "return_sequences": True}, {"type": kind, "hidden_size": 3}],
        [recurrent(kind, 4, 6, True), recurrent(kind, 6, 3, False)], X)


def test_embedding():
    assert_same_as_torch([{"type": "embedding", "num_embeddings": 7, "embedding_dim": 4}], [nn.Embedding(7, 4)], TOKENS)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention(causal):
    assert_same_as_torch([{"type": "attention", "embed_dim": 4, "num_heads": 2, "causal": causal}],
                         [SelfAttention(4, 2, causal)], X)


def test_positional_is_x_plus_p():
    assert_same_as_torch([{"type": "positional", "max_len": 8, "embedding_dim": 4}], [Positional(8, 4)], X)


def test_causal_transformer_end_to_end():
    e, vocab = 8, 7
    layers = [{"type": "embedding", "num_embeddings": vocab, "embedding_dim": e}, {"type": "positional", "max_len": 5},
              {"type": "residual",
               "layers": [{"type": "layernorm"}, {"type": "attention", "num_heads": 2, "causal": True}]},
              {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out_features": 16},
                                              {"type": "gelu"}, {"type": "linear", "out_features": e}]},
              {"type": "layernorm"}, {"type": "linear", "out_features": vocab}]
    modules = [nn.Embedding(vocab, e), Positional(5, e), Residual(nn.LayerNorm(e), SelfAttention(e, 2, True)),
               Residual(nn.LayerNorm(e), nn.Linear(e, 16), nn.GELU(approximate="tanh"), nn.Linear(16, e)),
               nn.LayerNorm(e), nn.Linear(e, vocab)]
    assert_same_as_torch(layers, modules, TOKENS)


@pytest.mark.parametrize("targets", ["labels", "labels_ignored", "probabilities"])
def test_cross_entropy_over_positions(targets):
    # The mean over the N*T positions (those not ignored), as F.cross_entropy on the flattened (N*T, C).
    ignore_index = -100 if targets == "labels_ignored" else None
    model = Model.from_spec({"layers": [{"type": "lstm", "input_size": 4, "hidden_size": 6, "return_sequences": True},
                                        {"type": "linear", "out_features": 3}],
                             "loss": {"type": "softmax_cross_entropy", "ignore_index": ignore_index},
                             "dtype": "float64"})
    if targets == "probabilities":
        y = RNG.dirichlet(np.ones(3), (3, 5))
        yt = torch.from_numpy(y).flatten(0, 1)
    else:
        y = RNG.integers(0, 3, (3, 5))
        if ignore_index is not None:
            y[:, ::2] = ignore_index
        yt = torch.from_numpy(y).flatten()
    net = loaded(model, recurrent("lstm", 4, 6, True), nn.Linear(6, 3))
    xt = torch.tensor(X, requires_grad=True)
    expected = nn.functional.cross_entropy(net(xt).flatten(0, 1), yt,
                                           ignore_index=-100 if ignore_index is None else ignore_index)
    expected.backward()

    outputs, tape = model.forward(X, train=True)
    loss, grad_outputs = model.loss(outputs, y)
    grad_x = model.backward(tape, grad_outputs)
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.gradients()["1.weight"], net[1].weight.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_float32_gated_rnn_and_attention_agree_with_torch_to_float32_precision():
    for layer, module in ((
            {"type": "lstm", "input_size": 4, "hidden_size": 6}, recurrent("lstm", 4, 6, False)),
            ({"type": "attention", "embed_dim": 4, "num_heads": 2, "causal": True}, SelfAttention(4, 2, True))):
        model = Model.from_spec({"layers": [layer]})
        net = nn.Sequential(module)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in model.parameters().items()}, strict=True)
        outputs, _ = model.forward(X.astype(np.float32))
        assert outputs.dtype == np.float32
        np.testing.assert_allclose(outputs, net(torch.from_numpy(X.astype(np.float32))).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
