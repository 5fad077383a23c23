"""Training through the client against a real server: fit, the async client, the manual loop."""

import asyncio

import numpy as np
import pytest

import gradserve_client as gs
from tests.optional import need


def test_fit_learns_three_blobs_to_95_percent(client, blobs, classifier):
    x, y = blobs(600, seed=1)
    x_val, y_val = blobs(300, seed=2)
    model = client.create_model(classifier)

    history = model.fit(x, y, epochs=4, batch_size=32, validation_data=(x_val, y_val), seed=0, verbose=0)

    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 4 for values in history.values())
    assert history["loss"][-1] < history["loss"][0] / 2
    assert history["val_accuracy"][-1] >= 0.95
    assert model.refresh().step == 4 * 19  # ceil(600 / 32) train steps per epoch
    assert (model.predict(x_val).argmax(axis=1) == y_val).mean() == history["val_accuracy"][-1]


def test_fit_shows_a_progress_bar_and_returns_a_keras_like_history(client, capsys, blobs, classifier):
    x, y = blobs(64, seed=3)
    history = client.create_model(classifier).fit(x, y, epochs=2, batch_size=16, verbose=1)
    assert "Epoch 2/2" in capsys.readouterr().err
    assert history.history is history and len(history["loss"]) == 2


def test_async_client_trains_four_models_concurrently(server, blobs, classifier):
    x, y = blobs(400, seed=4)

    async def main():
        async with gs.AsyncClient(server.url) as client:
            models = await asyncio.gather(*(client.create_model(classifier, seed=s) for s in range(4)))
            histories = await asyncio.gather(
                *(m.fit(x, y, epochs=3, batch_size=32, seed=i, verbose=0) for i, m in enumerate(models))
            )
            infos = await asyncio.gather(*(m.refresh() for m in models))
            return models, histories, infos

    models, histories, infos = asyncio.run(main())
    assert len({m.id for m in models}) == 4
    assert [info.step for info in infos] == [3 * 13] * 4
    for history in histories:
        assert history["accuracy"][-1] >= 0.95


def test_the_manual_loop_tape_backward_accumulate_step(client, blobs, classifier):
    x, y = blobs(32, seed=5)
    model = client.create_model(classifier)
    before = model.parameters()

    outputs, tape = model.forward(x, keep_tape=True)
    assert outputs.shape == (32, 3) and outputs.dtype == np.float32
    first = model.backward(tape, targets=y, return_input_grad=True)
    assert first.input_grad.shape == (32, 2) and first.accumulated == 1
    second = model.forward_backward(x, y, return_outputs=True)
    assert second.accumulated == 2 and np.isclose(second.loss, first.loss, rtol=1e-6)
    np.testing.assert_allclose(second.outputs, outputs, rtol=1e-6)
    gradients = model.gradients()
    assert set(gradients) == set(before) == {"0.weight", "0.bias", "2.weight", "2.bias"}

    step = model.step()
    assert step.step == 1 and step.update_norm > 0
    after = model.parameters()
    assert not np.array_equal(after["0.weight"], before["0.weight"])
    assert not np.any(model.gradients()["0.weight"])


def test_zero_grad_gradcheck_and_diagnostics(client, blobs, classifier):
    x, y = blobs(8, seed=6)
    model = client.create_model(classifier, dtype="float64")
    model.forward_backward(x, y)
    model.zero_grad()
    assert model.refresh().accumulated == 0
    report = model.gradcheck(x, y, max_entries=5)
    assert report.passed and set(report.parameters) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert isinstance(model.diagnostics(), dict)


def test_parameters_checkpoint_and_the_model_list(client, tmp_path, classifier):
    model = client.create_model(classifier)
    parameters = {name: np.full(shape, 0.25, np.float32) for name, shape in model.info.parameter_shapes.items()}
    model.load_parameters(parameters)
    for name, value in model.parameters().items():
        np.testing.assert_array_equal(value, parameters[name])

    path = model.download_checkpoint(tmp_path / "model.safetensors")
    copy = client.import_checkpoint(path, id=f"{model.id}-copy")
    assert copy.id == f"{model.id}-copy" and copy.info.step == model.info.step
    for name, value in copy.parameters().items():
        np.testing.assert_array_equal(value, parameters[name])
    assert {model.id, copy.id} <= {m.id for m in client.list_models()}
    assert client.model(model.id).info.parameter_shapes == model.info.parameter_shapes

    copy.delete()
    assert copy.id not in {m.id for m in client.list_models()}


LOSSES = {
    "softmax_cross_entropy labels": ({"type": "softmax_cross_entropy"}, lambda rng: rng.integers(0, 3, 16)),
    "softmax_cross_entropy probabilities": (
        {"type": "softmax_cross_entropy"}, lambda rng: rng.dirichlet(np.ones(3), 16).astype(np.float32)),
    "mse": ({"type": "mse"}, lambda rng: rng.normal(size=(16, 3)).astype(np.float32)),
    "bce_with_logits": ({"type": "bce_with_logits"}, lambda rng: rng.integers(0, 2, (16, 3)).astype(np.float32)),
    "huber": ({"type": "huber", "delta": 0.5}, lambda rng: rng.normal(size=(16, 3)).astype(np.float32)),
}


@pytest.mark.parametrize("name", LOSSES)
def test_fit_computes_validation_loss_as_the_server_computes_the_loss(client, classifier, name):
    # fit's validation loss is the server's /evaluate now (the client no longer has loss formulas).
    loss_spec, make_targets = LOSSES[name]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 2)).astype(np.float32), make_targets(rng)
    model = client.create_model(classifier, loss=loss_spec, dtype="float64")
    server = model.forward_backward(x, y, return_outputs=True)
    assert model.evaluate(x, y).loss == pytest.approx(server.loss, rel=1e-12)


def sequential_twin(client, spec, x, y, *, epochs, batch_size, seed):
    """The steps fit makes, sent one train_step at a time, on a fresh model of the same spec."""
    twin = client.create_model(spec)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            twin.train_step(x[index], y[index])
    return twin


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "list"])
def test_fit_is_bit_identical_to_the_same_steps_sent_one_by_one(server, blobs, classifier, binary):
    x, y = blobs(300, seed=5)  # 10 batches of 32 per epoch (the last one 12): several per stream
    with gs.Client(server.url, binary=binary) as client:
        model = client.create_model(classifier)
        history = model.fit(x, y, epochs=3, batch_size=32, seed=7, verbose=0)
        twin = sequential_twin(client, classifier, x, y, epochs=3, batch_size=32, seed=7)
        assert model.refresh().step == twin.refresh().step == 3 * 10
        mine, theirs = model.parameters(), twin.parameters()
        assert {k: v.tobytes() for k, v in mine.items()} == {k: v.tobytes() for k, v in theirs.items()}
        assert len(history["loss"]) == 3 and history["accuracy"][-1] == model.evaluate(x, y).accuracy


def test_async_fit_is_bit_identical_to_the_same_steps_sent_one_by_one(server, blobs, classifier):
    x, y = blobs(300, seed=6)

    async def fit_async():
        async with gs.AsyncClient(server.url) as client:
            model = await client.create_model(classifier)
            await model.fit(x, y, epochs=2, batch_size=32, seed=3, verbose=0)
            return model.id, await model.parameters()

    model_id, mine = asyncio.run(fit_async())
    with gs.Client(server.url) as client:
        theirs = sequential_twin(client, classifier, x, y, epochs=2, batch_size=32, seed=3).parameters()
    assert {k: v.tobytes() for k, v in mine.items()} == {k: v.tobytes() for k, v in theirs.items()}


def test_a_batch_that_fails_mid_stream_is_raised_at_that_batch(client, blobs, classifier):
    x, y = blobs(64, seed=8)
    model = client.create_model(classifier)
    y_bad = y.copy()
    y_bad[40] = 7  # a label out of range, in the third batch of 16
    with pytest.raises(gs.ValidationError) as caught:
        model.fit(x, y_bad, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert caught.value.batch == 2 and len(caught.value.completed) == 2
    assert "batch 3 of epoch 1" in "".join(caught.value.__notes__)
    assert model.refresh().step == 2  # the two batches before it were applied, nothing after
    results = model.train_steps([(x[:16], y[:16]), (x[16:32], y[16:32])])
    assert [r.step for r in results] == [3, 4]


def test_export_onnx_writes_a_file_onnxruntime_runs_as_the_model(client, server, tmp_path, blobs, classifier):
    ort = need("onnxruntime")
    x, y = blobs(32, seed=8)
    model = client.create_model(classifier)
    model.train_step(x, y)
    path = model.export_onnx(tmp_path / "m.onnx")
    (outputs,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["outputs"], {"inputs": x})
    np.testing.assert_allclose(outputs, model.forward(x), rtol=1e-5, atol=1e-5)

    async def export_async():
        async with gs.AsyncClient(server.url) as async_client:
            return await (await async_client.model(model.id)).export_onnx(tmp_path / "async.onnx")

    assert asyncio.run(export_async()).read_bytes() == path.read_bytes()


def requests_by_route(url: str) -> dict[str, float]:
    """Gives the server's request counts by route template, and by "METHOD route" (from /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gradserve_requests_total":
                route = sample.labels["route"]
                for key in (route, f"{sample.labels['method']} {route}"):
                    counts[key] = counts.get(key, 0) + sample.value
    return counts


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_fit_sends_the_data_once_and_gives_what_sending_every_epoch_gives(server, dataless_server, blobs,
                                                                          classifier, asynchronous):
    x, y = blobs(300, seed=9)
    x_val, y_val = blobs(100, seed=10)

    async def fit_async(url):
        async with gs.AsyncClient(url) as client:
            model = await client.create_model(classifier)
            history = await model.fit(x, y, epochs=3, batch_size=32, validation_data=(x_val, y_val), seed=4,
                                      verbose=0)
            return history, await model.parameters(), await model.data_sets()

    def fit(url):
        if asynchronous:
            return asyncio.run(fit_async(url))
        with gs.Client(url) as client:
            model = client.create_model(classifier)
            history = model.fit(x, y, epochs=3, batch_size=32, validation_data=(x_val, y_val), seed=4, verbose=0)
            return history, model.parameters(), model.data_sets()

    before = requests_by_route(server.url)
    kept = fit(server.url)
    during = {route: n - before.get(route, 0) for route, n in requests_by_route(server.url).items()
              if n > before.get(route, 0)}
    sent = fit(dataless_server.url)
    assert dict(kept[0]) == dict(sent[0])  # every epoch's loss, accuracy, val_loss, val_accuracy, exactly
    assert {k: v.tobytes() for k, v in kept[1].items()} == {k: v.tobytes() for k, v in sent[1].items()}
    assert kept[2].data_sets == () and sent[2].data_sets == ()  # fit deletes what it made
    assert during["POST /v1/models/{model_id}/data/{name}"] == 1  # the training rows, then the validation rows,
    assert during["DELETE /v1/models/{model_id}/data/{name}"] == 1  # in one request, to one set
    assert during["/v1/models/{model_id}/data/{name}/train_steps"] == 3  # every epoch, by row
    assert "/v1/models/{model_id}/train_steps" not in during
    assert "/v1/models/{model_id}/evaluate" not in during  # train and validation data evaluated where they are


def test_a_fit_that_fails_deletes_its_data_sets(client, blobs, classifier):
    x, y = blobs(64, seed=11)
    model = client.create_model(classifier)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)  # one epoch, a classifier: the rows are kept for its accuracy
    y_bad = y.copy()
    y_bad[60] = 9
    with pytest.raises(gs.ValidationError):
        model.fit(x, y_bad, epochs=2, batch_size=16, shuffle=False, verbose=0)
    assert model.data_sets().data_sets == ()


def test_the_data_set_calls(client, blobs, classifier):
    x, y = blobs(100, seed=12)
    model, twin = client.create_model(classifier), client.create_model(classifier)
    info = model.add_data("train", x, y)
    assert (info.name, info.rows, info.inputs, info.bytes) == ("train", 100, {"shape": [100, 2], "datatype": "FP32"},
                                                               100 * (2 * 4 + 8))
    order = np.random.default_rng(0).permutation(100)
    steps = model.train_on_data("train", order, batch_size=40)
    assert steps == twin.train_steps([(x[order[i:i + 40]], y[order[i:i + 40]]) for i in range(0, 100, 40)])
    assert model.evaluate_data("train") == model.evaluate(x, y)
    assert model.evaluate_data("train", order[:7]) == model.evaluate(x[order[:7]], y[order[:7]])
    with pytest.raises(gs.ValidationError) as caught:
        model.train_on_data("train", [5, 100], batch_size=1)
    assert caught.value.errors[0]["loc"] == ["body", "rows"]
    assert [s.name for s in model.data_sets().data_sets] == ["train"]
    model.delete_data("train")
    with pytest.raises(gs.NotFoundError):
        model.evaluate_data("train")


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32], ids=lambda d: np.dtype(d).name)
def test_requests_of_examples_are_sized_as_they_travel(client, dtype):
    from gradserve_client._fit import REQUEST_ELEMENTS, STREAM_BYTES

    model = client.create_model({"layers": [{"type": "linear", "in_features": 784, "out_features": 10}],
                                 "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "sgd", "lr": 0.1}})
    x, y = np.zeros((30_000, 784), dtype), np.zeros(30_000, np.int64)
    rows = model._request_rows(x, y)
    wire = model._inputs(x[:1]).itemsize  # uint8 pixels and float16 travel as FP32 (binary form)
    assert wire == 4
    assert rows * 784 * wire + rows * 8 <= STREAM_BYTES and rows * 784 <= REQUEST_ELEMENTS
    assert rows * 784 * (wire + 1) > STREAM_BYTES or rows * 784 * 2 > REQUEST_ELEMENTS  # not much smaller either
