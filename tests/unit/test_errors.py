"""The serving layer's error vocabulary: kinds, statuses, the one error shape, and how graph exceptions map to it."""

from __future__ import annotations

import pickle

import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments.errors import STATUS_CODES, ErrorKind, ServiceError, describe_errors, error_response, to_service_error
from multitask.errors import EncoderMismatchError


def test_every_error_kind_has_a_status_and_only_server_faults_are_500():
    assert set(STATUS_CODES) == set(ErrorKind)
    assert [kind for kind, status in STATUS_CODES.items() if status >= 500 and status != 503] == [
        ErrorKind.internal_error
    ]


def test_error_response_has_the_one_shape_and_retry_after_on_503():
    response = error_response(ErrorKind.overloaded, "busy")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.body == b'{"error":"busy","error_type":"overloaded"}'
    assert "retry-after" not in error_response(ErrorKind.unknown_task, "no").headers


def _as_replica_error(exc: Exception) -> Exception:
    """What a handle caller sees when a replica raised `exc`."""
    try:
        raise exc
    except type(exc) as raised:
        return RayTaskError("classify", "traceback", raised).as_instanceof_cause()


@pytest.mark.parametrize(
    "exc, kind",
    [
        (BackPressureError(num_queued_requests=9, max_queued_requests=8), ErrorKind.overloaded),
        (_as_replica_error(EncoderMismatchError("fingerprints differ")), ErrorKind.encoder_mismatch),
        (TimeoutError(), ErrorKind.timeout),
        (_as_replica_error(ServiceError(ErrorKind.unknown_task, "no")), ErrorKind.unknown_task),
        (_as_replica_error(RuntimeError("bug")), ErrorKind.internal_error),
        (ValueError("bug"), ErrorKind.internal_error),
        (ActorDiedError(), ErrorKind.unavailable),  # a dead replica: 503, retry, not a 500
    ],
)
def test_graph_exceptions_map_to_the_vocabulary(exc, kind):
    error = to_service_error(exc)
    assert error.kind == kind and error.status_code == STATUS_CODES[kind]
    assert "traceback" not in error.message


def test_service_error_survives_pickling_for_handle_callers():
    error = pickle.loads(pickle.dumps(ServiceError(ErrorKind.too_many_texts, "65 texts")))
    assert (error.kind, error.message, error.status_code) == (ErrorKind.too_many_texts, "65 texts", 413)


def test_validation_errors_become_one_message_and_bad_json_a_400():
    kind, message = describe_errors(
        [{"type": "list_type", "loc": ("body", "texts"), "msg": "Input should be a valid list"}]
    )
    assert kind is ErrorKind.validation_error and message == "texts: Input should be a valid list"
    assert describe_errors([{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error"}])[0] is (
        ErrorKind.malformed_json
    )
