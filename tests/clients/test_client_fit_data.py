"""fit with the data kept on the server, when the server cannot keep it or loses it midway:
the fit goes on sending the rows, with the same steps and history as a server that keeps
nothing, and deletes the data sets it made whatever ends it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import gradserve_client as gs
from tests.clients.conftest import SMALL_DATA_BYTES

EPOCHS, BATCH = 3, 32


def intercepted(client, before):
    """Makes `before(call)` run before each call the client makes (a test's hook into a fit)."""
    send = client._call

    def call(c):
        before(c)
        return send(c)

    client._call = call


def fit_and_compare(client, dataless_url, spec, x, y, validation, **fit):
    """Fits a model through `client` and the same one on a server that keeps no data; gives
    (the model, its history) after checking both fits gave the same history and parameters."""
    model = client.create_model(spec)
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_data=validation, seed=5, verbose=0, **fit)
    with gs.Client(dataless_url) as plain:
        twin = plain.create_model(spec)
        expected = twin.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_data=validation, seed=5, verbose=0, **fit)
        assert dict(history) == dict(expected)
        assert {k: v.tobytes() for k, v in model.parameters().items()} == \
            {k: v.tobytes() for k, v in twin.parameters().items()}
    return model, history


def data_routes(call) -> str:
    return call.path.split("/data/", 1)[1] if "/data/" in call.path else ""


def test_a_kept_fit_is_its_rows_added_then_one_request_an_epoch(server, dataless_server, blobs, classifier):
    """The training rows and, after them, the validation rows are added to one data set in one
    request; each epoch's last request also evaluates them (the training data's accuracy, the
    validation data): no request of its own for them, the history the same."""
    x, y = blobs(300, seed=11)
    validation = blobs(50, seed=12)
    calls = []
    with gs.Client(server.url) as client:
        intercepted(client, calls.append)
        model, _ = fit_and_compare(client, dataless_server.url, classifier, x, y, validation)
        model.delete()
    kept = [call for call in calls if data_routes(call)]
    routes = [(call.method, data_routes(call)) for call in kept]
    name = routes[0][1]
    assert routes == [("POST", name)] + [("POST", f"{name}/train_steps")] * EPOCHS + [("DELETE", name)]
    added = kept[0].payload
    assert added["inputs"].shape == (350, 2) and added["targets"].shape == (350,)
    assert np.concatenate(added["inputs"].blocks).tobytes() == np.concatenate([x, validation[0]]).tobytes()


def test_a_data_set_lost_midway_is_sent_again(server, dataless_server, blobs, classifier):
    x, y = blobs(300, seed=1)
    validation = blobs(50, seed=2)
    seen = []

    def restart_drops_it(call):  # what a server restart does to a data set, before the second epoch
        if data_routes(call).endswith("/train_steps") and not seen:
            seen.append(call.path)
            with gs.Client(server.url) as other:
                other.model(call.path.split("/")[3]).delete_data(data_routes(call).split("/")[0])

    with gs.Client(server.url) as client:
        intercepted(client, restart_drops_it)
        model, _ = fit_and_compare(client, dataless_server.url, classifier, x, y, validation)
        assert seen and model.data_sets().data_sets == ()


def room_taker(url: str, spec: dict, free_rows: int, when):
    """Gives a hook that, before the first call `when(call)` picks, has another model's data set
    take the server's room for data sets but `free_rows` rows (16 bytes each), and the list of
    models it made (to delete)."""
    made = []

    def before(call):
        if when(call) and not made:
            with gs.Client(url) as other:
                made.append(other.create_model(spec))
                big = np.zeros((SMALL_DATA_BYTES // 16 - free_rows, 2), np.float32)
                made[0].add_data("hog", big, np.zeros(len(big), np.int64))

    return before, made


def adds_training(call) -> bool:
    return call.method == "POST" and data_routes(call) != "" and "/" not in data_routes(call) \
        and not data_routes(call).endswith("-val")


@pytest.mark.parametrize("rows, validation_rows, free_rows, posts", [
    (400, 0, 200, [""]),  # before fit adds its rows: 200 of its 400 fit; then every batch sent
    # no room for the validation rows with the training rows, nor in a set of their own: the
    # training rows kept alone, the validation rows sent
    (300, 100, 300 + 10, ["", "", "-val"] + ["/train_steps"] * EPOCHS),
], ids=["midway", "for the validation data"])
def test_no_room_sends_the_rest(small_data_server, dataless_server, blobs, classifier, rows, validation_rows,
                                free_rows, posts):
    """`posts`: the fit's POSTs to its data sets, in order, the set's name cut from each."""
    x, y = blobs(rows, seed=3)  # rows of 2 FP32 and an INT64 label: 16 bytes each
    validation = blobs(validation_rows, seed=4) if validation_rows else None
    hook, hogs = room_taker(small_data_server.url, classifier, free_rows, adds_training)
    calls = []
    with gs.Client(small_data_server.url) as client:
        intercepted(client, lambda call: calls.append(call) or hook(call))
        model, _ = fit_and_compare(client, dataless_server.url, classifier, x, y, validation)
        assert hogs and model.data_sets().data_sets == ()
        client.model(hogs[0].id).delete()
    routes = [data_routes(call) for call in calls if call.method == "POST" and data_routes(call)]
    assert [route.removeprefix(routes[0]) for route in routes] == posts, routes


def test_a_one_row_validation_set_of_a_batchnorm_model(server, dataless_server, blobs, classifier):
    spec = {**classifier, "layers": [{"type": "linear", "in_features": 2, "out_features": 8},
                                     {"type": "batchnorm", "num_features": 8}, {"type": "relu"},
                                     {"type": "linear", "out_features": 3}]}
    x, y = blobs(100, seed=6)
    x_val, y_val = blobs(1, seed=7)
    with gs.Client(server.url) as client:
        fit_and_compare(client, dataless_server.url, spec, x, y, (x_val, y_val))


class Interrupt(BaseException):
    """A KeyboardInterrupt stand-in (pytest treats a real one as a request to stop)."""


def test_an_interrupted_fit_deletes_its_data_sets(server, blobs, classifier):
    x, y = blobs(200, seed=8)

    def interrupt(call):
        if data_routes(call).endswith("/train_steps"):
            raise Interrupt

    with gs.Client(server.url) as client:
        model = client.create_model(classifier)
        intercepted(client, interrupt)
        with pytest.raises(Interrupt):
            model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    with gs.Client(server.url) as client:
        assert client.model(model.id).data_sets().data_sets == ()


def test_a_cancelled_async_fit_deletes_its_data_sets(server, blobs, classifier):
    x, y = blobs(200, seed=9)

    async def main():
        async with gs.AsyncClient(server.url) as client:
            model = await client.create_model(classifier)
            send = client._call
            started = asyncio.Event()

            async def call(c):
                if data_routes(c).endswith("/train_steps"):
                    started.set()
                    await asyncio.sleep(30)  # cancelled here
                return await send(c)

            client._call = call
            task = asyncio.create_task(model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            client._call = send
            return (await model.data_sets()).data_sets

    assert asyncio.run(main()) == ()


def test_a_bad_row_fails_at_its_batch_as_without_data_sets(server, dataless_server, blobs, classifier):
    x, y = blobs(200, seed=13)
    y[150] = 9  # not one of the 3 classes: the server refuses the rows it would keep

    def fail(url):
        with gs.Client(url) as client:
            model = client.create_model(classifier)
            with pytest.raises(gs.ValidationError) as caught:
                model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
            return caught.value, model.parameters(), model.data_sets().data_sets

    kept, sent = fail(server.url), fail(dataless_server.url)
    assert kept[0].__notes__ == sent[0].__notes__ == [
        "fit: raised by batch 5 of epoch 1 (the batches before it trained)"]  # rows 128-159
    assert len(kept[0].completed) == len(sent[0].completed) == 4
    assert {k: v.tobytes() for k, v in kept[1].items()} == {k: v.tobytes() for k, v in sent[1].items()}
    assert kept[2] == ()


def test_an_unshuffled_fit_trains_on_the_sets_own_rows(server, dataless_server, blobs, classifier):
    spec = {**classifier, "layers": [{"type": "linear", "in_features": 2, "out_features": 8},
                                     {"type": "batchnorm", "num_features": 8}, {"type": "relu"},
                                     {"type": "dropout", "p": 0.2}, {"type": "linear", "out_features": 3}]}
    x, y = blobs(200, seed=14)
    with gs.Client(server.url) as client:
        fit_and_compare(client, dataless_server.url, spec, x, y, blobs(50, seed=15), shuffle=False)
