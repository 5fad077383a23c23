"""Reading and replacing parameters, reading gradients, diagnostics and gradient checks."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from core import Model
from core import gradcheck as check_gradients
from service.budget import watched
from service.deps import Call, EntryDep, StoreDep
from service.history import to_csv, to_json
from service.schemas import (
    ERRORS, GradcheckRequest, GradcheckResponse, Gradients, History, ModelInfo, Parameters, ParametersBody,
)
from service.tensors import reply
from service.threads import off_loop

# No router-wide authenticate: every route takes Call or EntryDep, which authenticate (a node
# fewer for FastAPI to walk per request; tests/service/test_auth.py checks each /v1 route).
router = APIRouter(prefix="/v1/models/{model_id}", tags=["inspection"], responses=ERRORS)

PAGE = 100_000  # records of a history read without `limit` or `points`; the client reads on from the last
BinaryOutputQuery = Annotated[bool, Query(description="Answer with tensors in binary form.")]


@router.get("/parameters", response_model=Parameters)
async def get_parameters(entry: EntryDep, store: StoreDep, binary_data_output: BinaryOutputQuery = False) -> Response:
    """Gives every parameter as a tensor object, by its PyTorch state_dict name."""
    return await reply({"parameters": await store.run(entry, _parameters)}, binary=binary_data_output)


def _parameters(model: Model) -> dict:
    return {name: p.copy() for name, p in model.parameters().items()}


@router.put("/parameters", response_model=ModelInfo)
async def put_parameters(call: Call[ParametersBody]) -> ModelInfo:
    """Replaces parameters (all names must exist, shapes must match); pending tapes go stale."""
    await call.store.run(call.entry, Model.set_parameters, call.body.parameters, save="always")
    return ModelInfo(**await call.store.info(call.entry))


@router.get("/gradients", response_model=Gradients)
async def get_gradients(entry: EntryDep, store: StoreDep, binary_data_output: BinaryOutputQuery = False) -> Response:
    """Gives the accumulated gradients, by parameter name."""
    return await reply({"gradients": await store.run(entry, _gradients)}, binary=binary_data_output)


def _gradients(model: Model) -> dict:
    return {name: g.copy() for name, g in model.gradients().items()}


@router.get("/diagnostics")
async def diagnostics(entry: EntryDep, store: StoreDep) -> dict:
    """Per-layer gradient and parameter norms, update ratios, dead-ReLU and saturation
    fractions, and vanishing/exploding flags."""
    return await store.run(entry, Model.diagnostics)


@router.get("/history", response_model=History, responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
async def history(entry: EntryDep, store: StoreDep,
                  since: Annotated[int | None, Query(ge=0, description="Only records of later steps.")] = None,
                  limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="At most this many "
                                                     "records, the first after `since` (unset: 100,000, or all of "
                                                     "them with `points`).")] = None,
                  points: Annotated[int | None, Query(ge=2, le=100_000, description="Downsample to at most this "
                                                      "many records, keeping each bucket's extremes.")] = None,
                  format: Annotated[Literal["json", "csv"], Query(description="Columnar JSON, or CSV with one "
                                                                  "row per record.")] = "json") -> Response:
    """One record per applied step: loss, lr, global and per-parameter norms, update/parameter
    ratios, dead and saturated fractions, flags."""
    if limit is None and points is None:
        limit = PAGE
    read = await store.history(entry, since, limit, points)
    if format == "csv":
        return Response(await off_loop(to_csv, read), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{entry.id}-history.csv"'})
    return Response(await off_loop(to_json, read), media_type="application/json")


@router.post("/gradcheck", response_model=GradcheckResponse)
async def gradcheck(call: Call[GradcheckRequest]) -> dict:
    """Compares analytic gradients with central differences in float64, on a copy of the model.

    Stops (503 deadline_exceeded) past GRADSERVE_REQUEST_TIMEOUT_SECONDS, or once the client has gone.
    """
    async with watched(call.request, call.request.app.state.settings.request_timeout_seconds) as budget:
        return await call.store.run(call.entry, _gradcheck, call.body, budget=budget)


def _gradcheck(model: Model, body: GradcheckRequest, should_stop) -> dict:
    return check_gradients(model, body.inputs, body.targets, grad_output=body.grad_output, mode=body.mode,
                           eps=body.eps, atol=body.atol, rtol=body.rtol, max_entries=body.max_entries,
                           seed=body.seed, should_stop=should_stop).to_dict()
