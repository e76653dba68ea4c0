"""Hardening without a running graph: bad artifacts refused at build time, bearer-token auth, replica-death mapping,
and the written seam between the HTTP app and the ingress."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError

from deployments.errors import ErrorKind, to_service_error
from deployments.http import HttpSettings, IngressApi, create_app
from deployments.ingress import Ingress
from graph import GraphArgs, build_app, check_checkpoint
from multitask.errors import CheckpointError, EncoderMismatchError

from .fake_ingress import FakeIngress

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    shutil.copytree(DEFAULT_CHECKPOINT, directory, ignore=shutil.ignore_patterns("report"))
    return directory


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not safetensors" * 10)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _bad_config(path: Path) -> None:
    config = json.loads(path.read_text())
    config["model"]["tasks"] = "topic"  # not a list of task specs
    path.write_text(json.dumps(config))


def _not_json(path: Path) -> None:
    path.write_text("{ not json")


BAD_ARTIFACTS = [
    ("corrupt weights", "model.safetensors", _corrupt, "re-save or re-train"),
    ("truncated weights", "model.safetensors", _truncate, "re-save or re-train"),
    ("missing weights", "model.safetensors", Path.unlink, "re-save or re-train"),
    ("corrupt adapters", "encoder.safetensors", _corrupt, "re-save or re-train"),
    ("missing adapters", "encoder.safetensors", Path.unlink, "re-save or re-train"),
    ("invalid config", "config.json", _bad_config, "not a valid checkpoint config"),
    ("config not JSON", "config.json", _not_json, "not a valid checkpoint config"),
    ("missing config", "config.json", Path.unlink, "multitask train"),
]


@pytest.mark.parametrize("name, file, damage, fix", BAD_ARTIFACTS, ids=[case[0] for case in BAD_ARTIFACTS])
def test_build_app_refuses_bad_artifacts_naming_the_file_and_the_fix(checkpoint_copy, name, file, damage, fix):
    damage(checkpoint_copy / file)
    with pytest.raises(CheckpointError) as error:
        build_app(GraphArgs(checkpoint=str(checkpoint_copy)))
    assert str(checkpoint_copy / file) in str(error.value)
    assert fix in str(error.value)


def test_build_app_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; train one with `multitask train`"):
        build_app(GraphArgs(checkpoint=str(tmp_path / "nowhere")))


def test_build_app_refuses_heads_that_do_not_fit_the_config(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["model"]["tasks"][0]["labels"].append("Weather")  # 7 labels, the stored head has 6
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the model config"):
        check_checkpoint(checkpoint_copy)


def test_a_good_checkpoint_passes_the_check():
    assert check_checkpoint(DEFAULT_CHECKPOINT).model.task_names == ["topic", "sentiment"]


def test_encoder_deployment_refuses_heads_from_another_encoder(checkpoint_copy):
    """Heads trained against another encoder: the config's fingerprint differs from the encoder loaded. The Encoder
    replica's constructor fails fast (Serve reports the deployment as failed with this message)."""
    from deployments.encoder import Encoder

    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["encoder"]["fingerprint"] = "0" * 16
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderMismatchError) as error:
        Encoder.func_or_class(str(checkpoint_copy), "cpu", "float32")
    assert str(checkpoint_copy) in str(error.value) and "0" * 16 in str(error.value)
    assert "retrain the heads" in str(error.value)


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


def test_a_dead_replica_is_a_503_unavailable_not_a_500():
    error = to_service_error(ActorDiedError())
    assert error.kind is ErrorKind.unavailable and error.status_code == 503
