"""Retries with a failing transport: idempotent calls are replayed, step and friends are not."""

import asyncio

import httpx
import numpy as np
import pytest

import gradserve_client as gs
from gradserve_client._model import AsyncRemoteModel, RemoteModel
from gradserve_client._types import ModelInfo

INFO = ModelInfo(id="m", spec={"dtype": "float32", "loss": {"type": "mse"}}, parameter_shapes={},
                 num_parameters=0, step=0, version=0, accumulated=0)
ANSWERS = {
    "/v1/models/m/parameters": {"parameters": {}},
    "/v1/models/m/forward": {"outputs": {"shape": [1, 1], "datatype": "FP32", "data": [0.5]}},
    "/v1/models/m/step": {"step": 1, "lr": 0.1, "grad_norm": 1.0, "update_norm": 0.1},
    "/v1/models/m/train_step": {"loss": 1.0, "grad_norm": 1.0, "step": 1, "lr": 0.1, "update_norm": 0.1},
    "/v1/models/m/gradcheck": {"passed": True, "mode": "entries", "parameters": {}},
}


class Flaky:
    """A transport whose first `failures` requests fail with `failure` (an exception or a status)."""

    def __init__(self, failure, failures=1):
        self.failure, self.failures, self.paths = failure, failures, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if len(self.paths) <= self.failures:
            if isinstance(self.failure, int):
                return httpx.Response(self.failure, json={"detail": "try later", "code": "unavailable"})
            raise self.failure("boom", request=request)
        return httpx.Response(200, json=ANSWERS[request.url.path])


def remote_model(transport, max_retries=2):
    client = gs.Client("http://gradserve.test", max_retries=max_retries,
                       http_client=httpx.Client(transport=httpx.MockTransport(transport)))
    client.initial_retry_delay = 0.0
    return RemoteModel(client, INFO)


X = np.ones((1, 1), dtype=np.float32)
IDEMPOTENT = {
    "parameters": lambda m: m.parameters(),
    "forward": lambda m: m.forward(X),
    "gradcheck": lambda m: m.gradcheck(X, X),
}
NOT_IDEMPOTENT = {
    "step": lambda m: m.step(),
    "train_step": lambda m: m.train_step(X, X),
    "forward with tape": lambda m: m.forward(X, keep_tape=True),
}


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ReadError, 503], ids=str)
@pytest.mark.parametrize("name", IDEMPOTENT)
def test_an_idempotent_call_is_retried_after_a_failure_past_the_send(name, failure):
    transport = Flaky(failure, failures=2)
    IDEMPOTENT[name](remote_model(transport))
    assert len(transport.paths) == 3


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError])
@pytest.mark.parametrize("name", NOT_IDEMPOTENT)
def test_a_state_changing_call_is_not_replayed_after_it_may_have_been_sent(name, failure):
    transport = Flaky(failure)
    with pytest.raises(gs.APIConnectionError) as caught:
        NOT_IDEMPOTENT[name](remote_model(transport))
    assert len(transport.paths) == 1
    assert isinstance(caught.value, gs.APITimeoutError) == (failure is httpx.ReadTimeout)


def test_a_state_changing_call_is_not_replayed_on_503():
    transport = Flaky(503)
    with pytest.raises(gs.ServerError):
        remote_model(transport).step()
    assert len(transport.paths) == 1


def test_work_the_server_stopped_at_its_time_budget_is_not_retried():
    def over_budget(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(503, json={"detail": "gradient check: over the budget", "code": "deadline_exceeded"})

    paths: list[str] = []
    with pytest.raises(gs.DeadlineExceededError) as caught:
        remote_model(over_budget).gradcheck(X, X)
    assert paths == ["/v1/models/m/gradcheck"] and isinstance(caught.value, gs.ServerError)


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout])
def test_step_is_retried_when_the_connection_failed_before_sending(failure):
    transport = Flaky(failure, failures=2)
    assert remote_model(transport).step().step == 1
    assert transport.paths == ["/v1/models/m/step"] * 3


def test_retries_stop_after_max_retries():
    transport = Flaky(httpx.ConnectError, failures=10)
    with pytest.raises(gs.APIConnectionError):
        remote_model(transport, max_retries=3).parameters()
    assert len(transport.paths) == 4


def test_backoff_grows_exponentially_with_jitter_up_to_a_cap():
    client = gs.Client("http://gradserve.test")
    for attempt in range(6):
        expected = min(0.5 * 2**attempt, 8.0)
        assert 0.75 * expected <= client._retry_delay(attempt) <= expected


def test_the_async_client_retries_the_same_way():
    async def main(transport, call):
        http = httpx.AsyncClient(transport=httpx.MockTransport(transport))
        async with gs.AsyncClient("http://gradserve.test", http_client=http) as client:
            client.initial_retry_delay = 0.0
            return await call(AsyncRemoteModel(client, INFO))

    forward = Flaky(httpx.ReadTimeout, failures=2)
    asyncio.run(main(forward, lambda m: m.forward(X)))
    assert len(forward.paths) == 3

    step = Flaky(httpx.ReadTimeout)
    with pytest.raises(gs.APITimeoutError):
        asyncio.run(main(step, lambda m: m.step()))
    assert len(step.paths) == 1
