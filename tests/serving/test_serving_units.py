"""The serving layer's pure logic, without a running graph: error vocabulary, truncation flags, device choice."""

from __future__ import annotations

import pickle

import pytest
import torch
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments.errors import STATUS_CODES, ErrorKind, ServiceError, describe_errors, error_response, to_service_error
from deployments.runtime import EncoderRuntime, pick_dtype, truncated_flags
from multitask.batching import length_batches
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
    ],
)
def test_graph_exceptions_map_to_the_vocabulary(exc, kind):
    error = to_service_error(exc)
    assert error.kind == kind
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


def test_truncated_flags_mark_only_texts_over_the_token_limit(minilm_encoder):
    limit = minilm_encoder.max_length
    exactly = " ".join(["word"] * (limit - 2))  # fills the window with [CLS] and [SEP], loses nothing
    texts = ["short", exactly, "word " * (limit * 2)]
    batch = minilm_encoder.tokenize(texts)
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, limit, limit]
    assert truncated_flags(minilm_encoder, texts, batch["attention_mask"]) == [False, False, True]


def test_dtype_auto_is_fp32_on_cpu_and_explicit_choices_win():
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16


def test_runtime_forward_matches_the_in_process_model(checkpoint_dir, reference_model):
    texts = ["A short one.", "Markets rallied after the vote. " * 40]
    runtime = EncoderRuntime.load(checkpoint_dir, device="cpu", dtype="auto")
    embeddings, truncated = runtime.forward(texts)
    assert embeddings.dtype == "float32" and embeddings.shape == (2, 1024) and truncated == [False, True]
    with torch.inference_mode():
        expected = reference_model.encoder(**reference_model.encoder.tokenize(texts)).numpy()
    assert abs(embeddings - expected).max() < 1e-4
    assert runtime.describe()["fingerprint"] == reference_model.encoder.fingerprint


def test_length_batches_sort_by_length_and_respect_both_limits():
    lengths = [30, 5, 12, 7, 100, 6]
    batches = length_batches(lengths, max_batch=2, max_tokens=40)
    assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert [[lengths[i] for i in batch] for batch in batches] == [[5, 6], [7, 12], [30], [100]]
    assert length_batches(lengths) == [[1, 5, 3, 2, 0, 4]]  # no limits: one pass, shortest first


def test_runtime_forward_in_length_sorted_passes_keeps_input_order(checkpoint_dir):
    texts = ["Markets rallied after the vote. " * 40, "Hi.", "The striker scored twice in the final.", "Ok then."]
    runtime = EncoderRuntime.load(checkpoint_dir, device="cpu", dtype="auto")
    whole, whole_truncated = runtime.forward(texts)
    parts, parts_truncated = runtime.forward(texts, max_batch=2, max_tokens=64)
    assert abs(whole - parts).max() < 1e-4 and whole_truncated == parts_truncated == [True, False, False, False]


def test_numpy_head_matches_the_torch_head_and_checks_the_fingerprint(checkpoint_dir, reference_model):
    import numpy as np

    from multitask.checkpoint import read_manifest
    from multitask.errors import EncoderMismatchError
    from multitask.numpy_head import NumpyHead

    fingerprint = read_manifest(checkpoint_dir).encoder.fingerprint
    x = np.random.default_rng(0).normal(size=(4, 1024)).astype(np.float32)
    for task, torch_head in reference_model.heads.items():
        head = NumpyHead.load(checkpoint_dir, task, fingerprint)
        with torch.inference_mode():
            expected = torch_head.probabilities(torch.from_numpy(x)).numpy()
        assert abs(head.probabilities(x) - expected).max() < 1e-5
    with pytest.raises(EncoderMismatchError):
        NumpyHead.load(checkpoint_dir, "topic", "0" * 16)
