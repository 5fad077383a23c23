"""Data sets a model keeps on the server, so that training data crosses the wire once.

A fit adds its rows with `POST /data/{name}` (a train_steps stream may keep its batches too,
`?keep=<name>`); its epochs and its evaluations then name rows of the set
(`/data/{name}/train_steps`, `/data/{name}/evaluate`) instead of sending them again.

A data set lives in the memory of the process that holds its model (the server, or the
model's Ray host), as the model's pending tapes do: it is not part of the checkpoint, a
restart drops it (404 data_not_found) and deleting the model drops its sets. The sets of one
process hold at most GRADSERVE_MAX_DATA_BYTES together (413 data_too_large beyond). A set
nobody used for GRADSERVE_DATA_TTL_SECONDS is dropped too, so that the sets of a client killed
mid-fit do not hold their memory until the model goes.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import ServiceError, invalid
from service.tensor_object import DATATYPE_OF
from service.tensors import check_size


@dataclass(frozen=True)
class WithData:
    """Work on a model and its data sets: the Shelf calls `fn(model, data_sets, *args)`."""

    fn: Callable[..., Any]


class DataBudget:
    """The bytes the data sets of one process may hold together; models on pool threads share it."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        """Counts `nbytes` more, or raises 413 if they do not fit."""
        with self._lock:
            if self.used + nbytes > self.limit:
                raise ServiceError(413, "data_too_large", f"the data sets of this server would hold "
                                   f"{self.used + nbytes} bytes, over the limit of {self.limit} "
                                   f"(GRADSERVE_MAX_DATA_BYTES); delete some (DELETE /data/{{name}})")
            self.used += nbytes

    def give(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class DataSet:
    """Rows of (inputs, targets), appended in order and read by row index.

    Appended rows are kept as they came, without a copy; the first read after an append joins
    them into one array each (one copy of every row in all, however many appends).
    """

    def __init__(self, inputs: np.ndarray, targets: np.ndarray):
        self.rows, self.nbytes = 0, 0
        self.used = time.monotonic()  # last added to or read
        self._parts = [(np.empty((0, *inputs.shape[1:]), inputs.dtype),
                        np.empty((0, *targets.shape[1:]), targets.dtype))]

    def check(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        """Raises 422 unless (inputs, targets) are rows like this set's: same row shapes, dtypes."""
        for name, new, held in zip(("inputs", "targets"), (inputs, targets), self._parts[0]):
            if new.shape[1:] != held.shape[1:] or new.dtype != held.dtype:
                raise invalid(["body", name], f"rows of shape {list(new.shape[1:])} and {DATATYPE_OF[new.dtype]} "
                              f"do not go with the data set's, {list(held.shape[1:])} and {DATATYPE_OF[held.dtype]}")
        if len(inputs) != len(targets):
            raise invalid(["body", "targets"], f"{len(targets)} targets for {len(inputs)} inputs")

    def append(self, inputs: np.ndarray, targets: np.ndarray, budget: DataBudget) -> None:
        """Adds rows checked by `check`, their bytes taken from `budget`. Arrays whose memory is
        not the Python heap's (a Ray object store's buffer) are copied, so as not to pin it."""
        budget.take(inputs.nbytes + targets.nbytes)
        self._parts.append((_owned(inputs), _owned(targets)))
        self.rows += len(inputs)
        self.nbytes += inputs.nbytes + targets.nbytes

    def pop(self, budget: DataBudget) -> None:
        """Undoes the last append, if nothing read the set since."""
        inputs, targets = self._parts.pop()
        self.rows -= len(inputs)
        self.nbytes -= inputs.nbytes + targets.nbytes
        budget.give(inputs.nbytes + targets.nbytes)

    def take(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Gives (inputs, targets) of the rows at `rows` (row indices, in their order), all if None.

        Consecutive rows (a fit's evaluation ranges, an unshuffled epoch's batches) are read-only
        views of the set, not copies (4 ranges of 2,048 rows of 784 floats evaluated in 27.7 ms
        over HTTP, 4 shuffled sets of as many rows in 29.6)."""
        inputs, targets = self._joined()
        if rows is None:
            return inputs, targets
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or (np.diff(rows) == 1).all()):
            return _read_only(inputs[rows[0]:rows[-1] + 1]), _read_only(targets[rows[0]:rows[-1] + 1])
        return inputs[rows], targets[rows]

    def _joined(self) -> tuple[np.ndarray, np.ndarray]:
        """Gives the rows as one array each, joining the parts appended since the last join: part
        by part into the new arrays, each part let go once copied, so the join needs little more
        memory than the set. A set of one append keeps that append's arrays (a fit's rows added
        in one request: their bytes are not copied again)."""
        if len(self._parts) == 2 and not len(self._parts[0][0]):
            self._parts = [(_unpinned(self._parts[1][0]), _unpinned(self._parts[1][1]))]
        elif len(self._parts) > 1:
            first_inputs, first_targets = self._parts[0]
            inputs = np.empty((self.rows, *first_inputs.shape[1:]), first_inputs.dtype)
            targets = np.empty((self.rows, *first_targets.shape[1:]), first_targets.dtype)
            parts, self._parts, start = self._parts[::-1], [], 0
            while parts:
                part_inputs, part_targets = parts.pop()
                inputs[start:start + len(part_inputs)] = part_inputs
                targets[start:start + len(part_inputs)] = part_targets
                start += len(part_inputs)
                del part_inputs, part_targets
            self._parts = [(inputs, targets)]
        return self._parts[0]

    def index(self, rows: Any, loc: tuple = ("body", "rows")) -> np.ndarray:
        """Gives `rows` checked as a 1-D array of integer row indices of this set (422 otherwise)."""
        if not isinstance(rows, np.ndarray) or rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise invalid(list(loc), "rows must be a 1-D tensor of integer row indices")
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            bad = int(rows.min()) if rows.min() < 0 else int(rows.max())
            raise invalid(list(loc), f"row {bad} is not in the data set, which has {self.rows} rows "
                          f"(0..{self.rows - 1})")
        return rows

    def describe(self, name: str) -> dict:
        inputs, targets = self._parts[0]
        return {"name": name, "rows": self.rows,
                "inputs": {"shape": [self.rows, *inputs.shape[1:]], "datatype": DATATYPE_OF[inputs.dtype]},
                "targets": {"shape": [self.rows, *targets.shape[1:]], "datatype": DATATYPE_OF[targets.dtype]},
                "bytes": self.nbytes}


def _read_only(view: np.ndarray) -> np.ndarray:
    view.flags.writeable = False  # the set's own rows: work that wrote them would change the set
    return view


def _root(array: np.ndarray) -> object:
    """Gives the object whose memory `array` views (itself if it owns its memory)."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def _owned(array: np.ndarray) -> np.ndarray:
    """Gives `array`, copied unless its memory is numpy's or a Python bytes object's."""
    return array if isinstance(_root(array), (np.ndarray, bytes, bytearray)) else array.copy()


def _unpinned(array: np.ndarray) -> np.ndarray:
    """Gives `array`, copied if the memory it keeps alive (the whole body of the request that
    brought it: labels beside converted inputs) is more than twice its own."""
    root = _root(array)
    held = root.nbytes if isinstance(root, np.ndarray) else len(root)  # type: ignore[arg-type]
    return array.copy() if held > 2 * array.nbytes + 4096 else array


class DataSets:
    """The data sets of one model, by name, their bytes counted in the process's budget; a set
    unused for `ttl_seconds` is dropped by the next call, or by `expire`."""

    def __init__(self, budget: DataBudget, ttl_seconds: float):
        self.budget, self.ttl_seconds = budget, ttl_seconds
        self.sets: dict[str, DataSet] = {}

    def get(self, name: str) -> DataSet:
        self.expire()
        found = self.sets.get(name)
        if found is None:
            raise ServiceError(404, "data_not_found", f"no data set {name!r} on this model (data sets live in the "
                               f"server's memory: a restart drops them, and a set unused for "
                               f"GRADSERVE_DATA_TTL_SECONDS; add rows with POST /data/{{name}})")
        found.used = time.monotonic()
        return found

    def add(self, name: str, inputs: np.ndarray, targets: np.ndarray) -> DataSet:
        """Appends rows (checked by the model first) to the set `name`, making it if needed."""
        self.expire()
        data_set = self.sets.get(name) or DataSet(inputs, targets)
        data_set.check(inputs, targets)
        data_set.append(inputs, targets, self.budget)
        data_set.used = time.monotonic()
        self.sets[name] = data_set
        return data_set

    def check_size(self, name: str, rows: int, max_elements: int, loc: tuple) -> None:
        """Raises 413 if `rows` rows of the set's inputs would be a tensor over `max_elements`
        (GRADSERVE_MAX_TENSOR_ELEMENTS holds rows named as it holds rows sent)."""
        inputs = self.get(name).take(np.arange(0))[0]
        check_size(rows * math.prod(inputs.shape[1:]), loc, max_elements)

    def drop(self, name: str) -> None:
        self.get(name)  # 404 if there is none
        self._forget(name)

    def clear(self) -> None:
        for name in list(self.sets):
            self._forget(name)

    def _forget(self, name: str) -> None:
        self.budget.give(self.sets.pop(name).nbytes)

    def idle(self) -> bool:
        """Tells whether a set is due to expire (read without the model's lock: only looks)."""
        oldest = time.monotonic() - self.ttl_seconds
        return any(data_set.used < oldest for data_set in list(self.sets.values()))

    def expire(self) -> None:
        """Drops the sets unused for ttl_seconds."""
        oldest = time.monotonic() - self.ttl_seconds
        for name in [name for name, data_set in self.sets.items() if data_set.used < oldest]:
            self._forget(name)

    def describe(self) -> list[dict]:
        self.expire()
        return [data_set.describe(name) for name, data_set in self.sets.items()]
