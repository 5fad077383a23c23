"""Data parallel in core: a batch computed in shards on a replica and added back with weights
n_i / N gives the full batch's mean-loss gradient, its loss, input gradient and outputs."""

from __future__ import annotations

import numpy as np
import pytest

from core import Model

LINEAR = [{"type": "linear", "in_features": 4, "out_features": 6}, {"type": "tanh"},
          {"type": "linear", "out_features": 3}]
TOKENS = [{"type": "embedding", "num_embeddings": 7, "embedding_dim": 4},
          {"type": "linear", "out_features": 5}]
CASES = {
    "mlp-labels": ({"layers": LINEAR, "loss": {"type": "softmax_cross_entropy"}}, "labels"),
    "mlp-probabilities": ({"layers": LINEAR, "loss": {"type": "softmax_cross_entropy"}}, "probabilities"),
    "mlp-mse": ({"layers": LINEAR, "loss": {"type": "mse"}}, "values"),
    "tokens-ignored": ({"layers": TOKENS, "input_shape": [6],
                        "loss": {"type": "softmax_cross_entropy", "ignore_index": -1}}, "tokens"),
}


def batch(model: Model, kind: str, n: int):
    rng = np.random.default_rng(0)
    if kind == "tokens":
        x = rng.integers(0, 7, (n, 6))
        t = rng.integers(0, 5, (n, 6))
        t[rng.random(t.shape) < 0.4] = -1  # shards hold different counts of tokens
        return x, t
    x = rng.standard_normal((n, 4))
    if kind == "labels":
        return x, rng.integers(0, 3, n)
    if kind == "probabilities":
        return x, rng.dirichlet(np.ones(3), n)
    return x, rng.standard_normal((n, 3))


def in_shards(model: Model, k: int, x, targets=None, grad_output=None):
    """Gives model.add_shards of the batch split k ways, each shard computed on a replica."""
    replica = model.copy()
    parts = [np.array_split(a, k) if a is not None else [None] * k for a in (x, targets, grad_output)]
    return model.add_shards([replica.shard(xi, ti, grad_output=gi, need_input_grad=True)
                             for xi, ti, gi in zip(*parts)])


def assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", CASES)
def test_shards_weighted_by_their_terms_give_the_full_batch(name, k):
    spec, kind = CASES[name]
    whole, parallel = (Model.from_spec({**spec, "dtype": "float64", "seed": 1}) for _ in range(2))
    x, t = batch(whole, kind, 10)
    want = whole.train_batch(x, t, need_input_grad=True)
    got = in_shards(parallel, k, x, t)
    assert_close(got.loss, want.loss)
    if want.input_grad is None:  # token inputs have none
        assert got.input_grad is None
    else:
        assert_close(got.input_grad, want.input_grad)
    assert_close(got.outputs, want.outputs)
    for name_, g in whole.gradients().items():
        assert_close(parallel.gradients()[name_], g)
    assert parallel.accumulated == whole.accumulated == 1


def test_grad_output_shards_add_up_as_they_are():
    whole, parallel = (Model.from_spec({"layers": LINEAR, "dtype": "float64", "seed": 1}) for _ in range(2))
    x = np.random.default_rng(0).standard_normal((10, 4))
    g = np.random.default_rng(1).standard_normal((10, 3))
    want = whole.train_batch(x, grad_output=g, need_input_grad=True)
    got = in_shards(parallel, 3, x, grad_output=g)
    assert got.loss is None
    assert_close(got.input_grad, want.input_grad)
    for name, grad in whole.gradients().items():
        assert_close(parallel.gradients()[name], grad)


def test_batchnorm_and_dropout_cannot_be_sharded():
    def problem(layer):
        return Model.from_spec({"layers": [LINEAR[0], layer], "seed": 0}).shard_problem()

    assert "batchnorm" in problem({"type": "batchnorm"})
    assert "dropout" in problem({"type": "dropout", "p": 0.5})
    assert Model.from_spec({"layers": LINEAR, "seed": 0}).shard_problem() is None


def kept_in_shards(model: Model, k: int, x, targets=None, grad_output=None, need_input_grad: bool = True):
    """Gives model.add_shards of a kept tape split k ways: each shard's forward on a replica,
    then its backprop through the replica's tape."""
    replica = model.copy()
    parts = [np.array_split(a, k) if a is not None else [None] * k for a in (x, targets, grad_output)]
    kept = [replica.shard_forward(xi) for xi in parts[0]]
    return model.add_shards([replica.shard_backprop(tape, outputs, targets=ti, grad_output=gi,
                                                    need_input_grad=need_input_grad)
                             for (outputs, tape), ti, gi in zip(kept, parts[1], parts[2])])


@pytest.mark.parametrize("need_input_grad", [True, False])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", CASES)
def test_a_kept_tape_in_shards_gives_backprop_of_the_full_batch(name, k, need_input_grad):
    spec, kind = CASES[name]
    whole, parallel = (Model.from_spec({**spec, "dtype": "float64", "seed": 1}) for _ in range(2))
    x, t = batch(whole, kind, 10)
    outputs, tape = whole.forward(x, train=True)
    want = whole.backprop(tape, outputs, targets=t, need_input_grad=need_input_grad)
    got = kept_in_shards(parallel, k, x, t, need_input_grad=need_input_grad)
    assert_close(got.loss, want.loss)
    assert got.outputs is None and want.outputs is None
    if want.input_grad is None:
        assert got.input_grad is None
    else:
        assert_close(got.input_grad, want.input_grad)
    for name_, g in whole.gradients().items():
        assert_close(parallel.gradients()[name_], g)
    assert parallel.accumulated == whole.accumulated == 1


@pytest.mark.parametrize("need_input_grad", [True, False])
def test_a_kept_tape_in_shards_from_grad_output_adds_up(need_input_grad):
    whole, parallel = (Model.from_spec({"layers": LINEAR, "dtype": "float64", "seed": 1}) for _ in range(2))
    x = np.random.default_rng(0).standard_normal((10, 4))
    g = np.random.default_rng(1).standard_normal((10, 3))
    outputs, tape = whole.forward(x, train=True)
    want = whole.backprop(tape, outputs, grad_output=g, need_input_grad=need_input_grad)
    got = kept_in_shards(parallel, 3, x, grad_output=g, need_input_grad=need_input_grad)
    assert got.loss is None
    if need_input_grad:
        assert_close(got.input_grad, want.input_grad)
    else:
        assert got.input_grad is None
    for name, grad in whole.gradients().items():
        assert_close(parallel.gradients()[name], grad)


def test_shard_backprop_refuses_a_stale_tape_and_bad_targets_changing_nothing():
    from core import InputError, StaleTapeError

    model = Model.from_spec({"layers": LINEAR, "loss": {"type": "mse"}, "dtype": "float64", "seed": 1})
    x, t = batch(model, "values", 4)
    outputs, tape = model.shard_forward(x)
    model.forward_backward(x, t)  # gradients accumulated by someone else stay as they are
    before = {name: g.copy() for name, g in model.gradients().items()}
    for bad in ({"targets": t[:, :2]}, {"grad_output": np.ones((4, 2))}, {"targets": np.full((4, 3), np.nan)}):
        with pytest.raises(InputError):
            model.shard_backprop(tape, outputs, **bad)
        assert model.accumulated == 1
        for name, g in model.gradients().items():
            np.testing.assert_array_equal(g, before[name])
    assert model.shard_backprop(tape, outputs, targets=t).terms == 12  # the tape still serves
    model.set_parameters(model.parameters())  # the version moves on
    with pytest.raises(StaleTapeError):
        model.shard_backprop(tape, outputs, targets=t)
