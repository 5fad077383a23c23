"""Keras-style training loop pieces shared by RemoteModel.fit and AsyncRemoteModel.fit.

The loop itself (a train_step per batch; after each epoch, eval-mode forward passes over the
training data for accuracy and over the validation data) is written in each model class;
everything else, batching, metrics, the progress bar and the history, lives here without I/O.
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


class History(dict):
    """Per-epoch metrics by name: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.

    A dict of lists, one entry per epoch; ``.history`` is the dict itself, as in Keras.
    ``loss`` is the mean of the epoch's batch losses (each taken before its step); the
    others are measured in eval mode after the epoch.
    """

    @property
    def history(self) -> dict[str, list[float]]:
        return self


def validation_loss(loss_spec: dict[str, Any], outputs: np.ndarray, targets: np.ndarray) -> float:
    """Returns the model's loss (mean reduction) for eval-mode outputs.

    Computed here because the server has no loss-only route and forward_backward would
    accumulate gradients and run in train mode; the formulas are DESIGN section 4's.
    """
    o, t = outputs.astype(np.float64), np.asarray(targets)
    kind = loss_spec["type"]
    if kind == "softmax_cross_entropy":
        shifted = o - o.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if t.ndim == 1:
            return float(-log_probs[np.arange(len(t)), t].mean())
        return float(-(t * log_probs).sum(axis=1).mean())
    t = t.astype(np.float64).reshape(o.shape)
    if kind == "mse":
        return float(((o - t) ** 2).mean())
    if kind == "bce_with_logits":
        return float((np.maximum(o, 0) - o * t + np.log1p(np.exp(-np.abs(o)))).mean())
    if kind == "huber":
        delta, d = loss_spec.get("delta", 1.0), np.abs(o - t)
        return float(np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)).mean())
    raise ValueError(f"unknown loss type: {kind!r}")


def accuracy(loss_spec: dict[str, Any], outputs: np.ndarray, targets: np.ndarray) -> float | None:
    """Returns the fraction of correct predictions, or None when the loss is not a classifier's."""
    t = np.asarray(targets)
    kind = loss_spec["type"]
    if kind == "softmax_cross_entropy":
        labels = t if t.ndim == 1 else t.argmax(axis=1)
        return float((outputs.argmax(axis=1) == labels).mean())
    if kind == "bce_with_logits":
        return float(((outputs > 0) == (t.reshape(outputs.shape) > 0.5)).mean())
    return None


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
        self.eval_batch_size = max(batch_size, 256)  # no tape kept in eval: bigger batches, fewer trips
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
        if self.verbose == 1 and tqdm is not None:
            self._bar = tqdm(total=len(starts), desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch")
        for start in starts:
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]

    def record_batch(self, loss: float, n: int) -> None:
        """Adds one batch's loss to the epoch's running mean."""
        self._seen += n
        self._loss_sum += loss * n
        if self._bar is not None:
            self._bar.set_postfix(self._running(), refresh=False)
            self._bar.update(1)

    def eval_sets(self) -> list[tuple[str, np.ndarray]]:
        """Returns what to run in eval mode after an epoch: "train" data (a classifier's accuracy,
        since train_step sends no outputs back) and "val" data, when given."""
        sets = [("train", self.x)] if self.classifier else []
        return sets + ([("val", self.validation[0])] if self.validation is not None else [])

    def end_epoch(self, epoch: int, outputs: dict[str, np.ndarray]) -> None:
        """Appends the epoch's metrics to the history and shows them (``outputs``: by eval set)."""
        metrics = self._running()
        if "train" in outputs:
            metrics["accuracy"] = accuracy(self.loss_spec, outputs["train"], self.y)
        if "val" in outputs:
            y_val = self.validation[1]
            metrics["val_loss"] = validation_loss(self.loss_spec, outputs["val"], y_val)
            if self.classifier:
                metrics["val_accuracy"] = accuracy(self.loss_spec, outputs["val"], y_val)
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
