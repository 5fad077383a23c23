"""The tensor object of the wire (KServe V2 / Open Inference Protocol) as pydantic models.

The codec (service/tensors.py) turns these into arrays and back; these only describe them, for
validation of everything but the elements and for the OpenAPI document.
"""

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from service.listform import NumericArray

HEADER = "Inference-Header-Content-Length"

Datatype = Literal["FP32", "FP64", "INT32", "INT64"]
DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
}
DATATYPE_OF = {dtype: name for name, dtype in DTYPES.items()}

_DATA_SCHEMA = {
    "type": "array",
    "items": {"anyOf": [{"type": "number"}, {"type": "array"},
                        {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]},
    "description": "Row-major values, flat or nested. Absent in binary form.",
}


class TensorParameters(BaseModel):
    """Per-tensor parameters of the binary tensor data extension."""

    model_config = ConfigDict(strict=True)
    binary_data_size: int | None = Field(None, ge=0, description="Bytes of this tensor in the binary part.")


class Tensor(BaseModel):
    """A KServe V2 (Open Inference Protocol) tensor object."""

    model_config = ConfigDict(strict=True, json_schema_extra={
        "examples": [{"shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}],
    })

    shape: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="Inferred from nested data if absent.")
    datatype: Datatype | None = Field(None, description="Inputs default to the model's dtype, labels to INT64.")
    # Validated by the codec, not by pydantic, so that no Python loop touches the elements.
    data: Annotated[Any, WithJsonSchema(_DATA_SCHEMA)] = None
    parameters: TensorParameters | None = None


TensorInput = Annotated[
    Tensor,
    BeforeValidator(lambda value: {"data": value} if isinstance(value, (list, NumericArray)) else value),  # bare
    WithJsonSchema({"anyOf": [{"$ref": "#/components/schemas/Tensor"},
                              {"type": "array", "description": "A bare nested list; shape inferred."}]}),
]
