"""Deploy the real graph of a Serve config file on a Ray of this test process's own, the way every folder of real
graph tests does (tests/graph, tests/reliability, tests/autoscaling, tests/local_ray):

    config = local_config_with(tmp_path / "serve.yaml", ingress={"request_timeout_s": 8.0})
    with graph_under_test(config, num_cpus=3, checkpoint=str(ckpt)) as url:
        GraphClient(url).post("/v1/predict", json={"texts": ["Hello."]})

A local Ray (`address="local"`: never another Ray running on this machine; no dashboard; token auth off), the
file's applications (encoder, heads, ingress) with the Encoder's `args` overridden by keyword (`graph.apps_from_config`), Serve's HTTP on a free port of 127.0.0.1, and the URL yielded
once `ready(url)` holds (within 60 s); Serve and Ray are shut down afterwards, whatever happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from graph import run_config  # after the root conftest.py applied serve.env
from operations.ports import free_port
from tests.support.haproxy_orphans import stop_orphaned_haproxies
from tests.support.paths import LOCAL_CONFIG

READY_WITHIN_S = 60


@dataclass
class GraphClient:
    """HTTP calls to a deployed graph, with `headers` on each (a bearer token where auth is on)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def post(self, path: str, timeout: float = 60, headers: dict | None = None, **kwargs) -> requests.Response:
        return requests.post(self.url + path, headers={**self.headers, **(headers or {})}, timeout=timeout, **kwargs)

    def get(self, path: str, timeout: float = 60, headers: dict | None = None, **kwargs) -> requests.Response:
        return requests.get(self.url + path, headers={**self.headers, **(headers or {})}, timeout=timeout, **kwargs)

    def wait_healthy(self, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while not healthz_ok(self.url, self.headers):
            assert time.monotonic() < deadline, f"/healthz not 200 within {within_s} s"
            time.sleep(0.5)


def local_config_with(
    path: Path,
    ingress: dict | None = None,
    others: dict | None = None,
    encoder: dict | None = None,
    heads: dict | None = None,
) -> Path:
    """serve_config.local.yaml with the Ingress's `user_config` keys in `ingress` changed, the options in `others`
    set on every other deployment, those in `encoder` on the Encoder and those in `heads` on every head, written to
    `path`."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    for deployment in (d for application in config["applications"] for d in application["deployments"]):
        if deployment["name"] == "Ingress":
            deployment["user_config"].update(ingress or {})
        else:
            deployment.update(others or {})
        if deployment["name"] == "Encoder":
            deployment.update(encoder or {})
        if deployment["name"].endswith("Head"):
            deployment.update(heads or {})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def deployment_statuses() -> dict:
    """Serve's status of every deployment of every application it runs, by deployment name (the names are unique
    across the service's applications: Encoder, <Task>Head, Ingress)."""
    from ray import serve

    return {name: status for app in serve.status().applications.values() for name, status in app.deployments.items()}


def app_of(deployment: str) -> str:
    """The application that runs `deployment` now."""
    from ray import serve

    (app,) = [name for name, app in serve.status().applications.items() if deployment in app.deployments]
    return app


def healthz_ok(url: str, headers: dict | None = None) -> bool:
    """/healthz is 200 and no task is still starting (every configured head answers)."""
    try:
        response = requests.get(url + "/healthz", headers=headers, timeout=10)
    except requests.RequestException:  # not listening yet, or the app not routable yet
        return False
    return response.status_code == 200 and "starting" not in response.json()["deployments"].values()


@contextmanager
def graph_under_test(
    config: str | Path, num_cpus: float, ready: Callable[[str], bool] = healthz_ok, **args: str
) -> Iterator[str]:
    import ray
    from ray import serve

    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray >= 2.5x enables token auth by default
    assert not ray.is_initialized(), "these tests need a Ray of their own; another test left one running"
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        run_config(config, port=port, **args)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_WITHIN_S
        while not ready(url):  # serve.run returns once replicas run; be sure the graph answers
            assert time.monotonic() < deadline, f"graph deployed but not ready within {READY_WITHIN_S} s"
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
        stop_orphaned_haproxies()
