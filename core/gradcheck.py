"""Gradient checking: analytic gradients against central differences, in float64.

The same checker serves the tests and the service's /gradcheck endpoint. It works on a
float64 copy of the model, so live state is never touched, and replays the same dropout
masks on every evaluation; class-index inputs (an embedding first) are not checked, having no
gradient. Criterion as torch.autograd.gradcheck:
|analytic - numeric| <= atol + rtol * |numeric|.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError, StoppedError

if TYPE_CHECKING:
    from .model import Model

MODES = ("entries", "directional")


@dataclass
class TensorCheck:
    """How one tensor's analytic gradient compares with the numeric one."""

    entries: int
    max_abs_error: float
    max_rel_error: float
    worst_index: list[int]
    passed: bool


@dataclass
class GradcheckReport:
    passed: bool
    mode: str
    parameters: dict[str, TensorCheck] = field(default_factory=dict)
    inputs: TensorCheck | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def gradcheck(model: "Model", x, targets=None, *, grad_output=None, mode: str = "entries", eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-3, max_entries: int | None = 10, seed: int = 0,
              train: bool = True, should_stop: Callable[[], bool] | None = None) -> GradcheckReport:
    """Return a report comparing the model's gradients with central differences.

    `should_stop` is asked before every evaluation; when it answers True the check ends with
    StoppedError (the model is untouched either way: the check runs on a copy).
    """
    if mode not in MODES:
        raise InputError.at(["mode"], f"mode must be one of {list(MODES)}, got {mode!r}")
    for name, value in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if not (isinstance(value, (int, float)) and value >= 0 and np.isfinite(value)) or (name == "eps" and value == 0):
            raise InputError.at([name], f"{name} must be a {'positive' if name == 'eps' else 'non-negative'} number")
    if max_entries is not None and max_entries < 1:
        raise InputError.at(["max_entries"], "max_entries must be at least 1")
    x = model.validate_inputs(x, train)
    out_shape = model.output_shape(x.shape)
    if grad_output is None:
        targets = model.validate_targets(targets, out_shape)
    else:
        grad_output = model.validate_grad_output(grad_output, out_shape).astype(np.float64)

    m = model.copy(dtype=np.float64)
    m.zero_grad()
    # Class indices (a model that starts with an embedding) have no gradient: parameters only.
    indices = model.input_rule.classes is not None
    if not indices:
        x = x.astype(np.float64)
    if targets is not None and targets.dtype.kind == "f":
        targets = targets.astype(np.float64)
    # Every evaluation replays the same dropout masks from a fresh generator.
    rng_state = m.rng.bit_generator.state

    def run(inputs):
        m.rng.bit_generator.state = rng_state
        outputs, tape = m.forward(inputs, train=train)
        if grad_output is None:
            loss, g = m.loss_fn(outputs, targets)
        else:
            loss, g = float(np.vdot(outputs, grad_output)), grad_output
        return loss, tape, g

    _, tape, g = run(x)
    grad_x = m.backward(tape, g, need_input_grad=not indices)

    evaluations = 0

    def loss_at(inputs=x):
        nonlocal evaluations
        if should_stop is not None and should_stop():
            raise StoppedError(f"the gradient check was stopped after {evaluations} evaluations of the loss")
        evaluations += 1
        return run(inputs)[0]

    rng = np.random.default_rng(seed)
    report = GradcheckReport(passed=True, mode=mode)
    for name, p in m.parameters().items():
        check = _check(p, m.gradients()[name], loss_at, mode, eps, atol, rtol, max_entries, rng)
        report.parameters[name] = check
        report.passed &= check.passed
    if not indices:
        report.inputs = _check(x, grad_x, loss_at, mode, eps, atol, rtol, max_entries, rng)
        report.passed &= report.inputs.passed
    return report


def _check(value: np.ndarray, analytic: np.ndarray, loss_at, mode, eps, atol, rtol, max_entries, rng) -> TensorCheck:
    """Compare `analytic` with central differences of loss_at() as `value` is nudged in place."""
    flat = value.reshape(-1)  # a view: nudging it nudges the model's tensor
    if mode == "directional":
        direction = rng.standard_normal(flat.size)
        direction /= np.linalg.norm(direction)
        saved = flat.copy()
        flat += eps * direction
        plus = loss_at()
        flat[:] = saved - eps * direction
        minus = loss_at()
        flat[:] = saved
        numeric = np.array([(plus - minus) / (2 * eps)])
        exact = np.array([float(np.dot(analytic.reshape(-1), direction))])
        indices = np.array([0])
    else:
        n = flat.size if max_entries is None else min(max_entries, flat.size)
        indices = np.sort(rng.choice(flat.size, size=n, replace=False)) if n < flat.size else np.arange(flat.size)
        numeric = np.empty(len(indices))
        for k, i in enumerate(indices):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss_at()
            flat[i] = saved - eps
            minus = loss_at()
            flat[i] = saved
            numeric[k] = (plus - minus) / (2 * eps)
        exact = analytic.reshape(-1)[indices]
    abs_err = np.abs(exact - numeric)
    rel_err = abs_err / np.maximum(np.abs(numeric), 1e-12)
    ok = abs_err <= atol + rtol * np.abs(numeric)
    worst = int(np.argmax(abs_err - (atol + rtol * np.abs(numeric))))
    worst_index = [] if mode == "directional" else [int(i) for i in np.unravel_index(indices[worst], value.shape)]
    return TensorCheck(len(indices), float(abs_err.max()), float(rel_err.max()), worst_index, bool(ok.all()))
