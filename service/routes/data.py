"""A model's data sets (service/datasets.py): rows kept on the server, trained on and evaluated
by row index, so that they cross the wire once."""

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from core import Evaluation, Model
from service.datasets import DataSets, WithData
from service.deps import Call, DataName, EntryDep, StoreDep
from service.routes.training import RUN_BATCHES, Steps, evaluation, step_answer, too_many_batches
from service.schemas import (
    ERRORS, DataEvaluateRequest, DataEvaluation, DataRowsRequest, DataSetInfo, DataSetList, DataTrainRequest,
    DataTrainResponse, StreamErrorBody,
)
from service.tensors import respond

router = APIRouter(prefix="/v1/models/{model_id}/data", tags=["data"], responses=ERRORS)
NamePath = Annotated[DataName, Path()]


@router.get("", response_model=DataSetList)
async def list_data(entry: EntryDep, store: StoreDep) -> DataSetList:
    """Lists the model's data sets, and the room left for more."""
    return DataSetList(**await store.run(entry, WithData(_list)))


def _list(model: Model, data_sets: DataSets) -> dict:
    return {"data_sets": data_sets.describe(), "free_bytes": data_sets.budget.limit - data_sets.budget.used}


@router.post("/{name}", response_model=DataSetInfo)
async def add_data(call: Call[DataRowsRequest], name: NamePath) -> Response:
    """Adds rows (checked as a training batch of the model) to the data set `name`, made if needed.

    Data sets live in the memory of the process holding the model: not in its checkpoint, gone
    with a restart (404 data_not_found) or with the model.
    """
    body = call.body
    return respond(await call.store.run(call.entry, WithData(_add), name, body.inputs, body.targets))


def _add(model: Model, data_sets: DataSets, name: str, inputs, targets) -> dict:
    inputs, targets, _ = model.validate_batch(inputs, targets, train=False)  # rows kept, not yet a batch
    return data_sets.add(name, inputs, targets).describe(name)


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_data(entry: EntryDep, store: StoreDep, name: NamePath) -> Response:
    """Deletes a data set and frees its memory."""
    await store.run(entry, WithData(_drop), name)
    return Response(status_code=204)


def _drop(model: Model, data_sets: DataSets, name: str) -> None:
    data_sets.drop(name)


@router.post("/{name}/train_steps", response_model=DataTrainResponse, responses={409: {"model": StreamErrorBody}})
async def train_on_data(call: Call[DataTrainRequest], name: NamePath) -> Response:
    """Applies a train step on each batch of the given rows, in order: the same steps, bit for
    bit, as train_steps sending those rows; then, if every batch applied, gives the evaluations
    asked for (`evaluate`), each as /data/{name}/evaluate gives it. Every row index, and every
    evaluation's set and rows, is checked before the first step; then, as in train_steps, the
    first batch that fails stops the rest (and no evaluation runs). The batches take the model's
    lock a run at a time (about 10 ms of steps): requests of other clients on the same model may
    run between two runs."""
    body, store, settings = call.body, call.store, call.request.app.state.settings
    size = body.batch_size
    rows = await store.run(call.entry, WithData(_checked_rows), name, body.rows, size, settings.max_tensor_elements,
                           body.evaluate)
    batches = len(range(0, len(rows), size))
    if batches > settings.max_stream_batches:
        raise too_many_batches(settings.max_stream_batches, "the rows make")
    steps, batch = Steps(store, call.request.app.state.metrics, call.entry), 0
    while batch < batches and steps.failure is None:
        # a run is handed the rows of RUN_BATCHES batches at most (on Ray, they travel with each call)
        window = rows[batch * size:(batch + RUN_BATCHES) * size]
        batch += await steps.run(WithData(_train_batch), name, window, size, body.lr, start=0,
                                 stop=len(range(0, len(window), size)))
    if steps.failure is not None or not body.evaluate:
        return await steps.answer()
    try:  # (a set deleted meanwhile: the steps stay applied, the answer is its 404 with them)
        evaluations = await store.run(call.entry, WithData(_evaluations), body.evaluate, settings.max_tensor_elements)
    except Exception as exc:
        steps.fail(exc)
        return await steps.answer()
    return await steps.answer(evaluations=evaluations)


def _checked_rows(model: Model, data_sets: DataSets, name: str, rows, batch_size: int, max_elements: int,
                  evaluate: list[DataEvaluation]):
    """Gives the rows checked (each batch held to GRADSERVE_MAX_TENSOR_ELEMENTS, as if sent), and
    checks the sets and rows of the evaluations asked for after them."""
    rows = data_sets.get(name).index(rows)
    data_sets.check_size(name, min(batch_size, len(rows)), max_elements, ("body", "rows"))
    for index, asked in enumerate(evaluate):
        _evaluated(data_sets, asked.data, asked.rows, max_elements, ("body", "evaluate", index, "rows"))
    return rows


def _evaluations(model: Model, data_sets: DataSets, evaluate: list[DataEvaluation], max_elements: int) -> list[dict]:
    return [_evaluate_rows(model, data_sets, asked.data, asked.rows, max_elements) for asked in evaluate]


def _train_batch(model: Model, data_sets: DataSets, name: str, rows, batch_size: int, lr: float | None,
                 batch: int) -> dict:
    """Gives the train step on batch `batch` of `rows`, row indices of the set (checked again:
    the set may have been deleted and made anew between two runs)."""
    data_set = data_sets.get(name)
    inputs, targets = data_set.take(data_set.index(rows[batch * batch_size:(batch + 1) * batch_size]))
    return step_answer(model.train_step(inputs, targets, lr))


@router.post("/{name}/evaluate", response_model=Evaluation)
async def evaluate_data(call: Call[DataEvaluateRequest], name: NamePath) -> Response:
    """Gives the loss (and a classifier's accuracy) of an eval-mode forward on rows of the data
    set, as /evaluate on those rows gives it; no gradients, no state change."""
    return respond(await call.store.run(call.entry, WithData(_evaluate_rows), name, call.body.rows,
                                        call.request.app.state.settings.max_tensor_elements))


def _evaluate_rows(model: Model, data_sets: DataSets, name: str, rows, max_elements: int) -> dict:
    data_set, rows = _evaluated(data_sets, name, rows, max_elements)
    return evaluation(model, *data_set.take(rows))


def _evaluated(data_sets: DataSets, name: str, rows, max_elements: int, loc: tuple = ("body", "rows")):
    """Gives (the set `name`, its rows to evaluate checked: None for all of them), the rows held
    to GRADSERVE_MAX_TENSOR_ELEMENTS; 404 if there is no such set."""
    data_set = data_sets.get(name)
    rows = None if rows is None else data_set.index(rows, loc)
    data_sets.check_size(name, data_set.rows if rows is None else len(rows), max_elements, loc)
    return data_set, rows
