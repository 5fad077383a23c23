"""The client's result records hold exactly the fields the server declares for each answer.

The client is its own distribution and cannot import the server's types; this checks its
records against the server's OpenAPI document, where core's StepResult and TrainStepResult
(and the service's answers) are declared once.
"""

import dataclasses
from pathlib import Path

import pytest

import gradserve_client as gs
from service.main import create_app
from service.settings import Settings

OPENAPI = create_app(Settings(data_dir=Path("unused"))).openapi()


def answer_fields(path: str) -> set[str]:
    schema = OPENAPI["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[1]
    return set(OPENAPI["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize("record, path", [
    (gs.StepResult, "/v1/models/{model_id}/step"),
    (gs.TrainStepResult, "/v1/models/{model_id}/train_step"),
    (gs.Evaluation, "/v1/models/{model_id}/evaluate"),
    (gs.BackwardResult, "/v1/models/{model_id}/backward"),
    (gs.ForwardBackwardResult, "/v1/models/{model_id}/forward_backward"),
])
def test_a_record_has_the_fields_of_its_answer(record, path):
    assert {field.name for field in dataclasses.fields(record)} == answer_fields(path)
