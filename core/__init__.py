"""gradserve's engine: a NumPy backprop library with PyTorch's names and numerics.

    from core import Model, gradcheck
    model = Model.from_spec(spec)
    loss = model.forward_backward(x, targets)
    model.step()
"""

from . import memory
from .errors import (
    CheckpointError,
    CoreError,
    InputError,
    NonFiniteGradientError,
    NothingToStepError,
    SpecError,
    StaleTapeError,
)
from .gradcheck import GradcheckReport, gradcheck
from .model import Backprop, Model, StepResult, Tape

memory.keep_heap_pad()

__all__ = [
    "Model", "Tape", "Backprop", "StepResult", "gradcheck", "GradcheckReport",
    "CoreError", "SpecError", "InputError", "StaleTapeError", "NothingToStepError",
    "NonFiniteGradientError", "CheckpointError",
]
