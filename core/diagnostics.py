"""Training health: gradient and parameter norms, update ratios, dead and saturated units.

Thresholds (flags are raised past them):
- vanishing gradient: a parameter's gradient norm is below VANISHING_RATIO x its norm
  (and its norm is not zero);
- exploding gradient: the global gradient norm is above EXPLODING_NORM, or an update moved a
  weight matrix by more than EXPLODING_UPDATE_RATIO of its norm (healthy training sits near
  1e-3). Biases and norm scales are left out: biases start at zero, so any first update is
  100% of them;
- dead ReLU: more than DEAD_FRACTION of a ReLU layer's units were zero for the whole batch;
- saturation: more than SATURATED_FRACTION of a tanh/sigmoid layer's outputs were within 0.01
  of their bounds.
Gradients are the accumulated ones when there are any, else those of the last step.
Layers are named as torch modules: "3" at the top level, "1.block.2" inside a residual block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .numerics import squared_norm

if TYPE_CHECKING:
    from .model import Model

VANISHING_RATIO = 1e-7
EXPLODING_NORM = 1e3
EXPLODING_UPDATE_RATIO = 0.1
DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.5


def report(model: "Model") -> dict:
    """Return a JSON-able report: per parameter, per layer, and overall flags."""
    live = model.accumulated > 0
    grad_norms = ({n: math.sqrt(squared_norm(g)) for n, g in model.gradients().items()} if live
                  else model.history.grad_norms)
    parameters = {}
    for name, p_norm in param_norms(model).items():
        g_norm = grad_norms.get(name)
        u_norm = model.history.update_norms.get(name)
        parameters[name] = {
            "param_norm": p_norm,
            "grad_norm": g_norm,
            "update_norm": u_norm,
            "grad_to_param": _ratio(g_norm, p_norm),
            "update_to_param": _ratio(u_norm, p_norm),
            "vanishing": _vanishing(g_norm, p_norm),
        }
    layers = []
    for i, spec in enumerate(model.spec["layers"]):
        entry: dict = {"index": i, "name": str(i), "type": spec["type"]}
        names = [n for n in parameters if n.split(".", 1)[0] == str(i)]
        if names:
            entry["param_norm"] = math.sqrt(sum(parameters[n]["param_norm"] ** 2 for n in names))
            if all(parameters[n]["grad_norm"] is not None for n in names):
                entry["grad_norm"] = math.sqrt(sum(parameters[n]["grad_norm"] ** 2 for n in names))
        layers.append(entry)
    activations = []
    for name, stats in model.history.activations.items():
        activations.append({"name": name, **stats,
                            "dead": _dead(stats), "saturated": _saturated(stats)})
        if "." not in name:
            layers[int(name)].update(activations[-1], name=name)
    total_grad = math.sqrt(sum(v * v for v in grad_norms.values())) if grad_norms else None
    return {
        "step": model.step_count,
        "accumulated": model.accumulated,
        "grad_source": "accumulated" if live else ("last_step" if grad_norms else "none"),
        "grad_norm": total_grad,
        "parameters": parameters,
        "layers": layers,
        "activations": activations,
        "flags": _flags(model, parameters, total_grad, model.history.activations),
        "thresholds": {
            "vanishing_ratio": VANISHING_RATIO,
            "exploding_norm": EXPLODING_NORM,
            "exploding_update_ratio": EXPLODING_UPDATE_RATIO,
            "dead_fraction": DEAD_FRACTION,
            "saturated_fraction": SATURATED_FRACTION,
        },
    }


def step_record(model: "Model") -> dict | None:
    """Return the health of the model's last step (None before its first): the step, its lr,
    loss and global norms, per parameter grad_norm, param_norm and update_to_param, per
    activation layer dead_fraction and saturated_fraction, and the names of its flags."""
    history = model.history
    if history.last_step is None:
        return None
    parameters = {name: {"grad_norm": history.grad_norms.get(name), "param_norm": p_norm,
                         "update_to_param": _ratio(history.update_norms.get(name), p_norm)}
                  for name, p_norm in param_norms(model).items()}
    activations = {name: {key: stats[key] for key in ("dead_fraction", "saturated_fraction") if key in stats}
                   for name, stats in history.activations.items()}
    step = history.last_step
    return {"step": step.step, "lr": step.lr, "loss": history.loss, "grad_norm": step.grad_norm,
            "update_norm": step.update_norm, "parameters": parameters, "activations": activations,
            "flags": flag_names(_flags(model, parameters, step.grad_norm, history.activations))}


def param_norms(model: "Model") -> dict[str, float]:
    """Return each parameter's L2 norm, by name."""
    return {name: math.sqrt(squared_norm(p)) for name, p in model.parameters().items()}


def flag_names(flags: dict) -> list[str]:
    """Return the flags of a report as strings: `exploding_gradients`, and `<flag>:<name>` for
    each parameter or layer a list flag names (`dead_relu_layers:1`)."""
    names = []
    for flag, value in flags.items():
        if isinstance(value, list):
            names += [f"{flag}:{name}" for name in value]
        elif value:
            names.append(flag)
    return names


def _flags(model: "Model", parameters: dict, total_grad: float | None, activations: dict) -> dict:
    """Return the flags raised by per-parameter norms (`grad_norm`, `param_norm`,
    `update_to_param`), the global gradient norm and the activation statistics."""
    weights = model.parameters()
    ratios = [p["update_to_param"] for name, p in parameters.items()
              if p["update_to_param"] is not None and weights[name].ndim >= 2]
    return {
        "vanishing_gradients": [n for n, p in parameters.items() if _vanishing(p["grad_norm"], p["param_norm"])],
        "exploding_gradients": (total_grad is not None and not total_grad <= EXPLODING_NORM) or any(
            r > EXPLODING_UPDATE_RATIO for r in ratios),
        "dead_relu_layers": [name for name, stats in activations.items() if _dead(stats)],
        "saturated_layers": [name for name, stats in activations.items() if _saturated(stats)],
    }


def _vanishing(g_norm: float | None, p_norm: float) -> bool:
    return g_norm is not None and p_norm > 0 and g_norm < VANISHING_RATIO * p_norm


def _dead(stats: dict) -> bool:
    return stats.get("dead_fraction", 0.0) > DEAD_FRACTION


def _saturated(stats: dict) -> bool:
    return stats.get("saturated_fraction", 0.0) > SATURATED_FRACTION


def _ratio(a: float | None, b: float) -> float | None:
    if a is None or b == 0:
        return None
    return a / b
