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


def test_no_room_midway_sends_the_rest(small_data_server, dataless_server, blobs, classifier):
    x, y = blobs(400, seed=3)  # 400 rows of 2 FP32 and an INT64 label: 6,400 bytes
    hog = []

    def another_fit_takes_the_room(call):  # after fit saw the room, before its stream fills it
        if call.params and "keep" in call.params and not hog:
            with gs.Client(small_data_server.url) as other:
                hog.append(other.create_model(classifier))
                big = np.zeros((SMALL_DATA_BYTES // 16 - 200, 2), np.float32)  # leaves room for 200 rows
                hog[0].add_data("hog", big, np.zeros(len(big), np.int64))

    with gs.Client(small_data_server.url) as client:
        intercepted(client, another_fit_takes_the_room)
        model, _ = fit_and_compare(client, dataless_server.url, classifier, x, y, None)
        assert hog and model.data_sets().data_sets == ()
    with gs.Client(small_data_server.url) as other:
        other.model(hog[0].id).delete()


def test_no_room_for_the_validation_data_sends_it(small_data_server, dataless_server, blobs, classifier):
    x, y = blobs(300, seed=4)
    validation = blobs(100, seed=5)
    hog = []

    def room_taken_before_validation(call):
        if call.method == "POST" and data_routes(call).endswith("-val") and not hog:
            with gs.Client(small_data_server.url) as other:
                hog.append(other.create_model(classifier))
                big = np.zeros(((SMALL_DATA_BYTES - 300 * 16) // 16 - 10, 2), np.float32)
                hog[0].add_data("hog", big, np.zeros(len(big), np.int64))

    with gs.Client(small_data_server.url) as client:
        intercepted(client, room_taken_before_validation)
        model, _ = fit_and_compare(client, dataless_server.url, classifier, x, y, validation)
        assert hog and model.data_sets().data_sets == ()
    with gs.Client(small_data_server.url) as other:
        other.model(hog[0].id).delete()


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
