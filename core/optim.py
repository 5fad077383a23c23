"""Optimizers with torch.optim's semantics: SGD, Adam, AdamW, RMSprop.

Each update rule is a small function of (param, grad, state, hyperparameters, scratch)
that updates the parameter in place and leaves the applied update in `scratch`, so
the update norm costs no extra pass over memory. State lives in one dict keyed by
parameter name, so it checkpoints as it is. No parameter-sized array is allocated
per step: the two scratch buffers per parameter are made once.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import NonFiniteGradientError, NothingToStepError


def check_hyperparameters(hp: dict) -> list[tuple[list, str]]:
    """Return (location, message) for each invalid hyperparameter of a normalized optimizer spec."""
    problems = []

    def number(key, low=0.0, high=math.inf, low_open=False):
        v = hp.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            problems.append(([key], f"Invalid {key}: {v!r} (a number is required)"))
        elif v < low or v > high or (low_open and v == low):
            problems.append(([key], f"Invalid {key}: {v}"))

    number("lr")
    for key in ("weight_decay", "momentum", "dampening", "alpha"):
        if key in hp:
            number(key)
    if "eps" in hp:
        number("eps", low_open=True)
    if "alpha" in hp:
        number("alpha", high=1.0)
    betas = hp.get("betas")
    if betas is not None:
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            problems.append((["betas"], f"Invalid betas: {betas!r} (two numbers in [0, 1))"))
    for key in ("nesterov", "centered"):
        if key in hp and not isinstance(hp[key], bool):
            problems.append(([key], f"Invalid {key}: {hp[key]!r} (true or false)"))
    if hp.get("nesterov") is True and (hp.get("momentum", 0) <= 0 or hp.get("dampening", 0) != 0):
        problems.append((["nesterov"], "Nesterov momentum requires a momentum and zero dampening"))
    for key in ("clip_grad_norm", "clip_grad_value"):
        v = hp.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v)):
            problems.append(([key], f"Invalid {key}: {v!r} (a positive number or null)"))
    return problems


def _with_weight_decay(p, g, wd, scratch):
    """Return g + wd * p, written into scratch when wd is set."""
    if not wd:
        return g
    np.multiply(p, wd, out=scratch)
    scratch += g
    return scratch


def sgd_update(p, g, state, hp, s1, s2):
    g = _with_weight_decay(p, g, hp["weight_decay"], s1)
    momentum = hp["momentum"]
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            state["momentum_buffer"] = buf = g.copy()
        else:
            buf *= momentum
            np.multiply(g, 1 - hp["dampening"], out=s2)
            buf += s2
        if hp["nesterov"]:
            np.multiply(buf, momentum, out=s2)
            s2 += g
            g = s2
        else:
            g = buf
    np.multiply(g, -hp["lr"], out=s2)
    p += s2


def adam_update(p, g, state, hp, s1, s2, decoupled=False):
    lr, (beta1, beta2), eps, wd = hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"]
    if decoupled:
        p *= 1 - lr * wd
    else:
        g = _with_weight_decay(p, g, wd, s1)
    if "exp_avg" not in state:
        state["exp_avg"] = np.zeros_like(p)
        state["exp_avg_sq"] = np.zeros_like(p)
        state["step"] = np.zeros((), dtype=np.int64)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    state["step"] += 1
    t = int(state["step"])
    m *= beta1
    np.multiply(g, 1 - beta1, out=s2)
    m += s2
    v *= beta2
    np.multiply(g, g, out=s2)
    s2 *= 1 - beta2
    v += s2
    bias_correction1 = 1 - beta1**t
    bias_correction2_sqrt = math.sqrt(1 - beta2**t)
    np.sqrt(v, out=s2)
    s2 /= bias_correction2_sqrt
    s2 += eps
    np.divide(m, s2, out=s2)
    s2 *= -lr / bias_correction1
    p += s2


def adamw_update(p, g, state, hp, s1, s2):
    adam_update(p, g, state, hp, s1, s2, decoupled=True)


def rmsprop_update(p, g, state, hp, s1, s2):
    alpha, eps, lr, momentum = hp["alpha"], hp["eps"], hp["lr"], hp["momentum"]
    g = _with_weight_decay(p, g, hp["weight_decay"], s1)
    if "square_avg" not in state:
        state["square_avg"] = np.zeros_like(p)
        if momentum:
            state["momentum_buffer"] = np.zeros_like(p)
        if hp["centered"]:
            state["grad_avg"] = np.zeros_like(p)
    sq = state["square_avg"]
    sq *= alpha
    np.multiply(g, g, out=s2)
    s2 *= 1 - alpha
    sq += s2
    if hp["centered"]:
        ga = state["grad_avg"]
        ga *= alpha
        np.multiply(g, 1 - alpha, out=s2)
        ga += s2
        np.multiply(ga, ga, out=s2)
        np.subtract(sq, s2, out=s2)
        np.sqrt(s2, out=s2)
    else:
        np.sqrt(sq, out=s2)
    s2 += eps
    np.divide(g, s2, out=s2)
    if momentum:
        buf = state["momentum_buffer"]
        buf *= momentum
        buf += s2
        np.multiply(buf, -lr, out=s2)
    else:
        s2 *= -lr
    p += s2


UPDATES = {"sgd": sgd_update, "adam": adam_update, "adamw": adamw_update, "rmsprop": rmsprop_update}


class Optimizer:
    """Applies one update rule to a model's parameters from its accumulated gradients."""

    def __init__(self, hp: dict, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        problems = check_hyperparameters(hp)
        if problems:
            raise ValueError("; ".join(msg for _, msg in problems))
        self.hp = dict(hp)
        self.params = params
        self.grads = grads
        self.update = UPDATES[hp["type"]]
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in params}
        self._scratch = {name: (np.empty_like(p), np.empty_like(p)) for name, p in params.items()}

    @property
    def lr(self) -> float:
        return self.hp["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"Invalid learning rate: {value}")
        self.hp["lr"] = float(value)

    def step(self) -> tuple[float, float, dict[str, float], dict[str, float]]:
        """Update the parameters in place; return (grad_norm, update_norm, per-parameter grad and update norms).

        Raises NonFiniteGradientError, parameters untouched, when any gradient is NaN or Inf.
        """
        grad_sq = {name: float(np.vdot(g, g)) for name, g in self.grads.items()}
        grad_norm = math.sqrt(sum(grad_sq.values()))
        if not math.isfinite(grad_norm):
            bad = [name for name, sq in grad_sq.items() if not math.isfinite(sq)]
            raise NonFiniteGradientError(f"non-finite gradients in {', '.join(bad)}; step refused")
        clip_norm, clip_value = self.hp["clip_grad_norm"], self.hp["clip_grad_value"]
        if clip_norm is not None and grad_norm > clip_norm:
            scale = clip_norm / (grad_norm + 1e-6)
            for g in self.grads.values():
                g *= scale
        if clip_value is not None:
            for g in self.grads.values():
                np.clip(g, -clip_value, clip_value, out=g)
        update_sq = {}
        for name, p in self.params.items():
            s1, s2 = self._scratch[name]
            self.update(p, self.grads[name], self.state[name], self.hp, s1, s2)
            update_sq[name] = float(np.vdot(s2, s2))
        update_norm = math.sqrt(sum(update_sq.values()))
        grad_norms = {k: math.sqrt(v) for k, v in grad_sq.items()}
        update_norms = {k: math.sqrt(v) for k, v in update_sq.items()}
        return grad_norm, update_norm, grad_norms, update_norms


__all__ = ["Optimizer", "check_hyperparameters", "NothingToStepError"]
