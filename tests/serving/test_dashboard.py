"""deploy/grafana/multitask.json: a Grafana dashboard whose every query reads metrics the running graph exports.

The deployed graph of tests/serving gets traffic that touches every metric (both tasks, one task, a truncated
text, client errors); then the Ray node's Prometheus endpoint (`MetricsExportPort`, what Prometheus scrapes on
every node) must list every metric name the dashboard's PromQL queries. Ray exports every few seconds, so the
scrape is polled, with a bound.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "multitask.json"
METRIC_NAME = re.compile(r"\bray_[a-z0-9_]+")
EXPORT_WITHIN_S = 90  # Ray's metrics agent exports on its own period; first export of a new series can lag


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def queried_metrics(board: dict) -> set[str]:
    return {name for expr in queries(board) for name in METRIC_NAME.findall(expr)}


def exported_metrics(scrape: str) -> set[str]:
    """Metric names in a Prometheus text exposition (sample lines, not # HELP/# TYPE)."""
    return {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}


def test_dashboard_is_an_importable_grafana_dashboard():
    """Panels on the Prometheus datasource variable, filtered by the application variable, with unique ids and
    panels that cover what an operator watches."""
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "application" in variables
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert 'application="$application"' in target["expr"], (panel["title"], target["expr"])
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    wanted = {
        "requests": "ray_multitask_requests_total",
        "errors by type": "ray_multitask_errors_total",
        "latency": "ray_multitask_request_latency_ms_bucket",
        "encoder batch size": "ray_multitask_encoder_batch_size_bucket",
        "encoder tokens": "ray_multitask_encoder_tokens_total",
        "per-task traffic": "ray_multitask_task_texts_total",
        "label mix": "ray_multitask_predicted_labels_total",
        "confidence": "ray_multitask_confidence_bucket",
        "replicas per deployment": "ray_serve_deployment_replica_healthy",
    }
    missing = {what: name for what, name in wanted.items() if name not in queried_metrics(board)}
    assert not missing, f"the dashboard shows no {missing}"


def test_every_metric_the_dashboard_queries_is_exported_by_the_running_graph(service):
    import ray

    long_text = "word " * 400  # past the encoder's 128 tokens: truncated
    for _ in range(3):
        assert service.post("/v1/predict", json={"texts": ["Stocks fell.", long_text]}).status_code == 200
        assert service.post("/v1/predict/topic", json={"texts": ["The striker scored twice."]}).status_code == 200
        assert service.post("/v1/predict", json={"texts": ["x"], "tasks": ["weather"]}).status_code == 422
    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = queried_metrics(dashboard())
    deadline = time.monotonic() + EXPORT_WITHIN_S
    while True:
        exported = exported_metrics(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        missing = wanted - exported
        if not missing:
            break
        assert time.monotonic() < deadline, (
            f"{DASHBOARD.relative_to(ROOT)} queries metrics that the graph does not export within "
            f"{EXPORT_WITHIN_S} s: {sorted(missing)}"
        )
        time.sleep(2)
