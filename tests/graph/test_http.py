"""The HTTP API (README, "HTTP API (v1)"), over real HTTP on 127.0.0.1, against the deployed graph."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from graph import ENCODER_APP

from .helpers import ANSWER_TOLERANCE, METRICS, assert_matches_model, sample_texts

TOPIC_LABELS = ["Technology", "Business", "Sports", "Entertainment", "Politics", "Science/Health"]
SENTIMENT_LABELS = ["positive", "neutral", "negative"]


def test_predict_every_task_in_input_order_matches_the_in_process_model(service, served_model, reference_model):
    texts = sample_texts(12)
    response = service.post("/v1/predict", json={"texts": texts, "return_embeddings": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["results"]) == len(texts)
    embeddings, _ = served_model.runtime.forward(texts)
    for got, want, embedding in zip(body["results"], served_model.predict(texts), embeddings):
        assert list(got) == ["topic", "sentiment", "embedding", "truncated"]
        assert got["truncated"] is False
        assert_matches_model(got, want, ["topic", "sentiment"])
        assert len(got["embedding"]) == 1024
        assert np.allclose(got["embedding"], embedding, atol=ANSWER_TOLERANCE)
    assert body["model"]["fingerprint"] == reference_model.encoder.fingerprint
    assert body["model"]["embedding_dim"] == 1024


def test_results_follow_input_order(service):
    texts = sample_texts(8)
    forward = service.post("/v1/predict", json={"texts": texts}).json()["results"]
    backward = service.post("/v1/predict", json={"texts": texts[::-1]}).json()["results"]
    for a, b in zip(forward, backward[::-1]):
        for task in ("topic", "sentiment"):
            assert np.allclose(
                list(a[task]["scores"].values()), list(b[task]["scores"].values()), atol=ANSWER_TOLERANCE
            )
    # and the texts are told apart: no two neighbours share all their scores
    scores = [tuple(result["topic"]["scores"].values()) for result in forward]
    assert len(set(scores)) == len(scores)


def test_predict_one_task_returns_only_that_task(service, served_model):
    texts = sample_texts(3)
    for path, body in (
        ("/v1/predict", {"texts": texts, "tasks": ["sentiment"]}),
        ("/v1/predict/sentiment", {"texts": texts}),
    ):
        response = service.post(path, json=body)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [sorted(result) for result in results] == [["sentiment", "truncated"]] * 3
        for got, want in zip(results, served_model.predict(texts, tasks=["sentiment"])):
            assert list(got["sentiment"]["scores"]) == SENTIMENT_LABELS
            assert_matches_model(got, want, ["sentiment"])


def test_tasks_come_back_in_the_asked_order_and_duplicates_are_refused(service):
    response = service.post("/v1/predict", json={"texts": ["Rain again."], "tasks": ["sentiment", "topic"]})
    assert response.status_code == 200, response.text
    assert list(response.json()["results"][0]) == ["sentiment", "topic", "truncated"]
    repeated = service.post("/v1/predict", json={"texts": ["Rain."], "tasks": ["sentiment", "topic", "sentiment"]})
    assert repeated.status_code == 422 and repeated.json()["error_type"] == "validation_error"


def test_embed_normalized_and_raw_match_the_in_process_encoder(service, served_model):
    texts = sample_texts(5)
    raw, _ = served_model.runtime.forward(texts)
    normalized = service.post("/v1/embed", json={"texts": texts}).json()
    assert normalized["dimension"] == 1024 and normalized["truncated"] == [False] * 5
    got = np.array(normalized["embeddings"])
    assert got.shape == (5, 1024)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=ANSWER_TOLERANCE)
    unnormalized = service.post("/v1/embed", json={"texts": texts, "normalize": False}).json()
    assert np.allclose(np.array(unnormalized["embeddings"]), raw, atol=ANSWER_TOLERANCE)


def test_long_text_is_truncated_and_flagged(service, served_model):
    long_text = "The match went to extra time. " * 400  # far past 128 tokens: the encoder reads the first 128
    body = service.post("/v1/predict", json={"texts": ["Short one.", long_text]}).json()
    assert [result["truncated"] for result in body["results"]] == [False, True]
    assert_matches_model(body["results"][1], served_model.predict([long_text])[0], ["topic", "sentiment"])
    assert service.post("/v1/embed", json={"texts": [long_text]}).json()["truncated"] == [True]


def test_tasks_route_lists_labels_and_checkpoint_metrics(service):
    response = service.get("/v1/tasks")
    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    assert list(tasks) == ["topic", "sentiment"]
    assert tasks["topic"]["labels"] == TOPIC_LABELS
    assert tasks["sentiment"]["labels"] == SENTIMENT_LABELS
    assert tasks["topic"]["metrics"] == METRICS["topic"]
    assert tasks["sentiment"]["metrics"] == METRICS["sentiment"]


def test_healthz_names_every_deployment(service):
    response = service.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "deployments": {"Encoder": "ok", "TopicHead": "ok", "SentimentHead": "ok"},
    }


def test_openapi_document_is_generated_from_the_models(service):
    document = service.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/{task}", "/v1/embed", "/v1/tasks", "/healthz"} <= set(document["paths"])
    assert {"/v1/embeddings", "/v1/classify/{task}", "/"} <= set(document["paths"])  # the clients' routes, the page
    schemas = document["components"]["schemas"]
    assert set(schemas["PredictRequest"]["properties"]) == {"texts", "tasks", "return_embeddings"}
    assert schemas["EmbedRequest"]["properties"]["normalize"]["default"] is True
    predict = document["paths"]["/v1/predict"]["post"]["responses"]
    assert predict["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "HTTPValidationError" not in schemas  # FastAPI's own error body is replaced by ours
    openai = document["paths"]["/v1/embeddings"]["post"]["responses"]["422"]["content"]["application/json"]
    assert openai["schema"]["$ref"].endswith("/OpenAIErrorResponse")  # OpenAI's error shape on its route
    assert set(schemas["OpenAIEmbeddingsRequest"]["properties"]) >= {"input", "model", "encoding_format"}
    assert set(schemas["ClassifyRequest"]["properties"]) == {"inputs", "parameters"}


def test_json_is_read_whatever_the_content_type(service):
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):  # curl -d, and no header
        headers = {"content-type": content_type} if content_type else {}
        response = service.post("/v1/predict/topic", data=b'{"texts": ["Parliament votes today."]}', headers=headers)
        assert response.status_code == 200, (content_type, response.text)
        assert response.json()["results"][0]["topic"]["label"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_results(service, served_model):
    from ray import serve

    encoder = serve.get_deployment_handle("Encoder", app_name=ENCODER_APP)
    before = encoder.stats.remote().result()
    texts = sample_texts(24)
    expected = served_model.predict(texts, tasks=["topic"])

    def one(i: int) -> dict:
        response = service.post("/v1/predict", json={"texts": [texts[i]], "tasks": ["topic"]})
        assert response.status_code == 200, response.text
        return response.json()["results"][0]

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(len(texts))))
    for got, want in zip(results, expected):
        assert_matches_model(got, want, ["topic"])
    after = encoder.stats.remote().result()
    assert after["texts"] - before["texts"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts)  # some requests shared a forward pass
    assert after["largest_batch"] > 1
