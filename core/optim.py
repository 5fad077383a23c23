"""Optimizers with torch.optim's semantics: SGD, Adam, AdamW, RMSprop.

Each update rule is a small function of (param, grad, old state, new state, hyperparameters,
step, scratch) that writes the update into `scratch` and the moved state into `new` (which
may be `old` itself), leaving the parameter alone. A step whose update would leave a
non-finite parameter is refused with nothing changed: where bounds known before the pass
prove the update finite (nearly always), the step runs in one pass, in place; otherwise every
update is computed and checked first, the new state in spare buffers, then applied. State
lives in one dict keyed by parameter name, so it checkpoints as it is. No parameter-sized
array is allocated per step: the scratch buffers and the spare state are made once.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import NonFiniteGradientError, NonFiniteUpdateError
from .layers import ALIGN
from .numerics import quiet_overflow, squared_norm


def lr_problem(value) -> str | None:
    """Return what is wrong with a learning rate, None if it is one: a finite number >= 0, as
    torch.optim takes (0 freezes the parameters). The one statement of this rule."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"Invalid lr: {value!r} (a number is required)"
    if value < 0:
        return f"Invalid learning rate: {value}"
    return None


def check_hyperparameters(hp: dict) -> list[tuple[list, str]]:
    """Return (location, message) for each invalid hyperparameter of a normalized optimizer spec."""
    problems = []

    def number(key, low=0.0, high=math.inf, low_open=False):
        v = hp.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            problems.append(([key], f"Invalid {key}: {v!r} (a number is required)"))
        elif v < low or v > high or (low_open and v == low):
            problems.append(([key], f"Invalid {key}: {v}"))

    if (problem := lr_problem(hp.get("lr"))) is not None:
        problems.append((["lr"], problem))
    for key in ("weight_decay", "momentum", "dampening"):
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


def _moving_average(old, new, decay, x, scratch):
    """new = decay * old + (1 - decay) * x, as torch's mul_(decay).add_(x, alpha=1 - decay)."""
    np.multiply(old, decay, out=new)
    np.multiply(x, 1 - decay, out=scratch)
    new += scratch


def sgd_update(p, g, old, new, hp, t, s1, s2):
    g = _with_weight_decay(p, g, hp["weight_decay"], s1)
    momentum = hp["momentum"]
    if momentum:
        buf = new["momentum_buffer"]
        if t == 1:
            np.copyto(buf, g)  # torch starts the buffer at the first gradient
        else:
            np.multiply(old["momentum_buffer"], momentum, out=buf)
            np.multiply(g, 1 - hp["dampening"], out=s2)
            buf += s2
        if hp["nesterov"]:
            np.multiply(buf, momentum, out=s2)
            s2 += g
            g = s2
        else:
            g = buf
    np.multiply(g, -hp["lr"], out=s2)


def adam_update(p, g, old, new, hp, t, s1, s2):
    lr, (beta1, beta2), eps = hp["lr"], hp["betas"], hp["eps"]
    if hp["type"] == "adam":  # adamw decays the parameter itself instead (decay_factor)
        g = _with_weight_decay(p, g, hp["weight_decay"], s1)
    m, v = new["exp_avg"], new["exp_avg_sq"]
    _moving_average(old["exp_avg"], m, beta1, g, s2)
    np.multiply(old["exp_avg_sq"], beta2, out=v)
    np.multiply(g, g, out=s2)
    s2 *= 1 - beta2
    v += s2
    # torch: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps); one pass fewer written as
    # p -= (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)).
    bias_correction1 = 1 - beta1**t
    bias_correction2_sqrt = math.sqrt(1 - beta2**t)
    np.sqrt(v, out=s2)
    s2 += eps * bias_correction2_sqrt
    np.divide(m, s2, out=s2)
    s2 *= -lr * bias_correction2_sqrt / bias_correction1


def rmsprop_update(p, g, old, new, hp, t, s1, s2):
    alpha, eps, lr, momentum = hp["alpha"], hp["eps"], hp["lr"], hp["momentum"]
    g = _with_weight_decay(p, g, hp["weight_decay"], s1)
    sq = new["square_avg"]
    np.multiply(old["square_avg"], alpha, out=sq)
    np.multiply(g, g, out=s2)
    s2 *= 1 - alpha
    sq += s2
    if hp["centered"]:
        ga = new["grad_avg"]
        _moving_average(old["grad_avg"], ga, alpha, g, s2)
        np.multiply(ga, ga, out=s2)
        np.subtract(sq, s2, out=s2)
        np.sqrt(s2, out=s2)
    else:
        np.sqrt(sq, out=s2)
    s2 += eps
    np.divide(g, s2, out=s2)
    if momentum:
        buf = new["momentum_buffer"]
        np.multiply(old["momentum_buffer"], momentum, out=buf)
        buf += s2
        np.multiply(buf, -lr, out=s2)
    else:
        s2 *= -lr


def state_slots(hp: dict) -> list[str]:
    """Return the names of the per-parameter state arrays an optimizer keeps."""
    kind = hp["type"]
    if kind == "sgd":
        return ["momentum_buffer"] if hp["momentum"] else []
    if kind in ("adam", "adamw"):
        return ["exp_avg", "exp_avg_sq"]
    return ["square_avg"] + (["momentum_buffer"] if hp["momentum"] else []) + (["grad_avg"] if hp["centered"] else [])


UPDATES = {"sgd": sgd_update, "adam": adam_update, "adamw": adam_update, "rmsprop": rmsprop_update}


# Elementwise updates run on cache-sized chunks, spread over the cores: a 2M-parameter
# Adam step is memory-bound, and one core streaming 15 full passes leaves the other idle.
CHUNK = 1 << 16
WORKERS = os.cpu_count() or 1
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="gradserve-optim")


def _run(fn, jobs: list, parallel: bool, quiet: bool = False) -> list:
    """Return [fn(job) for job in jobs], spread over the thread pool when `parallel`.

    With `quiet`, overflow is not reported as a numpy warning in any thread (errstate is per
    thread): an update that overflows is refused by the step instead.
    """
    def run_part(part: list) -> list:
        if not quiet:
            return [fn(job) for job in part]
        with quiet_overflow():
            return [fn(job) for job in part]

    if not parallel:
        return run_part(jobs)
    parts = [jobs[i::WORKERS] for i in range(WORKERS)]
    futures = [_POOL.submit(run_part, part) for part in parts[1:]]
    results = [run_part(parts[0])] + [f.result() for f in futures]
    ordered = [None] * len(jobs)
    for i, part in enumerate(results):
        ordered[i::WORKERS] = part
    return ordered


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
        self._spare: dict[str, dict[str, np.ndarray | None]] = {}  # where the next step writes its state
        self._norm_bound: dict[str, float] = {}  # upper bounds of the parameters' L2 norms
        # Big models: cache-sized chunks spread over the cores. Small ones: whole tensors on
        # one thread, where a thread hop would cost more than it saves.
        self._parallel = WORKERS > 1 and sum(p.size for p in params.values()) > 4 * CHUNK
        chunk = CHUNK if self._parallel else max((p.size for p in params.values()), default=1)
        self._jobs = [(name, slice(start, min(start + chunk, p.size)))
                      for name, p in params.items() for start in range(0, p.size, chunk)]
        # Parameters packed into one buffer (layers.pack): small models step in one call per
        # operation for them all, instead of one per parameter (call overhead was most of a
        # small model's step); the state and scratch are packed the same way.
        self._packed = None if self._parallel else _packed(params, grads)
        self._largest = float(np.finfo(next(iter(params.values())).dtype).max) if params else math.inf
        if self._packed is not None:
            flat = self._packed[0]
            self._flat_scratch = (np.empty_like(flat), np.empty_like(flat))
            self._scratch = {name: tuple(s[part].reshape(params[name].shape) for s in self._flat_scratch)
                             for name, part in self._packed[2].items()}
            self._flat_states: dict[str, np.ndarray] = {}
            self._state_views: dict[str, dict[str, np.ndarray]] = {}

    @property
    def packed_grads(self) -> np.ndarray | None:
        """Gives the one buffer every gradient is a view of, when the step runs on packed buffers."""
        return None if self._packed is None else self._packed[1]

    @property
    def lr(self) -> float:
        return self.hp["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        if (problem := lr_problem(value)) is not None:
            raise ValueError(problem)
        self.hp["lr"] = float(value)

    def step(self, careful: bool | None = None) -> tuple[float, float, dict[str, float], dict[str, float]]:
        """Update the parameters in place; return (grad_norm, update_norm, per-parameter grad and update norms).

        Raises NonFiniteGradientError when any gradient is NaN or Inf, and NonFiniteUpdateError
        when the update would leave a parameter (or the optimizer state) NaN or Inf; parameters
        and state stay untouched. When bounds known before the pass prove the update finite
        (nearly always), the update is made in one pass, in place; otherwise (or `careful`) in
        two: every update computed and checked, the new state in spare buffers, then applied.
        Both give the same bits.
        """
        flat = {name: g.reshape(-1) for name, g in self.grads.items()}
        if self._parallel:
            grad_sq = _sum_by_name(
                self._jobs, _run(lambda job: squared_norm(flat[job[0]][job[1]]), self._jobs, self._parallel))
        else:  # a job per parameter, the whole of it (as _jobs has them): its norm, without the job's machinery
            grad_sq = {name: squared_norm(g) for name, g in flat.items() if g.size}
        grad_norm = math.sqrt(sum(grad_sq.values()))
        if not math.isfinite(grad_norm):
            bad = [name for name, sq in grad_sq.items() if not math.isfinite(sq)]
            raise NonFiniteGradientError(f"non-finite gradients in {', '.join(bad)}; step refused")
        clip_norm, clip_value = self.hp["clip_grad_norm"], self.hp["clip_grad_value"]
        scale = clip_norm / (grad_norm + 1e-6) if clip_norm is not None and grad_norm > clip_norm else None
        slots = state_slots(self.hp)
        steps = {name: int(self.state[name].get("step", 0)) + 1 for name in self.params}
        decay = decay_factor(self.hp)
        largest = self._largest
        if careful is None:
            careful = not self._surely_finite(grad_sq, decay, largest, steps)

        def clipped(name, part):
            g = flat[name][part]
            if scale is not None:
                g *= scale
            if clip_value is not None:
                np.clip(g, -clip_value, clip_value, out=g)
            return g

        if careful:
            update_sq = self._two_phase(clipped, slots, steps, decay, grad_sq, largest)
        elif self._packed is not None and len(set(steps.values())) == 1:
            update_sq = self._packed_step(scale, clip_value, slots, steps, decay)
        else:
            states = {name: {slot: self._state(name, slot) for slot in slots} for name in self.params}

            def update(job):  # in place: the rules take the same buffers for the old and new state
                name, part = job
                p = self.params[name].reshape(-1)[part]
                s1, s2 = (s.reshape(-1)[part] for s in self._scratch[name])
                chunk = {k: v[part] for k, v in states[name].items()}
                self.update(p, clipped(name, part), chunk, chunk, self.hp, steps[name], s1, s2)
                if decay != 1.0:
                    p *= decay
                p += s2
                return squared_norm(s2)

            update_sq = _sum_by_name(self._jobs, _run(update, self._jobs, self._parallel, quiet=True))
        for name, bound in self._norm_bound.items():
            self._norm_bound[name] = abs(decay) * bound + math.sqrt(update_sq[name])
        for name, state in self.state.items():
            if "step" in state:
                state["step"][...] = steps[name]
            else:
                state["step"] = np.array(steps[name], dtype=np.int64)
        update_norm = math.sqrt(sum(update_sq.values()))
        grad_norms = {k: math.sqrt(v) for k, v in grad_sq.items()}
        update_norms = {k: math.sqrt(v) for k, v in update_sq.items()}
        return grad_norm, update_norm, grad_norms, update_norms

    def _packed_step(self, scale, clip_value, slots, steps, decay) -> dict[str, float]:
        """The one-pass, in-place step over the packed buffers, every parameter at once (the same
        operations on each value as a step by parameter); return the squared update norms."""
        p, g, parts = self._packed
        s1, s2 = self._flat_scratch
        state = {slot: self._packed_state(slot) for slot in slots}
        with quiet_overflow():
            if scale is not None:
                g *= scale
            if clip_value is not None:
                np.clip(g, -clip_value, clip_value, out=g)
            self.update(p, g, state, state, self.hp, next(iter(steps.values())), s1, s2)
            if decay != 1.0:
                p *= decay
            p += s2
        return {name: squared_norm(s2[part]) for name, part in parts.items()}

    def _packed_state(self, slot: str) -> np.ndarray:
        """Return the packed buffer of state `slot`, each parameter's state a view of it: zeros
        before its first step, copied in where a checkpoint or a careful step left it elsewhere."""
        flat = self._flat_states.get(slot)
        if flat is None:
            flat = self._flat_states[slot] = np.zeros_like(self._packed[0])
        views = self._state_views.setdefault(slot, {})
        for name, part in self._packed[2].items():
            state, view = self.state[name], views.get(name)
            current = state.get(slot)
            if view is not None and current is view:
                continue
            if view is None:
                view = views[name] = flat[part].reshape(self.params[name].shape)
            if current is None:
                view.fill(0)
            else:
                np.copyto(view, current)
            spare = self._spare.get(name)
            if spare is not None and spare.get(slot) is view:  # the careful step's buffer for the next state
                spare[slot] = current
            state[slot] = view
        return flat

    def _two_phase(self, clipped, slots, steps, decay, grad_sq, largest) -> dict[str, float]:
        """Compute every update and new state into spare buffers, check them, then apply; return
        the squared update norms. Raises NonFiniteUpdateError with nothing changed."""
        old = {name: {slot: self._flat_state(name, slot) for slot in slots} for name in self.params}
        new = {name: {slot: self._spare_state(name, slot).reshape(-1) for slot in slots} for name in self.params}

        def update(job):
            name, part = job
            s1, s2 = (s.reshape(-1)[part] for s in self._scratch[name])
            moved = {k: v[part] for k, v in new[name].items()}
            self.update(self.params[name].reshape(-1)[part], clipped(name, part),
                        {k: v[part] for k, v in old[name].items()}, moved, self.hp, steps[name], s1, s2)
            # A state that overflowed would poison every later step. The moving averages of finite
            # values stay finite, so only a gradient whose squares overflow (g * g past the dtype's
            # range: its squared norm past it too) can make one: only then is the state checked.
            finite_state = grad_sq[name] <= largest or all(np.isfinite(v).all() for v in moved.values())
            return squared_norm(s2), finite_state

        norms = _run(update, self._jobs, self._parallel, quiet=True)
        update_sq = _sum_by_name(self._jobs, [u for u, _ in norms])
        bad = self._non_finite_after(update_sq, decay, largest)
        bad += sorted({name for (name, _), (_, finite) in zip(self._jobs, norms) if not finite} - set(bad))
        if bad:
            raise NonFiniteUpdateError(f"the update (lr {self.lr:g}) would leave non-finite values in "
                                       f"{', '.join(bad)} (parameters or optimizer state); step refused, "
                                       f"parameters untouched")

        def apply(job):
            name, part = job
            p = self.params[name].reshape(-1)[part]
            if decay != 1.0:
                p *= decay
            p += self._scratch[name][1].reshape(-1)[part]

        _run(apply, self._jobs, self._parallel)
        for name, state in self.state.items():
            for slot in slots:
                self._spare[name][slot] = state.get(slot)
                state[slot] = new[name][slot].reshape(self.params[name].shape)
        return update_sq

    def _surely_finite(self, grad_sq: dict[str, float], decay: float, largest: float, steps: dict[str, int]) -> bool:
        """Return True when bounds known before the pass prove every update, parameter and state
        entry will stay finite, so the one-pass, in-place step may run.

        |u| <= the optimizer's bound on any entry of the update (below), |p| <= the tracked
        bound on ||p|| (see _non_finite_after); squares that do not overflow keep the moving
        averages finite. Whatever has no such bound (momentum buffers, centered RMSprop) takes
        the careful step.
        """
        hp, lr = self.hp, self.hp["lr"]
        if lr > 1e30 or any(sq > largest for sq in grad_sq.values()):
            return False
        for name, p in self.params.items():
            bound = self._norm_bound.get(name)
            if bound is None or bound > 1e-8 * largest:
                bound = self._norm_bound[name] = math.sqrt(squared_norm(p))
            u = _update_bound(hp, steps[name], math.sqrt(grad_sq[name]), bound)
            if u is None or abs(decay) * bound + u > largest / 2:
                return False
        return True
    def _state(self, name: str, slot: str) -> np.ndarray:
        """Return the state `slot` of parameter `name`, made zeros at its first step."""
        state = self.state[name]
        if slot not in state:
            state[slot] = np.zeros_like(self.params[name])
        return state[slot].reshape(-1)

    def _flat_state(self, name: str, slot: str) -> np.ndarray:
        """Return the state `slot` of parameter `name`, flat; zeros before its first step."""
        value = self.state[name].get(slot)
        return np.zeros(self.params[name].size, self.params[name].dtype) if value is None else value.reshape(-1)

    def _spare_state(self, name: str, slot: str) -> np.ndarray:
        """Return a buffer the step may write the new state into (the state before last step's)."""
        spare = self._spare.setdefault(name, {}).get(slot)
        if spare is None or spare.shape != self.params[name].shape:
            spare = self._spare[name][slot] = np.empty_like(self.params[name])
        return spare

    def parameters_changed(self) -> None:
        """Forgets the bounds on the parameters' norms: call it after writing parameters."""
        self._norm_bound.clear()

    def _non_finite_after(self, update_sq: dict[str, float], decay: float, largest: float) -> list[str]:
        """Return the parameters the computed updates would leave with a NaN or Inf somewhere.

        |decay * p + u| <= |decay| * ||p|| + ||u|| bounds every entry. ||p|| itself is bounded
        without a pass over p: measured once, then grown by each step's update norm (the
        triangle inequality), and measured again only when that bound nears the dtype's largest
        value; the exact check (a pass) runs only for a parameter whose bound reaches it.
        """
        bad = []
        for name, p in self.params.items():
            u_norm = math.sqrt(update_sq[name])
            bound = self._norm_bound.get(name)
            if bound is None or bound > 1e-8 * largest:
                bound = self._norm_bound[name] = math.sqrt(squared_norm(p))
            if not math.isfinite(u_norm) or abs(decay) > largest:
                bad.append(name)
            elif abs(decay) * bound + u_norm > largest:
                s1, s2 = self._scratch[name]
                np.multiply(p, decay, out=s1)
                s1 += s2
                if not np.isfinite(s1).all():
                    bad.append(name)
        return bad


def _update_bound(hp: dict, t: int, grad_norm: float, param_norm: float) -> float | None:
    """Return a bound on every entry of step t's update, or None where none is known.

    SGD without momentum: lr * |g + wd p| <= lr (||g|| + wd ||p||). Adam and AdamW: by
    Cauchy-Schwarz on the two moving averages, |m| / sqrt(v) <= (1 - b1) / sqrt((1 - b2)(1 -
    b1^2 / b2)) whatever the gradients, when b1^2 < b2. RMSprop (not centered, no momentum):
    the new average holds (1 - alpha) g^2, so |g| / sqrt(avg) <= 1 / sqrt(1 - alpha).
    """
    kind, lr = hp["type"], hp["lr"]
    if kind == "sgd" and not hp["momentum"]:
        return lr * (grad_norm + hp["weight_decay"] * param_norm)
    if kind in ("adam", "adamw"):
        beta1, beta2 = hp["betas"]
        if not beta1 * beta1 < beta2 < 1:
            return None
        ratio = (1 - beta1) / math.sqrt((1 - beta2) * (1 - beta1 * beta1 / beta2))
        return lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * ratio
    if kind == "rmsprop" and not hp["momentum"] and not hp["centered"] and hp["alpha"] < 1:
        return lr / math.sqrt(1 - hp["alpha"])
    return None


def decay_factor(hp: dict) -> float:
    """Return what AdamW's decoupled weight decay multiplies each parameter by (1 otherwise)."""
    return 1 - hp["lr"] * hp["weight_decay"] if hp["type"] == "adamw" else 1.0


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _packed(params: dict[str, np.ndarray], grads: dict[str, np.ndarray]):
    """Return (flat parameters, flat gradients, each parameter's slice of them) when every
    parameter and gradient is a contiguous view of one buffer each, at the same places, and the
    parameters, with their alignment gaps (layers.pack), fill the buffer; None otherwise."""
    if not params:
        return None
    first = next(iter(params))
    flat, flat_grads = params[first].base, grads[first].base
    if (flat is None or flat_grads is None or flat.ndim != 1 or flat.shape != flat_grads.shape
            or flat.dtype != flat_grads.dtype or not (flat.flags.c_contiguous and flat_grads.flags.c_contiguous)):
        return None
    parts, covered = {}, 0
    for name, p in params.items():
        g = grads[name]
        if (p.base is not flat or g.base is not flat_grads or p.dtype != flat.dtype
                or not (p.flags.c_contiguous and g.flags.c_contiguous)):
            return None
        offset = _address(p) - _address(flat)
        if offset != _address(g) - _address(flat_grads) or offset % p.itemsize:
            return None
        start = offset // p.itemsize
        parts[name] = slice(start, start + p.size)
        covered += -(-p.size // ALIGN) * ALIGN
    ordered = sorted(parts.values(), key=lambda part: part.start)
    if covered != flat.size or any(a.stop > b.start for a, b in zip(ordered, ordered[1:])):
        return None  # shared or overlapping parameters, or values in the buffer that are no parameter
    return flat, flat_grads, parts


def _sum_by_name(jobs: list, values: list) -> dict[str, float]:
    sums: dict[str, float] = {}
    for (name, _), value in zip(jobs, values):
        sums[name] = sums.get(name, 0.0) + value
    return sums
