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
    ExportError,
    InputError,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    NothingToStepError,
    SpecError,
    StaleTapeError,
    StoppedError,
)
from .evaluate import Evaluation, evaluate
from .gradcheck import GradcheckReport, gradcheck
from .ids import ID_PATTERN, ID_RE, ID_RULE
from .model import Backprop, Model, Shard, StepResult, Tape, TrainStepResult

memory.keep_heap_pad()

__all__ = [
    "Model", "Tape", "Shard", "ID_PATTERN", "ID_RE", "ID_RULE", "Backprop", "StepResult", "TrainStepResult", "gradcheck", "GradcheckReport", "evaluate", "Evaluation",
    "CoreError", "SpecError", "InputError", "StaleTapeError", "NothingToStepError",
    "NonFiniteGradientError", "NonFiniteUpdateError", "CheckpointError", "StoppedError", "ExportError",
]
