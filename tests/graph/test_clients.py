"""The clients people already use, unchanged, against the deployed graph: the `openai` SDK (embeddings),
`huggingface_hub`'s InferenceClient (text-classification per task), plain HTTP, a Serve handle, and whole documents.
Each call here is the one README's "Clients" section shows."""

from __future__ import annotations

import base64
import time

import numpy as np
import openai
import pytest
import requests
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from openai import OpenAI

from graph import APP_NAME

from .helpers import sample_texts

TOPIC_LABELS = {"Technology", "Business", "Sports", "Entertainment", "Politics", "Science/Health"}
TOKEN = "clients-test-token"
ARTICLE = "The central bank raised rates again on Tuesday, and stocks fell across the board. " * 1200  # 98,400 chars


@pytest.fixture
def hub_client_online(monkeypatch):
    """huggingface_hub refuses every request under HF_HUB_OFFLINE=1 (set for the whole suite), even to a URL of
    ours; the client below only ever calls the service on 127.0.0.1."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


# --- OpenAI embeddings ----------------------------------------------------------------------------------------------
def test_openai_sdk_gets_the_shared_embeddings_as_floats_and_base64(service, reference_model):
    client = OpenAI(base_url=f"{service.url}/v1", api_key="unused-while-auth-is-off", max_retries=0)
    texts = sample_texts(3)
    by_default = client.embeddings.create(model="multitask", input=texts)  # the SDK asks for base64, decodes it
    as_floats = client.embeddings.create(model="multitask", input=texts, encoding_format="float")
    v1 = np.array(service.post("/v1/embed", json={"texts": texts}).json()["embeddings"])  # unit-normalized
    for response in (by_default, as_floats):
        assert response.object == "list" and [item.index for item in response.data] == [0, 1, 2]
        assert np.allclose(np.array([item.embedding for item in response.data]), v1, atol=1e-5)
        assert response.model == service.checkpoint.name
        tokenizer = reference_model.encoder.tokenizer  # the encoder's own tokenizer counts the tokens
        expected = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"])
        assert response.usage.prompt_tokens == response.usage.total_tokens == expected
    one = client.embeddings.create(model="multitask", input="A single string is one text.")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 1024


def test_base64_embeddings_are_little_endian_float32(service):
    body = {"model": "multitask", "input": ["hello world"], "encoding_format": "base64"}
    item = service.post("/v1/embeddings", json=body).json()["data"][0]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    expected = service.post("/v1/embed", json={"texts": ["hello world"]}).json()["embeddings"][0]
    assert vector.shape == (1024,) and np.allclose(vector, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, code",
    [
        ({"input": ["fine"], "dimensions": 256}, openai.UnprocessableEntityError, "validation_error"),
        ({"input": ["fine", " "]}, openai.UnprocessableEntityError, "empty_text"),
        ({"input": [[101, 2023, 102]]}, openai.UnprocessableEntityError, "validation_error"),
        ({"input": []}, openai.UnprocessableEntityError, "validation_error"),
        ({"input": ["a"] * 65}, openai.APIStatusError, "too_many_texts"),
    ],
    ids=["other dimensions", "blank text", "token ids", "empty list", "too many texts"],
)
def test_openai_sdk_raises_its_usual_errors(service, kwargs, error, code):
    client = OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(error) as raised:
        client.embeddings.create(model="multitask", **kwargs)
    assert raised.value.code == code and raised.value.type == "invalid_request_error" and raised.value.message
    same_size = client.embeddings.create(model="multitask", input="fine", dimensions=1024)
    assert len(same_size.data[0].embedding) == 1024


# --- Hugging Face text-classification --------------------------------------------------------------------------------
def test_huggingface_client_classifies_with_one_task(service, hub_client_online):
    text = "The striker scored twice in the final."
    client = InferenceClient(model=f"{service.url}/v1/classify/topic")
    labels = client.text_classification(text)
    assert {item.label for item in labels} == TOPIC_LABELS
    scores = [item.score for item in labels]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    v1 = service.post("/v1/predict/topic", json={"texts": [text]}).json()["results"][0]["topic"]
    assert labels[0].label == v1["label"] and abs(labels[0].score - v1["confidence"]) < 1e-6
    assert [item.label for item in client.text_classification(text, top_k=2)] == [item.label for item in labels[:2]]


def test_classify_answers_one_ranked_list_per_input(service):
    texts = ["Shares slid after the earnings call.", "I loved every minute of it!"]
    response = service.post("/v1/classify/sentiment", json={"inputs": texts, "parameters": {"top_k": 1}})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = service.post("/v1/predict/sentiment", json={"texts": texts}).json()["results"]
    assert [[item["label"] for item in ranked] for ranked in answer] == [[r["sentiment"]["label"]] for r in expected]
    unknown = service.post("/v1/classify/weather", json={"inputs": "Rain."})
    assert unknown.status_code == 422 and unknown.json()["error_type"] == "unknown_task"  # TEI's error shape


def test_huggingface_client_raises_on_an_unknown_task(service, hub_client_online):
    with pytest.raises(HfHubHTTPError) as raised:
        InferenceClient(model=f"{service.url}/v1/classify/weather").text_classification("Rain.")
    assert raised.value.response.status_code == 422


# --- Serve handle ------------------------------------------------------------------------------------------------------
def test_handle_methods_return_what_the_compatible_routes_return(service):
    from ray import serve

    classifier = serve.get_app_handle(APP_NAME)
    ranked = classifier.classify.remote("topic", "The striker scored twice.").result()
    assert ranked == service.post("/v1/classify/topic", json={"inputs": "The striker scored twice."}).json()
    embeddings = classifier.openai_embeddings.remote("hello world").result()
    over_http = service.post("/v1/embeddings", json={"input": "hello world"}).json()
    assert embeddings["usage"] == over_http["usage"]
    assert np.allclose(embeddings["data"][0]["embedding"], over_http["data"][0]["embedding"], atol=1e-6)


# --- whole documents -----------------------------------------------------------------------------------------------------
def test_a_whole_article_is_truncated_not_refused(service):
    """What it costs (only the window is tokenized, about a paragraph's worth) is checked without a clock in
    tests/model/test_text_window.py."""
    for path, body in (
        ("/v1/predict", {"texts": [ARTICLE, "Short."]}),
        ("/v1/embed", {"texts": [ARTICLE, "Short."]}),
    ):
        response = service.post(path, json=body)
        assert response.status_code == 200, response.text[:300]
        flags = response.json().get("truncated") or [result["truncated"] for result in response.json()["results"]]
        assert flags == [True, False]
    usage = service.post("/v1/embeddings", json={"input": [ARTICLE]}).json()["usage"]
    assert usage["prompt_tokens"] == 128  # the window, special tokens included


# --- bearer-token auth -------------------------------------------------------------------------------------------------
def test_clients_send_the_bearer_token_when_auth_is_on(service, tmp_path, hub_client_online):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    service.redeploy(auth_token_file=str(token_file))
    try:
        _wait_for_status(service, 401)
        client = OpenAI(base_url=f"{service.url}/v1", api_key=TOKEN, max_retries=0)
        assert len(client.embeddings.create(model="multitask", input="with a key").data[0].embedding) == 1024
        with pytest.raises(openai.AuthenticationError) as raised:
            OpenAI(base_url=f"{service.url}/v1", api_key="wrong", max_retries=0).embeddings.create(
                model="multitask", input="no"
            )
        assert raised.value.code == "unauthorized"
        hub = InferenceClient(model=f"{service.url}/v1/classify/topic", token=TOKEN)
        assert {item.label for item in hub.text_classification("Parliament votes today.")} == TOPIC_LABELS
        assert requests.get(service.url + "/", timeout=30).status_code == 200  # the page itself stays open
    finally:
        service.redeploy()
        _wait_for_status(service, 200)


def _wait_for_status(service, status: int, within_s: float = 60) -> None:
    """Until an unauthenticated request gets `status` (a redeploy reconfigures the ingress asynchronously)."""
    deadline = time.monotonic() + within_s
    while service.post("/v1/embeddings", json={"input": "probe"}).status_code != status:
        assert time.monotonic() < deadline, f"the ingress did not answer {status} within {within_s} s"
        time.sleep(0.5)
