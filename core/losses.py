"""Losses: each returns (loss, grad_outputs), averaged as torch's reduction="mean".

outputs: (N, C) or (N, T, C) for classification (logits), any shape for the elementwise
losses; targets: INT64 labels (N,) / (N, T) or probabilities of the outputs' shape for
softmax_cross_entropy, the outputs' shape for the others.
"""

from __future__ import annotations

import numpy as np

from .numerics import row_maxes, row_sums, sigmoid


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray,
                          ignore_index: int | None = None) -> tuple[float, np.ndarray]:
    """Mean over positions of -log softmax(logits)[target]; the gradient is (p - y) / count.

    logits: (N, C), or (N, T, C) taken as N*T positions (torch's cross_entropy on the flattened
    (N*T, C)); targets: labels (N,) / (N, T), or probabilities of the logits' shape. Labels equal
    to `ignore_index` are left out of the mean (none left: the loss is NaN, the gradient zero, as torch).
    """
    c = logits.shape[-1]
    z = logits.reshape(-1, c)
    shifted = z - row_maxes(z)
    exp = np.exp(shifted)
    sum_exp = row_sums(exp)
    log_sum_exp = np.log(sum_exp)  # log_probs = shifted - log_sum_exp, for labels taken only where picked
    probs = exp
    probs /= sum_exp
    if targets.ndim == logits.ndim - 1:
        labels = targets.reshape(-1)
        rows = np.arange(len(labels))
        if ignore_index is not None:
            kept = labels != ignore_index
            rows, labels = rows[kept], labels[kept]
            probs[~kept] = 0
        count = len(rows)
        loss = -(shifted[rows, labels] - log_sum_exp[rows, 0]).sum() / count if count else float("nan")
        probs[rows, labels] -= 1
        grad = probs
    else:
        y = targets.reshape(-1, c)
        count = len(y)
        log_probs = shifted
        log_probs -= log_sum_exp
        loss = -(y * log_probs).sum() / count
        # For targets that do not sum to one, d/dz of -sum(y log p) is p * sum(y) - y.
        grad = probs * y.sum(axis=1, keepdims=True)
        grad -= y
    grad /= max(count, 1)
    return float(loss), grad.reshape(logits.shape)


def mse(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of (o - t)^2; the gradient is 2 (o - t) / numel."""
    diff = outputs - targets
    loss = float(np.vdot(diff, diff)) / diff.size
    diff *= 2 / diff.size
    return loss, diff


def bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of max(z, 0) - z t + log(1 + exp(-|z|)); the gradient is (sigmoid(z) - t) / numel."""
    losses = np.log1p(np.exp(-np.abs(logits)))
    losses += np.maximum(logits, 0)
    losses -= logits * targets
    grad = sigmoid(logits)
    grad -= targets
    grad /= logits.size
    return float(losses.mean()), grad


def huber(outputs: np.ndarray, targets: np.ndarray, delta: float = 1.0) -> tuple[float, np.ndarray]:
    """Mean of 0.5 d^2 where |d| <= delta, else delta (|d| - delta / 2); the gradient is clip(d) / numel."""
    diff = outputs - targets
    absdiff = np.abs(diff)
    quadratic = np.minimum(absdiff, delta)
    losses = quadratic * (absdiff - 0.5 * quadratic)
    grad = np.clip(diff, -delta, delta, out=diff)
    grad /= diff.size
    return float(losses.mean()), grad


LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
    "bce_with_logits": bce_with_logits,
    "huber": huber,
}
