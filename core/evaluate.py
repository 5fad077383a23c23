"""Evaluation: the loss (and a classifier's accuracy) of eval-mode outputs, with no gradients.

    result = evaluate(model, x, targets)   # result.loss, result.accuracy, result.count

Nothing of the model changes: the forward runs in eval mode (dropout off, batchnorm on its
running statistics) and keeps no tape. `count` is how many terms the loss averages (positions
for cross-entropy, elements for the elementwise losses), so means of several batches combine
as sum(loss * count) / sum(count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .numerics import quiet_overflow

if TYPE_CHECKING:
    from .model import Model


@dataclass
class Evaluation:
    loss: float
    accuracy: float | None  # softmax_cross_entropy and bce_with_logits only
    count: int


def evaluate(model: "Model", x, targets) -> Evaluation:
    """Return the model's loss and accuracy on (x, targets) in eval mode; see the module."""
    outputs, _ = model.forward(x, train=False)
    targets = model.validate_targets(targets, outputs.shape)
    with quiet_overflow():  # a diverged model's loss is Inf
        loss, _ = model.loss_fn(outputs, targets)
    kind, options = model.spec["loss"]["type"], model.spec["loss"]
    if kind == "softmax_cross_entropy":
        predicted = outputs.argmax(axis=-1)
        labels = targets if targets.ndim < outputs.ndim else targets.argmax(axis=-1)
        counted = np.ones(labels.shape, bool)
        if options.get("ignore_index") is not None and targets.ndim < outputs.ndim:
            counted = labels != options["ignore_index"]
        count = int(counted.sum())
        accuracy = float((predicted == labels)[counted].mean()) if count else None
    elif kind == "bce_with_logits":
        count = outputs.size
        accuracy = float(((outputs > 0) == (targets > 0.5)).mean())
    else:
        count, accuracy = outputs.size, None
    return Evaluation(loss, accuracy, count)
