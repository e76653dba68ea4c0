"""Every metric deploy/grafana/multitask.json queries is exported by the running graph.

The deployed graph gets traffic that touches every metric (both tasks, one task, a truncated text, client errors);
then the Ray node's Prometheus endpoint (`MetricsExportPort`, what Prometheus scrapes on every node) must list every
metric name the dashboard's PromQL queries. Ray exports every few seconds, so the scrape is polled, with a bound.
"""

from __future__ import annotations

import time

import requests

from tests.support.grafana import DASHBOARD, dashboard, queried_metrics
from tests.support.paths import ROOT

EXPORT_WITHIN_S = 90  # Ray's metrics agent exports on its own period; first export of a new series can lag


def exported_metrics(scrape: str) -> set[str]:
    """Metric names in a Prometheus text exposition (sample lines, not # HELP/# TYPE)."""
    return {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}


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
