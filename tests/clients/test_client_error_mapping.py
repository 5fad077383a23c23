"""One function maps every (status, body) to its exception class."""

import pytest

import gradserve_client as gs
from gradserve_client._exceptions import error_from_response

CASES = [
    (400, "bad_request", gs.BadRequestError),
    (401, "unauthorized", gs.AuthenticationError),
    (404, "not_found", gs.NotFoundError),
    (409, "model_exists", gs.ConflictError),
    (409, "stale_tape", gs.StaleTapeError),
    (409, "nothing_to_step", gs.NothingToStepError),
    (409, "non_finite_gradient", gs.NonFiniteGradientError),
    (409, "non_finite_update", gs.NonFiniteUpdateError),
    (413, "payload_too_large", gs.PayloadTooLargeError),
    (422, "invalid_input", gs.ValidationError),
    (500, "internal_error", gs.ServerError),
    (503, None, gs.ServerError),
    (503, "deadline_exceeded", gs.DeadlineExceededError),
    (418, "teapot", gs.APIError),
]


@pytest.mark.parametrize("status, code, cls", CASES)
def test_status_and_code_pick_the_class(status, code, cls):
    error = error_from_response(status, {"detail": "why", "code": code})
    assert type(error) is cls
    assert (error.status, error.code, error.detail) == (status, code, "why")
    assert isinstance(error, gs.APIError) and isinstance(error, gs.GradserveError)


def test_conflict_subclasses_are_conflicts():
    assert issubclass(gs.StaleTapeError, gs.ConflictError)
    assert issubclass(gs.APITimeoutError, gs.APIConnectionError)


def test_validation_error_exposes_the_servers_field_errors():
    detail = [{"loc": ["body", "inputs"], "msg": "expected 2 features, got 3", "type": "value_error"}]
    error = error_from_response(422, {"detail": detail, "code": "invalid_input"})
    assert error.errors == detail
    assert "body.inputs: expected 2 features, got 3" in str(error)


def test_a_non_json_error_body_still_maps():
    error = error_from_response(413, "Request Entity Too Large")
    assert type(error) is gs.PayloadTooLargeError and error.detail == "Request Entity Too Large"
