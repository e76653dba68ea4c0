"""Every route answers what its OpenAPI document promises: each 200 body and each error body, read back through the
pydantic model the document names, is the same JSON (no key the model lacks, none it needs missing, no type it
would have to coerce). The routes build their JSON without the models (the models generate /openapi.json), so this
is what keeps the two from drifting; the ingress's handle methods, which the routes call, are checked the same way.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from ray import serve

from deployments import hf_compat, openai_compat, schemas
from graph import APP_NAME

MODELS: dict[str, type[BaseModel]] = {
    name: model
    for module in (schemas, openai_compat, hf_compat)
    for name, model in vars(module).items()
    if isinstance(model, type) and issubclass(model, BaseModel)
}
TEXTS = ["The striker scored twice in the final.", "Shares fell after the results."]

REQUESTS: dict[tuple[str, str], tuple[str, dict | None]] = {
    # (method, OpenAPI path) -> (a path to call, a valid body)
    ("post", "/v1/predict"): ("/v1/predict", {"texts": TEXTS, "return_embeddings": True}),
    ("post", "/v1/predict/{task}"): ("/v1/predict/topic", {"texts": TEXTS}),
    ("post", "/v1/embed"): ("/v1/embed", {"texts": TEXTS}),
    ("post", "/v1/embeddings"): ("/v1/embeddings", {"input": TEXTS, "model": "multitask", "encoding_format": "float"}),
    ("post", "/v1/classify/{task}"): ("/v1/classify/sentiment", {"inputs": TEXTS}),
    ("get", "/v1/tasks"): ("/v1/tasks", None),
    ("get", "/healthz"): ("/healthz", None),
}
"""One valid request per JSON route of the service; a route added without one here fails the first test."""

BAD_REQUESTS: dict[tuple[str, str], tuple[str, dict]] = {
    ("post", "/v1/predict"): ("/v1/predict", {"texts": []}),
    ("post", "/v1/predict/{task}"): ("/v1/predict/no_such_task", {"texts": TEXTS}),
    ("post", "/v1/embed"): ("/v1/embed", {"texts": "not a list"}),
    ("post", "/v1/embeddings"): ("/v1/embeddings", {"input": [], "model": "multitask"}),
    ("post", "/v1/classify/{task}"): ("/v1/classify/no_such_task", {"inputs": TEXTS}),
}
"""One refused request per route with a body: its error body must be the error model the document names."""


def model_named(schema: dict) -> type[BaseModel]:
    name = schema["$ref"].rsplit("/", 1)[-1]
    assert name in MODELS, f"the OpenAPI document names {name}, which is none of the service's models"
    return MODELS[name]


def assert_is_model(model: type[BaseModel], body) -> None:
    """`body` read through `model` and written back is `body` itself."""
    assert model.model_validate(body).model_dump(mode="json", exclude_unset=True) == body, model.__name__


@pytest.fixture(scope="module")
def operations(service) -> dict[tuple[str, str], dict]:
    document = service.get("/openapi.json").json()
    return {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if "application/json" in operation["responses"].get("200", {}).get("content", {})
    }


def test_every_json_route_has_a_request_here(operations):
    assert set(operations) == set(REQUESTS)


@pytest.mark.parametrize("route", list(REQUESTS), ids=lambda route: f"{route[0].upper()} {route[1]}")
def test_a_routes_answer_is_its_response_model(service, operations, route):
    path, body = REQUESTS[route]
    response = service.post(path, json=body) if route[0] == "post" else service.get(path)
    assert response.status_code == 200, response.text
    schema = operations[route]["responses"]["200"]["content"]["application/json"]["schema"]
    assert_is_model(model_named(schema), response.json())


@pytest.mark.parametrize("route", list(BAD_REQUESTS), ids=lambda route: f"{route[0].upper()} {route[1]}")
def test_a_routes_error_is_its_error_model(service, operations, route):
    path, body = BAD_REQUESTS[route]
    response = service.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    responses = operations[route]["responses"]
    documented = responses.get(str(response.status_code)) or responses["422"]
    assert_is_model(model_named(documented["content"]["application/json"]["schema"]), response.json())


def test_the_handle_methods_answer_the_same_models(service):
    ingress = serve.get_app_handle(APP_NAME)
    assert_is_model(schemas.PredictResponse, ingress.predict.remote(TEXTS, return_embeddings=True).result())
    assert_is_model(schemas.PredictResponse, ingress.predict.remote(TEXTS, tasks=["sentiment"]).result())
    assert_is_model(schemas.EmbedResponse, ingress.embed.remote(TEXTS).result())
    assert_is_model(schemas.TasksResponse, ingress.tasks.remote().result())
    assert_is_model(schemas.HealthResponse, ingress.health.remote().result())
    assert_is_model(openai_compat.OpenAIEmbeddingsResponse, ingress.openai_embeddings.remote(TEXTS).result())
    assert_is_model(hf_compat.ClassifyResponse, ingress.classify.remote("topic", TEXTS).result())
