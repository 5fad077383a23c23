"""The model store: live models, their pending tapes, and when they reach the disk.

Requests on one model are serialised by that model's asyncio lock; the engine's work runs
on a worker thread, so the event loop keeps answering other models meanwhile.
"""

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from core import ID_RE, ID_RULE, InputError, Model, StoppedError
from service.blas import POLICY
from service.budget import Budget
from service.errors import ServiceError
from service.persistence import Checkpoints
from service.settings import Settings
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
Save = Literal["no", "step", "always"]


@dataclass(eq=False)
class Entry:
    """One live model with its owner, lock and pending tapes."""

    id: str
    model: Model
    owner: str | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tapes: OrderedDict[str, tuple[Any, float]] = field(default_factory=OrderedDict)  # id -> (tape, made at)
    dirty: bool = False  # steps taken since the last checkpoint
    deleted: bool = False


class ModelStore:
    """Every model of the server, keyed by id."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models: dict[str, Entry] = {}
        self.skipped: dict[str, str] = {}  # ids whose checkpoint could not be read -> why
        self.ready = False
        self._checkpoints: Checkpoints | None = None
        self._registry = asyncio.Lock()  # creation and deletion
        self._flusher: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Loads every checkpoint of the data directory and starts the interval flusher."""
        POLICY.fix(self.settings.blas_threads)
        self._checkpoints = await off_loop(Checkpoints, self.settings.data_dir)
        loaded, self.skipped = await off_loop(self._checkpoints.load_all)
        for item in loaded:
            self.models[item.id] = Entry(item.id, item.model, item.owner)
        if self.settings.durability == "interval":
            self._flusher = asyncio.create_task(self._flush_every(self.settings.durability_interval_seconds))
        self.ready = True

    async def close(self) -> None:
        """Stops the flusher and writes every model with unsaved steps."""
        self.ready = False
        if self._flusher is not None:
            self._flusher.cancel()
            with suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    async def flush(self) -> None:
        """Writes every model that has steps not yet on disk."""
        for entry in list(self.models.values()):
            if entry.dirty:
                async with entry.lock:
                    if entry.dirty and not entry.deleted:
                        await off_loop(self._save, entry)

    async def _flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("interval checkpoint failed")

    # -- models ------------------------------------------------------------------------

    def get(self, model_id: str, owner: str | None) -> Entry:
        """Gives the model, or 404 if it does not exist or belongs to another key."""
        entry = self.models.get(model_id)
        if entry is None or not _visible(entry, owner):
            raise ServiceError(404, "model_not_found", f"no model {model_id!r}")
        return entry

    def list(self, owner: str | None) -> list[Entry]:
        return [entry for entry in self.models.values() if _visible(entry, owner)]

    async def create(self, spec: dict, owner: str | None) -> Entry:
        """Builds, saves and registers a model from `spec` (201), or raises 409/422."""
        s = self.settings
        async with self._registry:
            model_id = self._free_id(spec.get("id"), owner)
            model = await off_loop(
                lambda: Model.from_spec({**spec, "id": model_id}, max_parameters=s.max_parameters,
                                        max_layers=s.max_layers))
            return await self._register(model_id, model, owner)

    async def import_checkpoint(self, checkpoint: bytes, model_id: str | None, owner: str | None) -> Entry:
        """Registers a model read from a safetensors checkpoint, under `model_id` if given."""
        async with self._registry:
            model = await off_loop(lambda: Model.from_bytes(
                checkpoint, max_parameters=self.settings.max_parameters, max_layers=self.settings.max_layers))
            model_id = self._free_id(model_id or model.spec.get("id"), owner)
            model.spec["id"] = model_id
            return await self._register(model_id, model, owner)

    async def delete(self, model_id: str, owner: str | None) -> None:
        async with self._registry:
            entry = self.get(model_id, owner)
            async with entry.lock:
                entry.deleted = True
                del self.models[model_id]
                await off_loop(self._checkpoints.delete, model_id)

    def _free_id(self, model_id: Any, owner: str | None) -> str:
        """Gives `model_id` (or a new id) if `owner` may register a model under it, else 409/422."""
        if len(self.models) >= self.settings.max_models:
            raise ServiceError(422, "too_many_models", [
                {"loc": ["body"], "msg": f"the server holds {len(self.models)} models, the limit "
                                         f"(GRADSERVE_MAX_MODELS) is {self.settings.max_models}", "type": "limit"}])
        per_key = self.settings.max_models_per_key
        if per_key is not None and owner is not None:
            held = sum(entry.owner == owner for entry in self.models.values())
            if held >= per_key:
                raise ServiceError(422, "too_many_models", [
                    {"loc": ["body"], "msg": f"this API key holds {held} models, the limit per key "
                                             f"(GRADSERVE_MAX_MODELS_PER_KEY) is {per_key}", "type": "limit"}])
        if model_id is None:
            return f"m-{secrets.token_hex(6)}"
        if not isinstance(model_id, str) or not ID_RE.fullmatch(model_id):
            raise ServiceError(422, "validation_error", [
                {"loc": ["body", "id"], "msg": ID_RULE, "type": "string_pattern_mismatch"}])
        if model_id in self.models:
            raise ServiceError(409, "id_taken", f"a model {model_id!r} already exists")
        if model_id in self.skipped:
            raise ServiceError(409, "id_taken", f"the checkpoint of {model_id!r} on disk could not be read "
                                                f"({self.skipped[model_id]}); it is kept, choose another id")
        return model_id

    async def _register(self, model_id: str, model: Model, owner: str | None) -> Entry:
        entry = Entry(model_id, model, owner)

        def save_new() -> None:
            self._checkpoints.save_owner(model_id, owner)  # first, so a checkpoint never lacks its owner
            self._save(entry)

        await off_loop(save_new)
        self.models[model_id] = entry
        return entry

    # -- running the engine ------------------------------------------------------------

    async def run(self, entry: Entry, work: Callable[[], T], save: Save = "no", budget: Budget | None = None,
                  rows: int | None = None) -> T:
        """Gives `work()` run on a worker thread while holding the model's lock.

        save="step" writes the checkpoint before returning when durability is "step" (else
        marks the model dirty); save="always" writes it whatever the durability. With a
        `budget`, work that waited past it never starts, and work that core stops for it
        (StoppedError) answers 503, or 499 when the client has gone. Work on `rows` examples
        that costs less than a thread hop (INLINE_WORK) runs on the event loop itself.
        """
        async with entry.lock:
            self._check_alive(entry)
            if budget is None and rows is not None and self._inline(entry, rows, save):
                return self._work_then_save(entry, work, save)
            if budget is None:
                return await off_loop(self._work_then_save, entry, work, save)
            if budget.expired():
                raise budget.refusal("the request waited for the model and was not started")
            try:
                return await off_loop(self._work_then_save, entry, work, save)
            except StoppedError as exc:
                raise budget.refusal(str(exc)) from None

    async def run_with_tape(self, entry: Entry, tape_id: str, work: Callable[[Any], T]) -> T:
        """Gives `work(tape)` for a pending tape, consuming the tape unless the input was bad."""
        async with entry.lock:
            self._check_alive(entry)
            tape = self._pending(entry).get(tape_id)
            if tape is None:
                raise ServiceError(404, "tape_not_found", f"no pending tape {tape_id!r} (unknown, used, "
                                                          f"evicted or expired)")
            try:
                result = await off_loop(_compute, work, tape[0])
            except (InputError, ServiceError):
                raise  # a bad request: the tape is still good for a corrected one
            except BaseException:
                entry.tapes.pop(tape_id, None)
                raise
            entry.tapes.pop(tape_id, None)
            return result

    def keep_tape(self, entry: Entry, tape: Any) -> str:
        """Stores a tape for a later backward and gives its id; evicts the oldest over the bound."""
        tapes = self._pending(entry)
        while len(tapes) >= self.settings.max_tapes:
            tapes.popitem(last=False)
        tape_id = secrets.token_urlsafe(12)
        tapes[tape_id] = (tape, time.monotonic())
        return tape_id

    def pending_tapes(self) -> int:
        return sum(len(self._pending(entry)) for entry in self.models.values())

    def _pending(self, entry: Entry) -> OrderedDict[str, tuple[Any, float]]:
        """Gives the entry's tapes after dropping the expired ones."""
        oldest = time.monotonic() - self.settings.tape_ttl_seconds
        while entry.tapes and next(iter(entry.tapes.values()))[1] < oldest:
            entry.tapes.popitem(last=False)
        return entry.tapes

    def _check_alive(self, entry: Entry) -> None:
        if entry.deleted:
            raise ServiceError(404, "model_not_found", f"no model {entry.id!r}")

    def _inline(self, entry: Entry, rows: int, save: Save) -> bool:
        writes = save == "always" or (save == "step" and self.settings.durability == "step")
        return not writes and rows * entry.model.num_parameters <= INLINE_WORK

    def _work_then_save(self, entry: Entry, work: Callable[[], T], save: Save) -> T:
        result = _compute(work)
        if save == "always" or (save == "step" and self.settings.durability == "step"):
            self._save(entry)
        elif save == "step":
            entry.dirty = True
        return result

    def _save(self, entry: Entry) -> None:
        self._checkpoints.save(entry.id, entry.model.to_bytes())
        entry.dirty = False


def _compute(work: Callable[..., T], *args: Any) -> T:
    """Gives `work(*args)`, counted as a computing request by the BLAS thread policy."""
    with POLICY.computing():
        return work(*args)


def _visible(entry: Entry, owner: str | None) -> bool:
    return entry.owner is None or entry.owner == owner
