"""The model store: where models live, and the one interface the routes use to reach them.

The embedded store (this file) keeps every model in the server's process. Requests on one
model are serialised by that model's asyncio lock; the engine's work runs on a worker thread,
so the event loop keeps answering other models meanwhile. The Ray store (service/cluster.py)
has the same methods and keeps the models in actors.

Work is a function of the model, `fn(model, *args)`, so that either store can run it where
the model is.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np

from core import Model, StoppedError
from service.blas import POLICY
from service.budget import Budget
from service.errors import ModelNotFound, invalid
from service.history import BUFFERED
from service.persistence import Checkpoints
from service.registry import Registry
from service.settings import Settings
from service.shelf import Held, Save, Shelf, describe
from service.threads import off_loop

log = logging.getLogger("gradserve")

T = TypeVar("T")

# Multiply-adds (examples x parameters) below which a request's compute (tens of microseconds)
# costs less than the hop to a worker thread and back: it runs on the event loop.
INLINE_WORK = 1 << 17


def inline_rows(inputs: Any) -> int | None:
    """Gives the examples of (N, D) float inputs, whose cost is about N x parameters; None for
    anything else (sequences, images, token indices: their cost grows with T or H x W too)."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.dtype.kind == "f":
        return inputs.shape[0]
    return None


async def flush_dirty(shelf: Shelf, lock_of: Callable[[Held], asyncio.Lock | None]) -> None:
    """Writes every model of `shelf` with steps not yet on disk, each under its lock (None: the
    model is gone meanwhile)."""
    for held in list(shelf.held.values()):
        lock = lock_of(held)
        if held.dirty and lock is not None:
            async with lock:
                if held.dirty and not held.deleted:
                    await off_loop(shelf.save, held)


async def expire_data(shelf: Shelf, lock_of: Callable[[Held], asyncio.Lock | None]) -> None:
    """Drops the data sets of `shelf`'s models unused for GRADSERVE_DATA_TTL_SECONDS, each under
    its model's lock (None: the model is gone meanwhile)."""
    for held in list(shelf.held.values()):
        lock = lock_of(held)
        if held.data.idle() and lock is not None:
            async with lock:
                if not held.deleted:
                    held.data.expire()


def expiry_seconds(settings: Settings) -> float:
    """Gives how often idle data sets are looked for: often enough that none outlives its time
    by more than half of it, or a minute."""
    return min(settings.data_ttl_seconds / 2, 60.0)


async def every(seconds: float, work: Callable[[], Awaitable[None]], what: str) -> None:
    """Runs `work` every `seconds`, logging what fails as `what`."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:
            log.exception("%s failed", what)


@dataclass(eq=False)
class Entry(Held):
    """One live model of the embedded store, with the lock its requests take in turn."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelStore:
    """Every model of the server, in this process, keyed by id."""

    # A train_steps stream's batches only mark the model dirty; the stream saves once at its
    # end (under durability "step", before its answer): the process that answers holds the model.
    stream_save: Save = "later"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry()
        self.ready = False
        self._shelf: Shelf | None = None
        self._creating = asyncio.Lock()  # creation and deletion
        self._flusher: asyncio.Task | None = None
        self._expirer: asyncio.Task | None = None  # drops idle data sets

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Loads every checkpoint of the data directory and starts the interval flusher."""
        POLICY.fix(self.settings.blas_threads)
        checkpoints = await off_loop(Checkpoints, self.settings.data_dir)
        self._shelf = Shelf(self.settings, checkpoints)
        loaded, self.registry.skipped = await off_loop(checkpoints.load_all)
        for item in loaded:
            await off_loop(self._shelf.hold, Entry(item.id, item.model, item.owner))
            self.registry.owners[item.id] = item.owner
        if self.settings.durability == "interval":
            self._flusher = asyncio.create_task(every(self.settings.durability_interval_seconds, self.flush,
                                                      "interval checkpoint"))
        self._expirer = asyncio.create_task(every(expiry_seconds(self.settings), self.expire_data,
                                                  "dropping idle data sets"))
        self.ready = True
        log.info("data in %s: %d models loaded, %d skipped, durability=%s", self.settings.data_dir.resolve(),
                 len(loaded), len(self.registry.skipped), self.settings.durability)

    async def close(self) -> None:
        """Stops the flusher and the expirer, and writes every model with unsaved steps."""
        self.ready = False
        for task in (self._flusher, self._expirer):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await self.flush()
        if self._shelf is not None:
            self._shelf.close()

    async def flush(self) -> None:
        """Writes every model that has steps not yet on disk."""
        await flush_dirty(self._shelf, lambda entry: entry.lock)

    async def expire_data(self) -> None:
        """Drops every data set unused for GRADSERVE_DATA_TTL_SECONDS."""
        await expire_data(self._shelf, lambda entry: entry.lock)

    def count(self) -> int:
        """Gives the number of models."""
        return len(self.registry)

    def pending_tapes(self) -> int:
        return self._shelf.pending_tapes() if self._shelf is not None else 0

    # -- models ------------------------------------------------------------------------

    async def get(self, model_id: str, owner: str | None) -> Entry:
        """Gives the model, or 404 if it does not exist or belongs to another key."""
        if not self.registry.visible(model_id, owner):
            raise ModelNotFound.of(model_id)
        return self._shelf.held[model_id]

    async def info(self, entry: Entry) -> dict:
        """Gives the model's description (ModelInfo's fields)."""
        return describe(entry)

    async def list(self, owner: str | None) -> list[dict]:
        return [describe(self._shelf.held[model_id]) for model_id in self.registry.ids_of(owner)]

    async def create(self, spec: dict, owner: str | None) -> dict:
        """Builds, saves and registers a model from `spec` (201), or raises 409/422."""
        s = self.settings
        async with self._creating:
            model_id = self.registry.free_id(spec.get("id"), owner, s)
            model = await off_loop(lambda: Model.from_spec({**spec, "id": model_id}, max_parameters=s.max_parameters,
                                                           max_layers=s.max_layers))
            _single_process(model)
            return await self._register(model_id, model, owner)

    async def import_checkpoint(self, checkpoint: bytes, model_id: str | None, owner: str | None) -> dict:
        """Registers a model read from a safetensors checkpoint, under `model_id` if given."""
        s = self.settings
        async with self._creating:
            model = await off_loop(lambda: Model.from_bytes(checkpoint, max_parameters=s.max_parameters,
                                                            max_layers=s.max_layers))
            _single_process(model)
            model_id = self.registry.free_id(model_id or model.spec.get("id"), owner, s)
            model.spec["id"] = model_id
            return await self._register(model_id, model, owner)

    async def delete(self, entry: Entry) -> None:
        async with self._creating:
            async with entry.lock:
                self._shelf.alive(entry)
                self.registry.owners.pop(entry.id, None)
                await off_loop(self._shelf.remove, entry)

    async def _register(self, model_id: str, model: Model, owner: str | None) -> dict:
        entry = Entry(model_id, model, owner)
        await off_loop(self._shelf.add, entry)
        self.registry.owners[model_id] = owner
        return describe(entry)

    # -- running the engine ------------------------------------------------------------

    async def run(self, entry: Entry, fn: Callable[..., T], *args: Any, save: Save = "no",
                  budget: Budget | None = None, rows: int | None = None, keep_tape: bool | None = None) -> T:
        """Gives `fn(model, *args)` run on a worker thread while holding the model's lock.

        save="step" writes the checkpoint before returning when durability is "step" (else
        marks the model dirty); save="always" writes it whatever the durability; "later" only
        marks it dirty. With `keep_tape` (True or False) fn gives (result, tape) and run gives
        (result, the tape's id if kept, else None). With a `budget`, fn is called with
        `should_stop=budget.expired`; work that waited past it never starts, and work that core
        stops for it (StoppedError) answers 503, or 499 when the client has gone. Work on `rows`
        examples that costs less than a thread hop (INLINE_WORK) runs on the event loop itself,
        and the history record of the step it took is made after the answer is sent
        (_made_then_released)."""
        shelf, lock = self._shelf, entry.lock
        await lock.acquire()
        later: list[Callable[[], None]] = []
        try:
            if budget is None and rows is not None and self._inline(entry, rows, save):
                return shelf.work(entry, fn, args, save, keep_tape, later=later)
            if budget is None:
                return await off_loop(shelf.work, entry, fn, args, save, keep_tape)
            if budget.expired():
                raise budget.refusal("the request waited for the model and was not started")
            try:
                return await off_loop(shelf.work, entry, partial(fn, should_stop=budget.expired), args, save,
                                      keep_tape)
            except StoppedError as exc:
                raise budget.refusal(str(exc)) from None
        finally:
            if later:  # the record after the answer: see _made_then_released
                asyncio.get_running_loop().call_soon(_made_then_released, later, lock)
            else:
                lock.release()

    async def run_on_tape(self, entry: Entry, tape_id: str, fn: Callable[..., T], *args: Any) -> T:
        """Gives `fn(model, tape, *args)` for a pending tape, consuming the tape unless the input was bad."""
        async with entry.lock:
            return await off_loop(self._shelf.work_on_tape, entry, tape_id, fn, args)

    async def history(self, entry: Entry, since: int | None, limit: int | None, points: int | None) -> dict:
        """Gives the model's history records (Snapshot.read), read without holding its lock."""
        async with entry.lock:
            snapshot = await off_loop(self._shelf.snapshot, entry)
        return await off_loop(self._shelf.read, entry, snapshot, since, limit, points)

    def _inline(self, entry: Entry, rows: int, save: Save) -> bool:
        full = entry.history is not None and entry.history.buffered >= BUFFERED - 1  # its step writes them
        return not self._shelf.writes(save) and not full and rows * entry.num_parameters <= INLINE_WORK


def _made_then_released(later: list[Callable[[], None]], lock: asyncio.Lock) -> None:
    """Makes the records of work run on the event loop, then releases the model's lock.

    Called soon after the work, from the loop: the work's request answers first, since nothing
    between its return and the socket's write yields to the loop, so the record (~25 us for a
    small model, as much as parsing its body) is made while the client reads the answer. The
    lock is held until then, so whatever takes it next (a step, a history read, a checkpoint)
    finds the record made; and a request that reads without it (a model's description) has its
    first turn on the loop after this callback, which was scheduled before it arrived."""
    try:
        for make in later:
            make()
    except Exception:
        log.exception("recording a step in the history failed")
    finally:
        lock.release()


def _single_process(model: Model) -> None:
    """Refuses a model that asks for more than this process: worker actors need Ray."""
    if model.spec.get("workers", 1) > 1:
        raise invalid(["body", "workers"], f"workers={model.spec['workers']} needs a Ray-backed server "
                      f"(gradserve serve --ray ADDRESS); this one computes in one process: use 1")
