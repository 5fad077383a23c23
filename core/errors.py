"""The engine's exceptions: what went wrong, in words a caller can show to a user.

    CoreError
    ├── SpecError(ValueError)          the model spec is invalid          (.errors)
    ├── InputError(ValueError)         inputs / targets / parameters bad  (.errors)
    ├── CheckpointError(ValueError)    a checkpoint cannot be read
    ├── StaleTapeError                 backward on a tape older than the parameters
    ├── NothingToStepError             step with no accumulated gradients
    ├── NonFiniteGradientError         step refused: NaN/Inf in the gradients
    ├── NonFiniteUpdateError           step refused: the update would leave NaN/Inf parameters
    ├── StoppedError                   long work stopped early because its caller asked
    └── ExportError                    an export cannot be made (its package is not installed)

`.errors` is a list of ``{"loc": [...], "msg": str, "type": str}``, FastAPI's shape for 422s,
so a service can pass it on unchanged.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the engine raises on purpose."""


class _LocatedError(CoreError, ValueError):
    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))

    def __reduce__(self):  # pickled by its errors (a model host on Ray raises it in another process)
        return type(self), (self.errors,)

    @classmethod
    def at(cls, loc: list, msg: str, type: str = "value_error") -> "_LocatedError":
        """Return an error with a single located problem."""
        return cls([{"loc": list(loc), "msg": msg, "type": type}])


class SpecError(_LocatedError):
    """The model spec is invalid; `.errors` names each problem's place in the spec."""


class InputError(_LocatedError):
    """A tensor given to the model is invalid; `.errors` names the field."""


class CheckpointError(CoreError, ValueError):
    """A checkpoint file is unreadable, incomplete or inconsistent with its spec."""


class StaleTapeError(CoreError):
    """The tape was recorded before the parameters last changed."""


class NothingToStepError(CoreError):
    """step() was called with no gradients accumulated."""


class NonFiniteGradientError(CoreError):
    """The accumulated gradients hold NaN or Inf; the step was refused."""


class NonFiniteUpdateError(CoreError):
    """The update would leave a parameter NaN or Inf (an lr far too big); the step was refused."""


class StoppedError(CoreError):
    """Long work (a gradient check) was stopped before it finished because `should_stop` said so."""


class ExportError(CoreError):
    """The model cannot be exported: the format's package is missing (the message says what to
    install), or a layer has no rule in that format (the message names it)."""
