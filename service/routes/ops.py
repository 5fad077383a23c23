"""Liveness, readiness and metrics; open without an API key."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import MetricsDep, StoreDep
from service.schemas import Status

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Status, response_model_exclude_none=True)
async def healthz() -> Status:
    """Gives 200 while the process serves requests."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def readyz(store: StoreDep) -> Response:
    """Gives 200 once every checkpoint has been loaded, 503 before."""
    if not store.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "models": store.count()})


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(metrics: MetricsDep) -> Response:
    """Gives the Prometheus text exposition of the server's metrics."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
