"""Python handles: the ingress's methods return what HTTP returns; other Serve applications call them; heads are
called only when asked for; knobs change without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import ray
from ray import serve

from deployments.errors import ErrorKind, ServiceError
from graph import APP_NAME, ENCODER_APP, head_app_name
from tests.support.paths import ROOT

from .helpers import assert_matches_model, sample_texts

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # replicas cannot import this test module
EXAMPLE = ROOT / "examples" / "call_from_another_app.py"


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Caller:
    """Another team's application: reaches the classifier by its application name only."""

    async def __call__(self, texts: list[str]) -> dict:
        classifier = serve.get_app_handle(APP_NAME)
        prediction = await classifier.predict.remote(texts, tasks=["sentiment"])
        embedding = await classifier.embed.remote(texts)
        return {"labels": [r["sentiment"]["label"] for r in prediction["results"]], "dim": embedding["dimension"]}


@pytest.fixture(scope="module")
def ingress(service):
    return serve.get_app_handle(APP_NAME)


def _round(value, digits: int = 5):
    """JSON numbers vs Python floats: compare at a precision both keep."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def test_the_local_config_reaches_the_replicas(service):
    info = serve.get_deployment_handle("Encoder", app_name=ENCODER_APP).info.remote().result()
    assert (info["device"], info["dtype"], info["runtime"]) == ("cpu", "int8", "onnx")  # runtime: onnx-int8
    # fixed activation scales (the shipped checkpoint's activation ranges): shared passes, answers their own
    assert (info["activations"], info["max_pass_texts"]) == ("static", 0)
    assert info["settings"] == {
        "max_batch_size": 4,
        "max_batch_tokens": 512,
        "threads": 1,
    }
    assert info["threads"] == 1  # set from user_config
    assert info["fingerprint"] == serve.get_app_handle(APP_NAME).tasks.remote().result()["model"]["fingerprint"]


def test_handle_predict_returns_the_http_shape(service, ingress):
    texts = sample_texts(4)
    by_handle = ingress.predict.remote(texts, tasks=["topic", "sentiment"], return_embeddings=True).result()
    by_http = service.post("/v1/predict", json={"texts": texts, "return_embeddings": True}).json()
    assert _round(by_handle) == _round(by_http)
    assert json.loads(json.dumps(by_handle)) == by_handle  # plain JSON types only


def test_handle_embed_and_tasks_return_the_http_shape(service, ingress):
    texts = sample_texts(3)
    assert _round(ingress.embed.remote(texts).result()) == _round(
        service.post("/v1/embed", json={"texts": texts}).json()
    )
    raw = ingress.embed.remote(texts, normalize=False).result()
    assert not np.allclose(np.linalg.norm(raw["embeddings"], axis=1), 1.0)
    assert ingress.tasks.remote().result() == service.get("/v1/tasks").json()
    assert ingress.health.remote().result() == service.get("/healthz").json()


@pytest.mark.parametrize(
    "kwargs, kind",
    [
        ({"texts": []}, ErrorKind.validation_error),
        ({"texts": "one string"}, ErrorKind.validation_error),
        ({"texts": ["ok", ""]}, ErrorKind.empty_text),
        ({"texts": ["ok"], "tasks": ["weather"]}, ErrorKind.unknown_task),
        ({"texts": ["ok"] * 65}, ErrorKind.too_many_texts),
    ],
)
def test_handle_errors_carry_the_same_kinds(ingress, kwargs, kind):
    with pytest.raises(ServiceError) as raised:
        ingress.predict.remote(**kwargs).result()
    assert raised.value.kind == kind


def test_only_the_asked_heads_are_called(service, ingress, served_model):
    apps = {"TopicHead": head_app_name("topic"), "SentimentHead": head_app_name("sentiment")}
    heads = {name: serve.get_deployment_handle(name, app_name=app) for name, app in apps.items()}
    for name, app in apps.items():  # one replica each, so its counters see every call
        status = serve.status().applications[app].deployments[name]
        assert status.replica_states == {"RUNNING": 1}, status
    before = {name: handle.stats.remote().result() for name, handle in heads.items()}

    texts = sample_texts(5)
    result = ingress.predict.remote(texts, tasks=["topic"]).result()
    assert service.post("/v1/predict/topic", json={"texts": texts}).status_code == 200
    for got, want in zip(result["results"], served_model.predict(texts, tasks=["topic"])):
        assert_matches_model(got, want, ["topic"])

    after = {name: handle.stats.remote().result() for name, handle in heads.items()}
    assert after["TopicHead"]["calls"] - before["TopicHead"]["calls"] == 2
    assert after["TopicHead"]["texts"] - before["TopicHead"]["texts"] == 10
    assert after["SentimentHead"] == before["SentimentHead"]  # never reached


def test_one_encoder_pass_per_text_for_both_heads(ingress):
    encoder = serve.get_deployment_handle("Encoder", app_name=ENCODER_APP)
    before = encoder.stats.remote().result()
    ingress.predict.remote(sample_texts(6)).result()  # both heads
    assert encoder.stats.remote().result()["texts"] - before["texts"] == 6


def test_a_second_application_calls_the_first_through_its_app_handle(service, ingress):
    texts = sample_texts(3)
    caller = serve.run(Caller.bind(), name="caller", route_prefix=None)
    try:
        answer = caller.remote(texts).result()
    finally:
        serve.delete("caller")
    expected = [r["sentiment"]["label"] for r in ingress.predict.remote(texts).result()["results"]]
    assert answer == {"labels": expected, "dim": 1024}


def test_the_documented_example_script_runs_against_the_cluster(service):
    env = {**os.environ, "RAY_ADDRESS": service.gcs_address, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=EXAMPLE.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentiment" in done.stdout and "dimension 1024" in done.stdout, done.stdout


def test_a_head_refuses_embeddings_from_another_encoder(service):
    from deployments.encoded_texts import EncodedTexts
    from multitask.errors import EncoderMismatchError

    head = serve.get_deployment_handle("TopicHead", app_name=head_app_name("topic"))
    foreign = EncodedTexts(np.zeros((2, 1024), np.float32), [False, False], fingerprint="0123456789abcdef")
    with pytest.raises(EncoderMismatchError, match="0123456789abcdef"):
        head.classify.remote(foreign).result()
    assert head.ping.remote().result() == "ok"


def test_custom_metrics_reach_the_prometheus_endpoint(service):
    import requests

    assert service.post("/v1/predict", json={"texts": ["Metrics, please.", "And again."]}).status_code == 200
    assert service.post("/v1/predict", json={"texts": []}).status_code == 422  # refused by the HTTP layer
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = [
        "ray_multitask_encoder_batch_size_count{",
        "ray_multitask_encoder_texts_total{",
        "ray_multitask_predicted_labels_total{",
        "ray_multitask_confidence_bucket{",
        "ray_multitask_head_texts_total{",
        "ray_multitask_task_texts_total{",
        "ray_multitask_request_latency_ms_bucket{",
        'error_type="validation_error"',
    ]
    deadline = time.monotonic() + 60  # replicas push metrics every few seconds
    while True:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        missing = [name for name in wanted if name not in text]
        if not missing:
            break
        assert time.monotonic() < deadline, f"not exported: {missing}"
        time.sleep(2)
    labels = [line for line in text.splitlines() if line.startswith("ray_multitask_predicted_labels_total{")]
    assert any('task="topic"' in line for line in labels) and any('task="sentiment"' in line for line in labels)
