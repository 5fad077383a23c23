"""Data parallel on Ray (DESIGN section 9): a model with "workers": k splits each batch of
forward_backward, backward and train_step over k worker actors, and gives what the same model
with workers 1 gives (float64: within 1e-9 relative), for even and uneven splits."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from gradserve_client import APIError, Client, ServerError, ValidationError

MLP = {"layers": [{"type": "linear", "in_features": 6, "out_features": 8}, {"type": "tanh"},
                  {"type": "linear", "out_features": 3}],
       "loss": {"type": "mse"}, "optimizer": {"type": "adam", "lr": 0.01}, "dtype": "float64", "seed": 7}
CLASSIFIER = {**MLP, "loss": {"type": "softmax_cross_entropy"}}
TOKENS = {"layers": [{"type": "embedding", "num_embeddings": 9, "embedding_dim": 4},
                     {"type": "linear", "out_features": 5}], "input_shape": [6],
          "loss": {"type": "softmax_cross_entropy", "ignore_index": -1}, "dtype": "float64", "seed": 7}


def batch(spec: dict, n: int, seed: int = 0):
    """Gives (inputs, targets) of n examples for `spec`."""
    rng = np.random.default_rng(seed)
    if spec is TOKENS:  # (N, T, C) outputs; shards hold different counts of ignored tokens
        tokens = rng.integers(0, 5, (n, 6))
        tokens[rng.random(tokens.shape) < 0.4] = -1
        return rng.integers(0, 9, (n, 6)), tokens
    x = rng.standard_normal((n, 6))
    return x, (rng.integers(0, 3, n) if spec is CLASSIFIER else rng.standard_normal((n, 3)))


def assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-14, err_msg=name)


@pytest.fixture
def client(ray_server):
    with Client(ray_server(ray_hosts=1)) as client:
        yield client


@pytest.mark.parametrize("spec", [MLP, CLASSIFIER, TOKENS], ids=["mlp", "classifier", "tokens"])
def test_forward_backward_in_shards_equals_workers_1(client, spec):
    x, y = batch(spec, 10)
    single = client.create_model(spec)
    want = single.forward_backward(x, y)
    for workers, n in [(2, 8), (2, 10), (3, 9), (3, 10)]:  # even and uneven splits
        sharded, single = client.create_model({**spec, "workers": workers}), client.create_model(spec)
        got, want = sharded.forward_backward(x[:n], y[:n]), single.forward_backward(x[:n], y[:n])
        assert got.loss == pytest.approx(want.loss, rel=1e-9)
        assert got.accumulated == 1
        assert_close(sharded.gradients(), single.gradients())


def test_forward_backward_from_grad_output_sums_the_shards(client):
    x, _ = batch(MLP, 10)
    g = np.random.default_rng(1).standard_normal((10, 3))
    sharded, single = client.create_model({**MLP, "workers": 3}), client.create_model(MLP)
    got = sharded.forward_backward(x, grad_output=g, return_input_grad=True, return_outputs=True)
    want = single.forward_backward(x, grad_output=g, return_input_grad=True, return_outputs=True)
    np.testing.assert_allclose(got.input_grad, want.input_grad, rtol=1e-9)
    np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-9)
    assert_close(sharded.gradients(), single.gradients())


def test_three_adam_train_steps_in_shards_equal_workers_1(client):
    sharded, single = client.create_model({**CLASSIFIER, "workers": 2}), client.create_model(CLASSIFIER)
    for seed in range(3):
        x, y = batch(CLASSIFIER, 11, seed)  # 6 + 5
        got, want = sharded.train_step(x, y), single.train_step(x, y)
        assert (got.step, got.loss) == (want.step, pytest.approx(want.loss, rel=1e-9))
    assert_close(sharded.parameters(), single.parameters())
    steps = [(x, y) for x, y in (batch(CLASSIFIER, 7, seed) for seed in (3, 4))]
    assert [r.step for r in sharded.train_steps(steps)] == [r.step for r in single.train_steps(steps)] == [4, 5]
    assert_close(sharded.parameters(), single.parameters())


def test_a_sharded_model_trains_on_rows_it_keeps_as_on_rows_sent(client):
    kept, sent = (client.create_model({**CLASSIFIER, "workers": 2}) for _ in range(2))
    x, y = batch(CLASSIFIER, 22, 5)
    first = [(x[:11], y[:11]), (x[11:], y[11:])]
    assert kept.train_steps(first, keep="d") == sent.train_steps(first)
    order = np.random.default_rng(0).permutation(22)
    assert kept.train_on_data("d", order, batch_size=9) == sent.train_steps(
        [(x[order[i:i + 9]], y[order[i:i + 9]]) for i in range(0, 22, 9)])
    assert {k: v.tobytes() for k, v in kept.parameters().items()} == {k: v.tobytes() for k, v in sent.parameters().items()}
    assert kept.evaluate_data("d") == sent.evaluate(x, y)


def test_the_history_of_a_sharded_model_holds_its_activations(client):
    relu = {**CLASSIFIER, "layers": [{"type": "linear", "in_features": 6, "out_features": 8}, {"type": "tanh"},
                                     {"type": "linear", "out_features": 8}, {"type": "relu"},
                                     {"type": "linear", "out_features": 3}]}
    sharded, single = client.create_model({**relu, "workers": 2}), client.create_model(relu)
    for seed in range(3):
        x, y = batch(CLASSIFIER, 11, seed)
        sharded.train_step(5 * x, y), single.train_step(5 * x, y)  # 5x: some tanh units saturate
    got, want = sharded.history(), single.history()
    assert (want["activations.1.saturated_fraction"] > 0).all()
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-9)
    # A fraction of values is exact over shards; a unit is dead for the batch only if dead in
    # every shard, so a sharded model's dead fraction is at least the batch's.
    np.testing.assert_allclose(got["activations.1.saturated_fraction"], want["activations.1.saturated_fraction"],
                               rtol=1e-12)
    assert (got["activations.3.dead_fraction"] >= want["activations.3.dead_fraction"]).all()


def tapes_on_workers(request, k: int) -> list[int]:
    """Gives how many shard tapes each of workers 0..k-1 keeps."""
    return [ray.get(ray.get_actor(f"worker-{i}", namespace=namespace_of(request)).tapes_held.remote())
            for i in range(k)]


@pytest.mark.parametrize("workers,n", [(3, 9), (3, 10), (2, 7)])  # even and uneven splits
@pytest.mark.parametrize("source", ["targets", "grad_output"])
@pytest.mark.parametrize("input_grad", [True, False], ids=["input_grad", "no_input_grad"])
def test_backward_on_a_kept_tape_runs_on_the_workers_and_equals_workers_1(client, request, workers, n, source,
                                                                          input_grad):
    x, y = batch(CLASSIFIER, n)
    g = np.random.default_rng(1).standard_normal((n, 3))
    sharded, single = client.create_model({**CLASSIFIER, "workers": workers}), client.create_model(CLASSIFIER)
    sent = {"targets": y} if source == "targets" else {"grad_output": g}
    results = []
    for model in (sharded, single):
        outputs, tape = model.forward(x, keep_tape=True)
        if model is sharded:  # each worker ran its shard's forward and keeps its tape
            assert tapes_on_workers(request, workers) == [1] * workers
            sharded_outputs = outputs
        else:
            np.testing.assert_allclose(sharded_outputs, outputs, rtol=1e-9)
        results.append(model.backward(tape, return_input_grad=input_grad, **sent))
    assert tapes_on_workers(request, workers) == [0] * workers  # used up there: the backward ran there
    got, want = results
    assert got.accumulated == want.accumulated == 1
    if source == "targets":
        assert got.loss == pytest.approx(want.loss, rel=1e-9)
    else:
        assert got.loss is None and want.loss is None
    if input_grad:
        np.testing.assert_allclose(got.input_grad, want.input_grad, rtol=1e-9, atol=1e-14)
    else:
        assert got.input_grad is None and want.input_grad is None
    assert_close(sharded.gradients(), single.gradients())


def test_backward_on_a_stale_sharded_tape_answers_409(client, request):
    sharded = client.create_model({**MLP, "workers": 2})
    x, y = batch(MLP, 8)
    _, tape = sharded.forward(x, keep_tape=True)
    sharded.train_step(x, y)  # the parameters move on
    with pytest.raises(APIError) as stale:
        sharded.backward(tape, targets=y)
    assert (stale.value.status, stale.value.code) == (409, "stale_tape")
    info = sharded.refresh()
    assert (info.accumulated, info.version) == (0, 1)


def test_bad_targets_on_a_sharded_tape_change_nothing_and_keep_it(client, request):
    sharded, single = client.create_model({**MLP, "workers": 2}), client.create_model(MLP)
    x, y = batch(MLP, 9)
    _, tape = sharded.forward(x, keep_tape=True)
    for bad in ({"targets": y[:, :2]}, {"grad_output": np.ones((9, 2))}):
        with pytest.raises(ValidationError):
            sharded.backward(tape, **bad)
        assert sharded.refresh().accumulated == 0
        assert tapes_on_workers(request, 2) == [1, 1]
    got = sharded.backward(tape, targets=y)  # the corrected request
    _, single_tape = single.forward(x, keep_tape=True)
    want = single.backward(single_tape, targets=y)
    assert (got.accumulated, got.loss) == (1, pytest.approx(want.loss, rel=1e-9))
    assert_close(sharded.gradients(), single.gradients())
    with pytest.raises(APIError) as used:
        sharded.backward(tape, targets=y)
    assert (used.value.status, used.value.code) == (404, "tape_not_found")


def test_a_restarted_worker_answers_404_tape_not_found(client, request):
    sharded = client.create_model({**MLP, "workers": 2})
    x, y = batch(MLP, 8)
    _, tape = sharded.forward(x, keep_tape=True)
    ray.kill(ray.get_actor("worker-1", namespace=namespace_of(request)), no_restart=False)  # Ray restarts it
    for _ in range(40):
        try:
            if tapes_on_workers(request, 2)[1] == 0:
                break
        except ray.exceptions.RayActorError:
            pass
        time.sleep(0.25)
    with pytest.raises(APIError) as gone:
        sharded.backward(tape, targets=y)
    assert (gone.value.status, gone.value.code) == (404, "tape_not_found")
    assert sharded.refresh().accumulated == 0


def test_a_dead_worker_on_backward_answers_503_and_the_tape_is_gone(client, request):
    sharded = client.create_model({**MLP, "workers": 2})
    x, y = batch(MLP, 8)
    _, tape = sharded.forward(x, keep_tape=True)
    ray.kill(ray.get_actor("worker-1", namespace=namespace_of(request)), no_restart=True)
    with pytest.raises(APIError) as unavailable:
        sharded.backward(tape, targets=y)
    assert (unavailable.value.status, unavailable.value.code) == (503, "model_unavailable")
    with pytest.raises(APIError) as gone:
        sharded.backward(tape, targets=y)
    assert (gone.value.status, gone.value.code) == (404, "tape_not_found")
    assert sharded.refresh().accumulated == 0


def test_a_bad_batch_changes_nothing(client):
    sharded = client.create_model({**MLP, "workers": 2})
    x, y = batch(MLP, 10)
    with pytest.raises(ValidationError):
        sharded.train_step(x, y[:, :2])
    info = sharded.refresh()
    assert (info.accumulated, info.version) == (0, 0)


def test_shards_run_on_worker_actors_spread_over_the_nodes(ray_server, ray_cluster, request):
    with Client(ray_server(ray_hosts=1)) as client:
        client.create_model({**MLP, "workers": 2}).forward_backward(*batch(MLP, 8))
    workers = [ray.get_actor(f"worker-{i}", namespace=namespace_of(request)) for i in range(2)]
    nodes = {ray.get(worker.ping.remote()) for worker in workers}
    assert len(ray_cluster.node_ids()) == 2 and len(nodes) == 2


def test_a_dead_worker_answers_503_then_the_workers_are_placed_again(client, request):
    sharded, single = client.create_model({**MLP, "workers": 2}), client.create_model(MLP)
    x, y = batch(MLP, 8)
    sharded.forward_backward(x, y)
    _, tape = sharded.forward(x, keep_tape=True)
    ray.kill(ray.get_actor("worker-1", namespace=namespace_of(request)))
    with pytest.raises(ServerError) as unavailable:
        sharded.forward_backward(x, y)
    assert (unavailable.value.status, unavailable.value.code) == (503, "model_unavailable")
    assert sharded.refresh().accumulated == 1  # the failed batch added nothing
    for _ in range(20):  # as a client retrying 503 would
        try:
            sharded.forward_backward(x, y)
            break
        except ServerError:
            time.sleep(0.25)
    else:
        pytest.fail("the workers were not placed again")
    for _ in range(2):
        single.forward_backward(x, y)
    assert_close(sharded.gradients(), single.gradients())
    with pytest.raises(APIError) as gone:  # its shards were on the workers placed before
        sharded.backward(tape, targets=y)
    assert (gone.value.status, gone.value.code) == (404, "tape_not_found")


def namespace_of(request) -> str:
    """Gives the namespace the ray_server fixture gives this test."""
    return f"t-{abs(hash(request.node.nodeid)) % 10**8}"


@pytest.mark.parametrize("layer", [{"type": "batchnorm"}, {"type": "dropout", "p": 0.5}], ids=["batchnorm", "dropout"])
def test_workers_with_batchnorm_or_dropout_are_refused_naming_workers(client, layer):
    spec = {**MLP, "layers": [MLP["layers"][0], layer, MLP["layers"][2]], "workers": 2}
    with pytest.raises(ValidationError) as refused:
        client.create_model(spec)
    [error] = refused.value.errors
    assert error["loc"] == ["body", "workers"] and layer["type"] in error["msg"]
    assert client.list_models() == []


def test_zero_grad_and_new_parameters_reach_a_sharded_model(client):
    sharded, single = client.create_model({**MLP, "workers": 2}), client.create_model(MLP)
    x, y = batch(MLP, 8)
    for model in (sharded, single):
        model.forward_backward(x, y)
        assert model.zero_grad().accumulated == 0
        with pytest.raises(APIError) as nothing:
            model.step()
        assert (nothing.value.status, nothing.value.code) == (409, "nothing_to_step")
    _, tape = sharded.forward(x, keep_tape=True)
    moved = {name: value + 0.5 for name, value in single.parameters().items()}
    for model in (sharded, single):
        assert model.load_parameters(moved).version == 1
    with pytest.raises(APIError) as stale:
        sharded.backward(tape, targets=y)
    assert (stale.value.status, stale.value.code) == (409, "stale_tape")
    for model in (sharded, single):  # the workers compute at the new parameters
        model.train_step(x, y)
    assert_close(sharded.parameters(), single.parameters())
    assert sharded.refresh().version == single.refresh().version == 2
