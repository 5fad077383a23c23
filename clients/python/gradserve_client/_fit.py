"""Keras-style training loop shared by RemoteModel.fit and AsyncRemoteModel.fit.

`FitLoop.calls` is the whole loop, written once without I/O: a generator of the calls to make,
in order, each sent back its answer (or thrown its error) by the model class's driver. When the
server has room, the fit first adds its data to a data set of the model, in order (the
validation data after the training rows, in the same request when both fit one), and every
epoch's batches and the evaluations after each epoch then name rows of the set instead of
sending them: the data crosses the wire once, in a few large requests, before the first step
(measured: a 16,384-row 32-32-1 fit's first epoch streamed took 99 ms, its rows added and
trained on 72). Otherwise the batches go to the server in a few `train_steps` streams (the
server computes each batch while the next one arrives). The steps are the same, bit for bit,
either way.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ._codec import Rows
from ._exceptions import APIError, GradserveError, NotFoundError, stream_failure
from ._types import Evaluation

if TYPE_CHECKING:
    from ._base import Call
    from ._model import ModelCalls

Plan = Generator["Call", Any, Any]

# The codes that say the server cannot keep (or no longer has) a fit's data set.
DATA_GONE = ("data_too_large", "data_not_found")

try:
    from tqdm.auto import tqdm
except ImportError:  # the optional "progress" extra
    tqdm = None


# A train_steps request carries at most this many batches or about this many bytes: big enough
# that the pause between two requests is rare, small enough that the progress bar moves.
MAX_STEPS_PER_REQUEST = 256
STREAM_BYTES = 32 * 1024 * 1024
# A request of examples (evaluate, rows added to a data set) carries about STREAM_BYTES of them in
# binary form, LIST_BYTES in list form (whose JSON is ~5x the bytes: under the server's 64 MiB),
# counted as they travel (uint8 pixels as INT64, float16 as FP32), and at most REQUEST_ELEMENTS
# in a tensor (half the server's default GRADSERVE_MAX_TENSOR_ELEMENTS). A kept set is evaluated
# in the same ranges, so that its evaluations are those of sending it. Each request costs ~1-3 ms
# besides its work (measured: 4 evaluations of 2,048 rows of 784 floats 27.7 ms, one of the
# 8,192 rows 22.6), so they are as large as the server takes.
LIST_BYTES = 8 * 1024 * 1024
REQUEST_ELEMENTS = 8_000_000


def _row_bytes(*arrays: np.ndarray) -> int:
    return sum(a[:1].nbytes for a in arrays)


def request_rows(row_bytes: int, row_elements: int, binary: bool) -> int:
    """Returns how many examples one request of examples carries (see STREAM_BYTES), from the
    bytes of an example as sent and the elements of its largest tensor."""
    by_bytes = (STREAM_BYTES if binary else LIST_BYTES) // max(row_bytes, 1)
    return max(1, min(by_bytes, REQUEST_ELEMENTS // max(row_elements, 1)))


class History(dict):
    """Per-epoch metrics by name: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.

    A dict of lists, one entry per epoch; ``.history`` is the dict itself, as in Keras.
    ``loss`` is the mean of the epoch's batch losses (each taken before its step); the
    others are measured in eval mode after the epoch.
    """

    @property
    def history(self) -> dict[str, list[float]]:
        return self


class FitLoop:
    """State of one ``fit`` call: batches, running metrics, progress bar and history."""

    def __init__(
        self,
        spec: dict[str, Any],
        x: Any,
        y: Any,
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool,
        validation_data: tuple[Any, Any] | None,
        seed: int | None,
        verbose: int,
    ) -> None:
        self.x, self.y = np.asarray(x), np.asarray(y)
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y differ in length: {len(self.x)} != {len(self.y)}")
        if epochs < 0:
            raise ValueError(f"Invalid epochs: {epochs}")
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size}")
        self.epochs, self.batch_size, self.shuffle, self.verbose = epochs, batch_size, shuffle, verbose
        self.steps_per_request = max(1, min(MAX_STEPS_PER_REQUEST, STREAM_BYTES // max(_row_bytes(self.x, self.y) * batch_size, 1)))
        self.loss_spec = spec["loss"]
        self.classifier = self.loss_spec["type"] in ("softmax_cross_entropy", "bce_with_logits")
        self.validation = None
        if validation_data is not None:
            x_val, y_val = validation_data
            self.validation = np.asarray(x_val), np.asarray(y_val)
        self.rng = np.random.default_rng(seed)
        self.history = History()
        self._bar: Any = None

    def calls(self, model: ModelCalls, binary: bool, asynchronous: bool) -> Plan:
        """Yields the fit's calls on `model`, in order, and returns the History (see the module).

        If the server cannot keep the data (413 data_too_large, or any refusal of the rows:
        sent as batches, the batch that holds a bad row fails as it would on a server without
        data sets) or has lost it (404 data_not_found: a restart drops data sets), the fit goes
        on sending the rows themselves, from the batch that was refused; the steps stay those of
        sending everything. Whatever ends the fit, even an interrupt, it first deletes the data
        sets it made.
        """
        self.keep = f"fit-{secrets.token_hex(6)}" if self._keeps() else None
        self.made = [] if self.keep is None else [self.keep]  # data sets to delete at the end
        self.keep_validation = self.epochs > 1  # evaluated once or not at all: sent as it is
        self.validation_from = None  # the kept set's first row of the validation data, if it holds it
        try:
            if self.keep is not None:
                try:
                    yield from self._add_kept(model)
                except APIError:
                    yield from self._stop_keeping(model)
            if self.keep is not None and self.validation_from is None and self.validation is not None \
                    and self.keep_validation:
                yield from self._keep_validation(model)
            for epoch in range(self.epochs):
                evaluations = {}
                groups = self.requests(epoch)
                group = next(groups, None)
                while group is not None:  # the last request of the epoch also evaluates what the server keeps
                    following = next(groups, None)
                    asked = self.kept_evaluations(model) if following is None else {}
                    evaluations = yield from self._train(model, epoch, group, binary, asynchronous, asked)
                    group = following
                for name, x, y in self.eval_sets():
                    if name not in evaluations:
                        evaluations[name] = yield from self._evaluate(model, name, x, y)
                self.end_epoch(epoch, evaluations)
        except BaseException:
            yield from self._forget(model, quietly=True)
            raise
        yield from self._forget(model)
        return self.history

    def _train(self, model: ModelCalls, epoch: int, group: list[np.ndarray], binary: bool, asynchronous: bool,
               asked: dict[str, list[tuple[str, np.ndarray | None]]]) -> Plan:
        """Applies one request's batches: rows of the kept set, or the rows themselves. Gives the
        evaluations `asked` (by eval set: the kept set and the ranges of its rows to evaluate,
        see kept_evaluations) after those batches, from the same request, when the set is still
        kept: {} otherwise."""
        while group:
            parts = [part for ranges in asked.values() for part in ranges] if self.keep is not None else []
            if self.keep is not None:
                call = model._train_on_data_call(self.keep, np.concatenate(group), self.batch_size, None, parts)
            else:
                call = model._train_steps_call([(self.x[rows], self.y[rows]) for rows in group], binary, asynchronous)
            try:
                results = yield call
            except APIError as error:
                error.batch, error.completed = stream_failure(error)
                if self.keep is None or error.code not in DATA_GONE:
                    self.fail_at(epoch, group, error)
                    raise
                self.record_group(group, error.completed)
                group = group[len(error.completed):]  # the refused batch and those after it, sent
                yield from self._stop_keeping(model)
                continue
            if not parts:
                self.record_group(group, results)
                return {}
            results, evaluated = results
            self.record_group(group, results)
            evaluations = {}
            for name, ranges in asked.items():
                evaluations[name] = Evaluation.combine(evaluated[:len(ranges)])
                evaluated = evaluated[len(ranges):]
            return evaluations
        return {}

    def _add_kept(self, model: ModelCalls) -> Plan:
        """Adds (x, y) to the kept set, row i of the set row i of x. When the validation data is
        kept too and both travel in one request, it is added in that request, as the set's rows
        from len(x) on (one request and one set fewer than a set of its own: ~5 ms of a 2-epoch
        784-256-10 fit's 25.8 MB); if that request is refused (a bad row, no room), x alone is
        added, and the validation data then goes to a set of its own."""
        both = self._with_validation(model)
        if both is not None:
            try:
                yield model._add_data_call(self.keep, *both)  # type: ignore[arg-type]
            except APIError:
                pass
            else:
                self.validation_from = len(self.x)
                return
        yield from self._add_rows(model, self.keep, self.x, self.y)

    def _with_validation(self, model: ModelCalls) -> tuple[Rows, Rows] | None:
        """Gives the rows of (x, y) then those of the validation data, as they travel, if the
        validation data is to be kept, is alike (dtypes, row shapes) and both fit one request."""
        if self.validation is None or not self.keep_validation:
            return None
        x_val, y_val = self.validation
        if len(self.x) + len(x_val) > model._request_rows(self.x, self.y):
            return None
        try:
            return Rows(model._inputs(self.x), model._inputs(x_val)), Rows(model._tensor(self.y), model._tensor(y_val))
        except ValueError:  # not alike: Rows holds arrays of one dtype and row shape
            return None

    def _keep_validation(self, model: ModelCalls) -> Plan:
        """Adds the validation data to a data set of its own before the first epoch (when it did
        not go with the training rows), so that each epoch's last request evaluates it; if the
        server refuses it (no room, a bad row), it is sent to each evaluation instead, which
        then fails as sending it fails."""
        stored = f"{self.keep}-val"
        self.made.append(stored)
        try:
            yield from self._add_rows(model, stored, *self.validation)  # type: ignore[misc]
        except APIError:
            self.keep_validation = False
            yield from self._forget(model, quietly=True, only=stored)

    def kept_evaluations(self, model: ModelCalls) -> dict[str, list[tuple[str, np.ndarray | None]]]:
        """Gives, for each eval set the server keeps, its data set and the ranges of rows to
        evaluate: those of _evaluate_once (so the same evaluations, bit for bit), None for a
        range of every row."""
        asked = {}
        for name, x, y in self.eval_sets():
            stored = self._stored(name)
            if stored is not None:
                data, first = stored
                ranges = self._ranges(model, x, y)
                whole = len(ranges) == 1 and self.validation_from is None  # the set is these rows and no more
                asked[name] = [(data, None if whole else np.arange(first + start, first + stop))
                               for start, stop in ranges]
        return asked

    def _keeps(self) -> bool:
        """Tells whether to keep the data on the server: if it will be read again (a later epoch,
        a classifier's accuracy). Whether the server has room, its answer to the rows says (413
        data_too_large): asking first would cost every fit a round trip for the rare one refused."""
        return self.epochs > 1 or (self.epochs > 0 and self.classifier)

    def _evaluate(self, model: ModelCalls, name: str, x: np.ndarray, y: np.ndarray) -> Plan:
        """Gives the Evaluation of (x, y), on rows the server keeps if it does, else sent."""
        while True:
            try:
                return (yield from self._evaluate_once(model, name, x, y))
            except APIError as error:
                if self.keep is None or error.code not in DATA_GONE:
                    raise
                yield from self._stop_keeping(model)  # (a set lost: evaluations add no rows)

    def _evaluate_once(self, model: ModelCalls, name: str, x: np.ndarray, y: np.ndarray) -> Plan:
        """Gives the Evaluation of (x, y) in requests of request_rows examples: ranges of rows of
        a data set when the server keeps (x, y), else (x, y) themselves."""
        stored, parts = self._stored(name), []
        for start, stop in self._ranges(model, x, y):
            if stored is None:
                call = model._evaluate_call(x[start:stop], y[start:stop])
            else:
                data, first = stored
                call = model._evaluate_data_call(data, np.arange(first + start, first + stop))
            parts.append((yield call))
        return Evaluation.combine(parts)

    def _stored(self, name: str) -> tuple[str, int] | None:
        """Gives (the data set, its row that is row 0 of the eval set `name`; the rows after it
        follow the eval set's), if the server keeps that eval set."""
        if self.keep is None:
            return None
        if name == "train":
            return self.keep, 0
        if self.validation_from is not None:
            return self.keep, self.validation_from
        stored = f"{self.keep}-val"
        return (stored, 0) if self.keep_validation and stored in self.made else None

    @staticmethod
    def _ranges(model: ModelCalls, x: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
        """Gives the (start, stop) rows of each request an evaluation of (x, y) makes."""
        rows = model._request_rows(x, y)
        return [(start, min(start + rows, len(x))) for start in range(0, len(x), rows)]

    def _add_rows(self, model: ModelCalls, name: str, x: np.ndarray, y: np.ndarray) -> Plan:
        """Adds (x, y) to the data set `name`, in order, as model.add_data does."""
        for xb, yb in model._evaluation_chunks(x, y):
            yield model._add_data_call(name, xb, yb)

    def _stop_keeping(self, model: ModelCalls) -> Plan:
        """From now on, sends the rows themselves; deletes what the server still keeps."""
        yield from self._forget(model, quietly=True)
        self.keep = self.validation_from = None

    def _forget(self, model: ModelCalls, quietly: bool = False, only: str | None = None) -> Plan:
        """Deletes the data sets the fit made (`only` that one), one already gone being deleted;
        `quietly`, whatever else their deletion gives (the fit has failed, or goes on without)."""
        for name in [name for name in self.made if only in (None, name)]:
            self.made.remove(name)
            try:
                yield model._delete_data_call(name)
            except NotFoundError:
                pass
            except GradserveError:
                if not quietly:
                    raise

    def epoch_rows(self, epoch: int) -> Iterator[np.ndarray]:
        """Yields the row indices of this epoch's batches, shuffled if asked, and opens its progress bar."""
        n = len(self.x)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        starts = range(0, n, self.batch_size)
        self._seen = self._loss_sum = 0.0
        self.batch = 0  # batches of this epoch recorded so far
        if self.verbose == 1 and tqdm is not None:
            self._bar = tqdm(total=len(starts), desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch")
        for start in starts:
            yield order[start : start + self.batch_size]

    def record_batch(self, loss: float, n: int) -> None:
        """Adds one batch's loss to the epoch's running mean."""
        self._seen += n
        self._loss_sum += loss * n
        self.batch += 1
        if self._bar is not None:
            self._bar.set_postfix(self._running(), refresh=False)
            self._bar.update(1)

    def requests(self, epoch: int) -> Iterator[list[np.ndarray]]:
        """Yields this epoch's batches (their row indices) in groups, one request each, in order."""
        group: list[np.ndarray] = []
        for rows in self.epoch_rows(epoch):
            group.append(rows)
            if len(group) == self.steps_per_request:
                yield group
                group = []
        if group:
            yield group

    def record_group(self, group: list[np.ndarray], results: list[Any]) -> None:
        """Adds the results of one request's steps to the epoch's running mean."""
        for rows, result in zip(group, results):
            self.record_batch(result.loss, len(rows))

    def fail_at(self, epoch: int, group: list[np.ndarray], error: Exception) -> None:
        """Records the steps a failed request applied, and notes on `error` which batch failed."""
        self.record_group(group, error.completed)  # type: ignore[attr-defined]
        error.add_note(f"fit: raised by batch {self.batch + 1} of epoch {epoch + 1} (the batches before it trained)")
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def eval_sets(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Returns what the server evaluates after an epoch: the "train" data (a classifier's
        accuracy, since train steps give no outputs) and the "val" data, when given."""
        sets = [("train", self.x, self.y)] if self.classifier else []
        return sets + ([("val", *self.validation)] if self.validation is not None else [])

    def end_epoch(self, epoch: int, evaluations: dict[str, Any]) -> None:
        """Appends the epoch's metrics to the history and shows them (``evaluations``: by eval set)."""
        metrics = self._running()
        if "train" in evaluations:
            metrics["accuracy"] = evaluations["train"].accuracy
        if "val" in evaluations:
            metrics["val_loss"] = evaluations["val"].loss
            if self.classifier:
                metrics["val_accuracy"] = evaluations["val"].accuracy
        for name, value in metrics.items():
            self.history.setdefault(name, []).append(value)
        if self._bar is not None:
            self._bar.set_postfix(metrics)
            self._bar.close()
            self._bar = None
        elif self.verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in metrics.items())
            print(f"Epoch {epoch + 1}/{self.epochs} - {shown}", file=sys.stderr)

    def _running(self) -> dict[str, float]:
        return {"loss": self._loss_sum / max(self._seen, 1)}
