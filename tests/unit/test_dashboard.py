"""deploy/grafana/multitask.json is a Grafana dashboard an operator can import (that the running graph exports every
metric it queries: tests/graph/test_dashboard_metrics.py)."""

from __future__ import annotations

from tests.support.grafana import dashboard, queried_metrics


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
