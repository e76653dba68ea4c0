"""The HTTP app without a graph, on a fake ingress: the written seam between the app and the ingress, and
bearer-token auth."""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient

from deployments.errors import ErrorKind
from deployments.http import IngressApi, create_app
from deployments.ingress import Ingress
from deployments.settings import HttpSettings
from tests.support.fake_ingress import FakeIngress


# --- the HTTP app's seam: what it needs of the ingress -------------------------------------------------------------
def _interface(cls: type) -> dict[str, inspect.Signature | None]:
    """Public methods with their signatures, and annotated attributes (None), of a class and its bases."""
    members: dict[str, inspect.Signature | None] = {}
    for klass in reversed(cls.__mro__):
        members.update(dict.fromkeys(name for name in vars(klass).get("__annotations__", {}) if name[0] != "_"))
        members.update(
            (name, inspect.signature(value))
            for name, value in vars(klass).items()
            if inspect.isfunction(value) and name[0] != "_"
        )
    return members


@pytest.mark.parametrize("implementation", [Ingress.func_or_class, FakeIngress], ids=["Ingress", "FakeIngress"])
def test_the_ingress_and_the_fake_implement_what_the_http_app_needs(implementation):
    wanted = _interface(IngressApi)
    given = _interface(implementation)
    assert {name: given.get(name, "missing") for name in wanted} == wanted


# --- bearer-token auth --------------------------------------------------------------------------------------------
@pytest.fixture
def guarded() -> tuple[TestClient, FakeIngress]:
    fake = FakeIngress(token=b"s3cret-token")
    return TestClient(create_app(fake)), fake


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        "Bearer s3cret-toke",
        "Bearer s3cret-token-and-more",
        "Basic czNjcmV0LXRva2Vu",
        "s3cret-token",
    ],
)
def test_auth_refuses_missing_or_wrong_tokens_with_401(guarded, header):
    client, fake = guarded
    headers = {"authorization": header} if header else {}
    for method, path in (("post", "/v1/predict"), ("post", "/v1/embed"), ("get", "/v1/tasks"), ("get", "/docs")):
        body = {"json": {"texts": ["a"]}} if method == "post" else {}
        response = getattr(client, method)(path, headers=headers, **body)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error_type"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert fake.http_errors == [ErrorKind.unauthorized] * 4


def test_auth_lets_the_right_token_through_and_healthz_stays_open(guarded):
    client, _ = guarded
    ok = client.post("/v1/predict", json={"texts": ["a"]}, headers={"authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200, ok.text
    assert client.post(
        "/v1/predict", json={"texts": ["a"]}, headers={"authorization": "bearer s3cret-token"}
    ).is_success
    assert client.get("/healthz").status_code == 200  # no token needed


def test_auth_is_checked_before_the_body_is_read(guarded):
    client, _ = guarded
    response = client.post("/v1/predict", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    assert response.status_code == 401


def test_no_token_configured_means_no_auth():
    client = TestClient(create_app(FakeIngress(token=None)))
    assert client.post("/v1/predict", json={"texts": ["a"]}).status_code == 200


def test_auth_token_comes_from_the_env_var_or_file_the_config_names(tmp_path, monkeypatch):
    assert HttpSettings().read_token() is None
    monkeypatch.setenv("MULTITASK_TOKEN", " from-env\n")
    assert HttpSettings(auth_token_env="MULTITASK_TOKEN").read_token() == b"from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert HttpSettings(auth_token_file=str(tmp_path / "token")).read_token() == b"from-file"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"auth_token_env": "MULTITASK_UNSET_TOKEN"}, "environment variable MULTITASK_UNSET_TOKEN"),
        ({"auth_token_file": "/nonexistent/token"}, "auth_token_file /nonexistent/token cannot be read"),
        ({"auth_token_env": "A", "auth_token_file": "b"}, "not both"),
    ],
)
def test_auth_named_but_missing_fails_the_deploy(settings, message, monkeypatch):
    monkeypatch.delenv("MULTITASK_UNSET_TOKEN", raising=False)
    with pytest.raises(ValueError, match=message):
        HttpSettings(**settings).http_policy()


# --- /docs without the internet ------------------------------------------------------------------------------------
def test_the_api_docs_page_loads_every_asset_from_the_service_itself():
    """FastAPI's default /docs takes Swagger UI from a CDN (blank on an offline cluster); this one serves its own."""
    import re

    client = TestClient(create_app(FakeIngress()))
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert not re.findall(r"https?://", page.text), "the page names something off this service"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert client.get("/openapi.json").json()["info"]["title"]
