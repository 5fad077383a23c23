"""model.history(): the server's per-step records as NumPy columns, sync and async."""

import asyncio

import numpy as np
import pytest

import gradserve_client as gs


def train(model, x, y, steps: int) -> list:
    return [model.train_step(x[i::steps], y[i::steps]) for i in range(steps)]


def test_history_gives_each_steps_record_as_numpy_columns(client, blobs, classifier):
    x, y = blobs(120, seed=1)
    model = client.create_model(classifier)
    results = train(model, x, y, 6)
    history = model.history()
    assert isinstance(history, gs.StepHistory) and len(history) == 6 and history.total == 6
    assert history.step.tolist() == [r.step for r in results] == [1, 2, 3, 4, 5, 6]
    assert history.loss.tolist() == [r.loss for r in results]
    assert history["grad_norm"].tolist() == [r.grad_norm for r in results]
    assert history.lr.dtype == np.float64 and (history.lr == 0.02).all()
    assert set(history.parameters) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert history.parameters["0.weight"]["update_to_param"].shape == (6,)
    assert history.activations["1"]["dead_fraction"] is history["activations.1.dead_fraction"]
    assert history.flags == [[]] * 6
    info = model.refresh()
    assert info.last_loss == results[-1].loss and info.flags == ()


def test_since_limit_and_points(client, blobs, classifier):
    x, y = blobs(200, seed=2)
    model = client.create_model(classifier)
    train(model, x, y, 20)
    whole = model.history()
    page = model.history(since=4, limit=3)
    assert page.step.tolist() == [5, 6, 7] and page.total == 16
    few = model.history(points=6)
    assert few.downsampled and len(few) <= 6 and few.step[0] == 1 and few.step[-1] == 20
    assert (np.nanmin(few.loss), np.nanmax(few.loss)) == (np.nanmin(whole.loss), np.nanmax(whole.loss))
    joined = gs.StepHistory.concat([model.history(limit=8), model.history(since=8)])
    assert joined.step.tolist() == whole.step.tolist()
    for name, column in whole.columns.items():
        assert np.array_equal(joined[name], column, equal_nan=True), name


def test_fit_records_every_step(client, blobs, classifier):
    x, y = blobs(96, seed=3)
    model = client.create_model(classifier)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert model.history().step.tolist() == list(range(1, 7))


def test_to_pandas_gives_a_frame_indexed_by_step(client, blobs, classifier):
    x, y = blobs(40, seed=4)
    model = client.create_model(classifier)
    train(model, x, y, 2)
    history = model.history()
    try:
        import pandas  # noqa: F401  (optional: the client does not need it)
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            history.to_pandas()
        return
    frame = history.to_pandas()
    assert frame.index.name == "step" and frame.index.tolist() == [1, 2]
    assert frame["loss"].tolist() == history.loss.tolist() and frame["flags"].tolist() == ["", ""]
    assert "parameters.0.weight.grad_norm" in frame.columns


def test_async_history(server, blobs, classifier):
    x, y = blobs(60, seed=5)

    async def run():
        async with gs.AsyncClient(server.url) as client:
            model = await client.create_model(classifier)
            results = [await model.train_step(x[i::3], y[i::3]) for i in range(3)]
            return results, await model.history(), await model.history(since=1, limit=1)

    results, history, page = asyncio.run(run())
    assert history.loss.tolist() == [r.loss for r in results]
    assert page.step.tolist() == [2]
