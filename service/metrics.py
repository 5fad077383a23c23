"""Prometheus metrics, in a registry of the app's own (so several apps can share a process)."""

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The server's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gradserve_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("gradserve_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route"], registry=r,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.steps = Counter("gradserve_steps", "Optimizer steps applied.", registry=r)
        self.refused_steps = Counter("gradserve_refused_steps", "Steps refused, by reason.", ["reason"], registry=r)
        self.models = Gauge("gradserve_models", "Models held by the server.", registry=r)
        self.tapes = Gauge("gradserve_pending_tapes", "Tapes waiting for a backward.", registry=r)

    def watch(self, models: Callable[[], float], tapes: Callable[[], float]) -> None:
        """Makes the gauges read their values at scrape time."""
        self.models.set_function(models)
        self.tapes.set_function(tapes)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RecordRequests:
    """ASGI middleware counting each request by its route template, and timing it."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics
        # labels() builds and looks up a child per call; the few (method, route, status) seen
        # are kept here instead (a few microseconds a request).
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = getattr(scope.get("route"), "path", "<unmatched>")
            method = scope.get("method", "")
            counter = self._counters.get((method, route, status))
            if counter is None:
                counter = self._counters[method, route, status] = self.metrics.requests.labels(method, route, str(status))
            timer = self._timers.get((method, route))
            if timer is None:
                timer = self._timers[method, route] = self.metrics.latency.labels(method, route)
            counter.inc()
            timer.observe(time.perf_counter() - start)
