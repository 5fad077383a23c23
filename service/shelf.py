"""Models held in one process: their pending tapes, the work run on them, when their
checkpoints are written, and their histories (service/history.py).

Both backends hold their models on a Shelf: the embedded store in the server's own process,
each Ray model host (service/cluster.py) in its actor. Whoever calls a Shelf serialises the
calls on one model (an asyncio lock there, a thread lock here); the Shelf itself does no
locking.
"""

import logging
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from core import InputError, Model
from service.blas import POLICY
from service.datasets import DataBudget, DataSets, WithData
from service.errors import ModelNotFound, ServiceError
from service.history import History, Snapshot
from service.history import remove as remove_history
from service.persistence import Checkpoints
from service.settings import Settings
from service.tensors import number

log = logging.getLogger("gradserve")

T = TypeVar("T")
Save = Literal["no", "later", "step", "always"]


@dataclass(frozen=True)
class Run:
    """Work of train steps one after another, in one call (a data set's batches): the Shelf
    gives `fn(model, *args, i)` for i = start, start + 1, ... < stop, until one raises or
    `seconds` have passed, each step recorded in the history as one call's step would be; the
    answer is (the results, the exception that stopped the run, or None). One call a run
    instead of one a step: the hop to a worker thread (on Ray, the actor call) once a run."""

    fn: Callable[..., Any]
    start: int
    stop: int
    seconds: float


@dataclass(eq=False)
class Held:
    """One model in this process, with its owner and pending tapes."""

    id: str
    model: Model
    owner: str | None
    tapes: OrderedDict[str, tuple[Any, float]] = field(default_factory=OrderedDict)  # id -> (tape, made at)
    dirty: bool = False  # steps taken since the last checkpoint
    deleted: bool = False
    history: History | None = None  # None with GRADSERVE_HISTORY=false
    data: DataSets | None = None  # its data sets (service/datasets.py), made by Shelf.hold

    @property
    def dtype(self):
        return self.model.dtype

    @property
    def input_dtype(self):
        return self.model.input_dtype

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters


def describe(held: Held) -> dict:
    """Gives the public description of a model (ModelInfo's fields)."""
    model = held.model
    if held.history is not None:
        last = held.history.last  # read back from the file after a restart
    else:  # GRADSERVE_HISTORY=false: the model's own last step, as long as this process holds it
        last = model.step_record() or {"loss": None, "flags": []}
    return {"id": held.id, "spec": model.spec,
            "parameter_shapes": {name: list(shape) for name, shape in model.parameter_shapes().items()},
            "num_parameters": model.num_parameters, "step": model.step_count, "version": model.version,
            "accumulated": model.accumulated, "last_loss": number(last["loss"]), "flags": last["flags"]}


class Shelf:
    """The models of one process, keyed by id, and their checkpoints in the data directory."""

    def __init__(self, settings: Settings, checkpoints: Checkpoints):
        self.settings = settings
        self.checkpoints = checkpoints
        self.held: dict[str, Held] = {}
        self.data_budget = DataBudget(settings.max_data_bytes)
        self.histories = settings.data_dir / "history"
        self.histories.mkdir(parents=True, exist_ok=True)

    def hold(self, held: Held) -> None:
        """Holds a model read from its checkpoint, with its history up to the checkpoint's step
        (a history file that cannot be read is set aside and a new one started: it must never
        keep the model from being served)."""
        if self.settings.history:
            path = self._history_path(held.id)
            try:
                held.history = History(path, held.model.step_count)
            except (sqlite3.Error, OSError) as exc:
                held.history = _start_over(held, path, exc)
        held.data = DataSets(self.data_budget, self.settings.data_ttl_seconds)
        self.held[held.id] = held

    def add(self, held: Held) -> None:
        """Writes a new model's owner and checkpoint, then holds it, with an empty history."""
        self.checkpoints.save_owner(held.id, held.owner)  # first, so a checkpoint never lacks its owner
        remove_history(self._history_path(held.id))  # a model deleted while its file was kept
        self.save(held)
        self.hold(held)

    def remove(self, held: Held) -> None:
        """Forgets a model and deletes its checkpoint and history."""
        held.deleted = True
        self.held.pop(held.id, None)
        held.data.clear()
        self.checkpoints.delete(held.id)
        if held.history is not None:
            held.history.close()
        remove_history(self._history_path(held.id))

    def close(self) -> None:
        """Closes every history file (after a flush has written them)."""
        for held in self.held.values():
            if held.history is not None:
                held.history.close()

    def snapshot(self, held: Held) -> Snapshot:
        """Gives what reading the model's history needs (called under its lock; the read is
        not), or 404 with GRADSERVE_HISTORY=false."""
        self.alive(held)
        if held.history is None:
            raise ServiceError(404, "history_off", "this server keeps no history (GRADSERVE_HISTORY=false)")
        return held.history.snapshot()

    @staticmethod
    def read(held: Held, snapshot: Snapshot, since: int | None, limit: int | None, points: int | None) -> dict:
        """Gives the records of a snapshot (Snapshot.read); 404 if the model was deleted meanwhile."""
        try:
            return snapshot.read(since, limit, points)
        except sqlite3.Error:
            Shelf.alive(held)
            raise

    def _history_path(self, model_id: str):
        return self.histories / f"{model_id}.sqlite"

    def writes(self, save: Save) -> bool:
        """Tells whether work saved `save` writes the checkpoint before it answers."""
        return save == "always" or (save == "step" and self.settings.durability == "step")

    def work(self, held: Held, fn: Callable[..., T], args: tuple = (), save: Save = "no",
             keep_tape: bool | None = None,
             later: list[Callable[[], None]] | None = None) -> T | tuple[Any, str | None]:
        """Gives `fn(model, *args)` (a Run's results), then writes the checkpoint as `save` and
        the durability ask ("later": steps taken, written by the next flush or a later save).

        With `keep_tape` True or False, fn gives (result, tape) and the answer is (result, the
        tape's id): kept for a later backward if True, None if False. A WithData fn is given the
        model's data sets after the model. With `later` (a list; not for a Run, nor with a save
        that writes), the history record of the step fn took is not made but put in `later`,
        for the caller to make once the answer is on its way, still holding the model.
        """
        self.alive(held)
        result = self._run(held, fn, args) if isinstance(fn, Run) else self._call(held, fn, args, later)
        if self.writes(save):
            self.save(held)
        elif save != "no":
            held.dirty = True
        if keep_tape is None:
            return result
        result, tape = result
        return result, self.keep_tape(held, tape) if keep_tape else None

    def _call(self, held: Held, fn: Callable[..., T], args: tuple,
              later: list[Callable[[], None]] | None = None) -> T:
        """Gives `fn(model, *args)` (with the model's data sets if WithData), recording the step it
        took (or, with `later`, putting the recording in it)."""
        steps = held.model.step_count
        if isinstance(fn, WithData):
            result = compute(fn.fn, held.model, held.data, *args)
        else:
            result = compute(fn, held.model, *args)
        if held.history is not None and held.model.step_count != steps:
            if later is None:
                held.history.append(held.model.step_record())
            else:
                later.append(partial(_record, held.history, held.model))
        return result

    def _run(self, held: Held, run: Run, args: tuple) -> tuple[list, Exception | None]:
        """Gives the results of a Run's steps, and the exception that stopped it (see Run)."""
        results: list = []
        started = time.perf_counter()
        for i in range(run.start, run.stop):
            try:
                results.append(self._call(held, run.fn, (*args, i)))
            except Exception as exc:  # the caller answers it, after the steps before it
                return results, exc
            if time.perf_counter() - started >= run.seconds:
                break
        return results, None

    def work_on_tape(self, held: Held, tape_id: str, fn: Callable[..., T], args: tuple = ()) -> T:
        """Gives `fn(model, tape, *args)` for a pending tape, consuming the tape unless the
        input was bad (a corrected request may use it again)."""
        self.alive(held)
        tape = self.pending(held).get(tape_id)
        if tape is None:
            raise ServiceError(404, "tape_not_found", f"no pending tape {tape_id!r} (unknown, used, "
                                                      f"evicted or expired)")
        try:
            result = compute(fn, held.model, tape[0], *args)
        except (InputError, ServiceError):
            raise
        except BaseException:
            held.tapes.pop(tape_id, None)
            raise
        held.tapes.pop(tape_id, None)
        return result

    def keep_tape(self, held: Held, tape: Any) -> str:
        """Stores a tape for a later backward and gives its id; evicts the oldest over the bound."""
        tapes = self.pending(held)
        while len(tapes) >= self.settings.max_tapes:
            tapes.popitem(last=False)
        tape_id = secrets.token_urlsafe(12)
        tapes[tape_id] = (tape, time.monotonic())
        return tape_id

    def pending(self, held: Held) -> OrderedDict[str, tuple[Any, float]]:
        """Gives the model's tapes after dropping the expired ones."""
        oldest = time.monotonic() - self.settings.tape_ttl_seconds
        while held.tapes and next(iter(held.tapes.values()))[1] < oldest:
            held.tapes.popitem(last=False)
        return held.tapes

    def pending_tapes(self) -> int:
        """Gives the tapes not yet expired; only counts (it may run beside a model's work)."""
        oldest = time.monotonic() - self.settings.tape_ttl_seconds
        return sum(made >= oldest for held in list(self.held.values()) for _, made in list(held.tapes.values()))

    def save(self, held: Held) -> None:
        """Writes the model's history and its checkpoint, the new checkpoint replacing the old
        only once the history is on disk (never a checkpoint ahead of its history)."""
        history = held.history
        self.checkpoints.save(held.id, held.model.to_bytes(),
                              beside=history.flush if history is not None and history.buffered else None)
        held.dirty = False

    @staticmethod
    def alive(held: Held) -> None:
        if held.deleted:
            raise ModelNotFound.of(held.id)


def _start_over(held: Held, path, error: Exception) -> History | None:
    """Gives a new history for a model whose history file could not be opened, the old file
    moved aside; None (no history kept) if that fails too."""
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    log.error("history of %s unreadable (%s: %s): moved to %s, starting a new one", held.id,
              type(error).__name__, error, aside.name)
    try:
        path.replace(aside)
        remove_history(path)
        return History(path, held.model.step_count)
    except (sqlite3.Error, OSError):
        log.exception("no history for %s", held.id)
        return None


def _record(history: History, model: Model) -> None:
    history.append(model.step_record())


def compute(fn: Callable[..., T], *args: Any) -> T:
    """Gives `fn(*args)`, counted as a computing request by the BLAS thread policy."""
    with POLICY.computing():
        return fn(*args)
