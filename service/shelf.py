"""Models held in one process: their pending tapes, the work run on them, and when their
checkpoints are written.

Both backends hold their models on a Shelf: the embedded store in the server's own process,
each Ray model host (service/cluster.py) in its actor. Whoever calls a Shelf serialises the
calls on one model (an asyncio lock there, a thread lock here); the Shelf itself does no
locking.
"""

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from core import InputError, Model
from service.blas import POLICY
from service.errors import ModelNotFound, ServiceError
from service.persistence import Checkpoints
from service.settings import Settings

T = TypeVar("T")
Save = Literal["no", "later", "step", "always"]


@dataclass(eq=False)
class Held:
    """One model in this process, with its owner and pending tapes."""

    id: str
    model: Model
    owner: str | None
    tapes: OrderedDict[str, tuple[Any, float]] = field(default_factory=OrderedDict)  # id -> (tape, made at)
    dirty: bool = False  # steps taken since the last checkpoint
    deleted: bool = False

    @property
    def dtype(self):
        return self.model.dtype

    @property
    def input_dtype(self):
        return self.model.input_dtype

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters


def describe(model_id: str, model: Model) -> dict:
    """Gives the public description of a model (ModelInfo's fields)."""
    return {"id": model_id, "spec": model.spec,
            "parameter_shapes": {name: list(shape) for name, shape in model.parameter_shapes().items()},
            "num_parameters": model.num_parameters, "step": model.step_count, "version": model.version,
            "accumulated": model.accumulated}


class Shelf:
    """The models of one process, keyed by id, and their checkpoints in the data directory."""

    def __init__(self, settings: Settings, checkpoints: Checkpoints):
        self.settings = settings
        self.checkpoints = checkpoints
        self.held: dict[str, Held] = {}

    def add(self, held: Held) -> None:
        """Writes a new model's owner and checkpoint, then holds it."""
        self.checkpoints.save_owner(held.id, held.owner)  # first, so a checkpoint never lacks its owner
        self.save(held)
        self.held[held.id] = held

    def remove(self, held: Held) -> None:
        """Forgets a model and deletes its checkpoint."""
        held.deleted = True
        self.held.pop(held.id, None)
        self.checkpoints.delete(held.id)

    def writes(self, save: Save) -> bool:
        """Tells whether work saved `save` writes the checkpoint before it answers."""
        return save == "always" or (save == "step" and self.settings.durability == "step")

    def work(self, held: Held, fn: Callable[..., T], args: tuple = (), save: Save = "no",
             keep_tape: bool | None = None) -> T | tuple[Any, str | None]:
        """Gives `fn(model, *args)`, then writes the checkpoint as `save` and the durability ask
        ("later": steps taken, written by the next flush or a later save).

        With `keep_tape` True or False, fn gives (result, tape) and the answer is (result, the
        tape's id): kept for a later backward if True, None if False.
        """
        self.alive(held)
        result = compute(fn, held.model, *args)
        if self.writes(save):
            self.save(held)
        elif save != "no":
            held.dirty = True
        if keep_tape is None:
            return result
        result, tape = result
        return result, self.keep_tape(held, tape) if keep_tape else None

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
        self.checkpoints.save(held.id, held.model.to_bytes())
        held.dirty = False

    @staticmethod
    def alive(held: Held) -> None:
        if held.deleted:
            raise ModelNotFound.of(held.id)


def compute(fn: Callable[..., T], *args: Any) -> T:
    """Gives `fn(*args)`, counted as a computing request by the BLAS thread policy."""
    with POLICY.computing():
        return fn(*args)
