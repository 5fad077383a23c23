"""Keras-style training loop pieces shared by RemoteModel.fit and AsyncRemoteModel.fit.

The loop itself is written in each model class: the epoch's batches go to the server in a few
`train_steps` streams (the server computes each batch while the next one arrives, so it never
waits for the client), then the server evaluates the training data (a classifier's accuracy)
and the validation data. Everything else, batching, metrics, the progress bar and the history,
lives here without I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

try:
    from tqdm.auto import tqdm
except ImportError:  # the optional "progress" extra
    tqdm = None


# A train_steps request carries at most this many batches or about this many bytes: big enough
# that the pause between two requests is rare, small enough that the progress bar moves.
MAX_STEPS_PER_REQUEST = 256
STREAM_BYTES = 32 * 1024 * 1024
# An evaluate request carries about this many bytes of examples.
EVAL_BYTES = 8 * 1024 * 1024


def _row_bytes(*arrays: np.ndarray) -> int:
    return sum(a[:1].nbytes for a in arrays)


def eval_rows(x: np.ndarray, y: np.ndarray) -> int:
    """Returns how many examples one evaluate request takes (EVAL_BYTES of them)."""
    return max(1, EVAL_BYTES // max(_row_bytes(np.asarray(x), np.asarray(y)), 1))


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

    def epoch_batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields this epoch's (x, y) batches, shuffled if asked, and opens its progress bar."""
        n = len(self.x)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        starts = range(0, n, self.batch_size)
        self._seen = self._loss_sum = 0.0
        self.batch = 0  # batches of this epoch recorded so far
        if self.verbose == 1 and tqdm is not None:
            self._bar = tqdm(total=len(starts), desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch")
        for start in starts:
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]

    def record_batch(self, loss: float, n: int) -> None:
        """Adds one batch's loss to the epoch's running mean."""
        self._seen += n
        self._loss_sum += loss * n
        self.batch += 1
        if self._bar is not None:
            self._bar.set_postfix(self._running(), refresh=False)
            self._bar.update(1)

    def requests(self, epoch: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
        """Yields this epoch's batches in groups, one `train_steps` request each, in order."""
        group: list[tuple[np.ndarray, np.ndarray]] = []
        for batch in self.epoch_batches(epoch):
            group.append(batch)
            if len(group) == self.steps_per_request:
                yield group
                group = []
        if group:
            yield group

    def record_group(self, group: list[tuple[np.ndarray, np.ndarray]], results: list[Any]) -> None:
        """Adds the results of one train_steps request to the epoch's running mean."""
        for (_, yb), result in zip(group, results):
            self.record_batch(result.loss, len(yb))

    def fail_at(self, epoch: int, group: list[tuple[np.ndarray, np.ndarray]], error: Exception) -> None:
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
