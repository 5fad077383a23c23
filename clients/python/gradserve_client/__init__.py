"""Python client for the gradserve gradient-computation service.

    from gradserve_client import Client

    with Client("http://127.0.0.1:8000") as client:
        model = client.create_model(
            layers=[{"type": "linear", "in_features": 2, "out_features": 16}, {"type": "relu"},
                    {"type": "linear", "out_features": 3}],
            loss={"type": "softmax_cross_entropy"},
            optimizer={"type": "adam", "lr": 0.01},
        )
        history = model.fit(x, y, epochs=10, batch_size=32, validation_data=(x_val, y_val))
"""

from ._base import __version__
from ._client import AsyncClient, Client
from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DeadlineExceededError,
    GradserveError,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    NotFoundError,
    NothingToStepError,
    PayloadTooLargeError,
    ServerError,
    StaleTapeError,
    ValidationError,
)
from ._fit import History
from ._history import StepHistory
from ._model import AsyncRemoteModel, RemoteModel
from ._types import (
    BackwardResult,
    DataSetInfo,
    DataSetList,
    Evaluation,
    ForwardBackwardResult,
    GradcheckReport,
    ModelInfo,
    StepResult,
    Tape,
    TrainStepResult,
)

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "RemoteModel",
    "AsyncRemoteModel",
    "History",
    "StepHistory",
    "ModelInfo",
    "Tape",
    "BackwardResult",
    "Evaluation",
    "DataSetInfo",
    "DataSetList",
    "ForwardBackwardResult",
    "StepResult",
    "TrainStepResult",
    "GradcheckReport",
    "GradserveError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "StaleTapeError",
    "NothingToStepError",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "PayloadTooLargeError",
    "ValidationError",
    "ServerError",
    "DeadlineExceededError",
    "APIConnectionError",
    "APITimeoutError",
]
