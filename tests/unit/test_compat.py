"""The client-compatible routes' shapes without Ray: OpenAI's error shape on /v1/embeddings whichever layer answers
(auth, body limit, schema, routing), the v1 shape elsewhere, and Hugging Face's ranking."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from deployments.hf_compat import ranked
from deployments.http import create_app
from tests.support.fake_ingress import FakeIngress


@pytest.mark.parametrize(
    "token, body, headers, status, code",
    [
        (b"s3cret", b'{"input": "a"}', {}, 401, "unauthorized"),
        (None, b'{"input": "' + b"a" * 2000 + b'"}', {}, 413, "body_too_large"),
        (None, b'{"input": "a", "colour": "red"}', {}, 422, "validation_error"),
        (None, b'{"input": ', {}, 400, "malformed_json"),
    ],
    ids=["auth", "body limit", "schema", "malformed JSON"],
)
def test_openai_route_errors_take_openai_shape_whichever_layer_answers(token, body, headers, status, code):
    client = TestClient(create_app(FakeIngress(token=token, max_body_bytes=1000)))
    response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json", **headers})
    assert response.status_code == status
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": None,
            "code": code,
        }
    }
    assert response.json()["error"]["message"]
    other = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert set(other.json()) == {"error", "error_type"}  # the v1 shape stays on every other route


def test_ranked_sorts_best_first_and_keeps_top_k():
    scores = {"positive": 0.2, "neutral": 0.1, "negative": 0.7}
    assert ranked(scores, None) == [
        {"label": "negative", "score": 0.7},
        {"label": "positive", "score": 0.2},
        {"label": "neutral", "score": 0.1},
    ]
    assert ranked(scores, 1) == [{"label": "negative", "score": 0.7}]
    assert len(ranked(scores, 10)) == 3  # more than there are labels: every label, as the Inference API does
