"""The graph of configs/serve_autoscaling.yaml (heads that scale 1-3 within seconds), on its own local Ray.

Its own Ray and Serve, as tests/reliability has, since the config differs from tests/serving's; 2 logical CPUs,
as on the laptop the config is made for (its maximum, Encoder 1 + Ingress 0.25 + 6 head replicas x 0.1, fits).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from ports import free_port

from deployments.config_overlay import overlaid_config, write_overlaid

APP_NAME = "multitask"
ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "configs" / "serve_autoscaling.yaml"


@dataclass
class Autoscaled:
    url: str
    min_replicas: dict[str, int]

    def replicas(self) -> dict[str, int]:
        """RUNNING replicas per deployment, from Serve's status API."""
        from ray import serve

        deployments = serve.status().applications[APP_NAME].deployments
        return {name: status.replica_states.get("RUNNING", 0) for name, status in deployments.items()}


def answers_topic(url: str) -> bool:
    try:
        return requests.post(url + "/v1/predict/topic", json={"texts": ["ready?"]}, timeout=30).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="package")
def autoscaled(tmp_path_factory) -> Autoscaled:
    import ray
    from ray import serve

    from graph import app_from_config

    os.environ["RAY_AUTH_MODE"] = "disabled"
    assert not ray.is_initialized(), "tests/autoscaling needs its own Ray; another test left one running"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never another Ray here
    try:
        config = write_overlaid(OVERLAY, tmp_path_factory.mktemp("autoscaling") / "serve_autoscaling.yaml")
        app, http_options = app_from_config(config, checkpoint=str(ROOT / "checkpoints" / "default"))
        port = free_port()
        serve.start(http_options={**http_options, "host": "127.0.0.1", "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        (application,) = overlaid_config(OVERLAY)["applications"]
        minimum = {d["name"]: d["autoscaling_config"]["min_replicas"] for d in application["deployments"]}
        service = Autoscaled(f"http://127.0.0.1:{port}", minimum)
        # ready when HTTP reaches the graph; not through /healthz, whose pings of every head would count as
        # traffic to SentimentHead too (this config scales a head on any call in flight)
        deadline = time.monotonic() + 60
        while not answers_topic(service.url):
            assert time.monotonic() < deadline, "graph deployed but POST /v1/predict/topic never answered 200"
            time.sleep(0.5)
        yield service
    finally:
        serve.shutdown()
        ray.shutdown()
