"""Builds the FastAPI application: settings, store, metrics, error handling, routers."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import errors
from service.metrics import Metrics, RecordRequests
from service.routes import data, inspection, models, ops, training, ui, v2
from service.deps import body_models
from service.direct import Direct
from service.schemas import add_links, add_request_bodies
from service.settings import Settings
from service.store import ModelStore

log = logging.getLogger("gradserve")

DESCRIPTION = """A gradient-computation service: models live on the server; forward, backward,
optimizer steps and gradient checks over HTTP.

Tensors are KServe V2 tensor objects (`{"shape", "datatype", "data"}`). Any route taking tensors
also accepts the binary form: `Content-Type: application/octet-stream`, the header
`Inference-Header-Content-Length: <bytes of the JSON part>`, tensor objects with
`"parameters": {"binary_data_size": <bytes>}` and the raw little-endian bytes after the JSON part.
`"binary_data_output": true` (or `?binary_data_output=true` on GET) answers the same way.

Under `/v2`, every model also answers the Open Inference Protocol (KServe V2) as Triton's clients
speak it: metadata, health and `infer` (an eval-mode forward), errors as `{"error": "<message>"}`.

Try it: create the example model with `POST /v1/models`, then use `xor-mlp` as `model_id`.
"""


def cluster_store(settings: Settings):
    """Gives the Ray-backed store (service/cluster.py), or says how to install Ray."""
    try:
        from service.cluster import ClusterStore
    except ImportError as exc:
        raise SystemExit(f"gradserve: GRADSERVE_RAY_ADDRESS / --ray needs Ray ({exc}): "
                         f"pip install 'gradserve[ray]'") from None
    return ClusterStore(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Gives the gradserve application for `settings` (read from the environment if None)."""
    settings = settings or Settings()
    store = cluster_store(settings) if settings.ray_address else ModelStore(settings)
    metrics = Metrics()
    metrics.watch(models=store.count, tapes=store.pending_tapes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    app = FastAPI(title="gradserve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.store, app.state.metrics = settings, store, metrics
    # Middleware added first runs innermost: Direct's answers are counted and their bugs are 500s.
    app.add_middleware(Direct, fastapi=app)
    errors.install(app)
    app.add_middleware(RecordRequests, metrics=metrics)
    # Routes are matched in order: the training routes, the most frequent by far, first.
    for router in (training.router, data.router, inspection.router, models.router, ops.router, v2.router,
                   ui.router):
        app.include_router(router)
    app.mount("/ui/static", ui.assets(), name="ui-static")

    generate = app.openapi
    app.openapi = lambda: add_links(add_request_bodies(generate(), body_models(app)))
    return app
