"""A separate, small-capacity deployment of the real graph for the overload and replica-fault tests (marked slow).

Its own local Ray and Serve (so killing replicas never disturbs tests/serving), the options of
serve_config.local.yaml with smaller queues, a shorter request deadline and bearer-token auth on, on the shipped
checkpoint. Capacity: one ingress replica works on `MAX_INFLIGHT` requests at once; beyond that it sheds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from graph_under_test import graph_under_test

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = ROOT / "serve_config.local.yaml"
MAX_INFLIGHT = 16  # the ingress's max_inflight_requests here: "capacity" of the overload test
REQUEST_TIMEOUT_S = 8.0  # the ingress's request_timeout_s here
TOKEN = "reliability-test-token"


@dataclass
class Deployed:
    url: str
    headers: dict

    def post(self, path: str, timeout: float = 30, **kwargs) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers, timeout=timeout, **kwargs)

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers, timeout=timeout)

    def wait_healthy(self, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                if self.get("/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"/healthz not 200 within {within_s} s"
            time.sleep(0.5)


def small_config(tmp_path: Path) -> Path:
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    (application,) = config["applications"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for deployment in application["deployments"]:
        if deployment["name"] == "Ingress":
            deployment["user_config"].update(
                max_inflight_requests=MAX_INFLIGHT, request_timeout_s=REQUEST_TIMEOUT_S, auth_token_file=str(token_file)
            )
        else:
            deployment.update(max_ongoing_requests=8, max_queued_requests=16)
    path = tmp_path / "serve_config.small.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="package")
def deployed(tmp_path_factory) -> Deployed:
    config = small_config(tmp_path_factory.mktemp("reliability"))
    with graph_under_test(config, num_cpus=3, checkpoint=str(ROOT / "checkpoints" / "default")) as url:
        yield Deployed(url, {"authorization": f"Bearer {TOKEN}"})
