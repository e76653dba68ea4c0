"""Deploy the real graph of a Serve config file on a Ray of this test process's own, the way every package of real
graph tests does (tests/serving, tests/reliability, tests/autoscaling, the storage tests):

    with graph_under_test(config, num_cpus=3, checkpoint=str(ckpt)) as url:
        requests.post(url + "/v1/predict", ...)

A local Ray (`address="local"`: never another Ray running on this machine; no dashboard; token auth off), the
file's application with `args` overridden by keyword, Serve's HTTP on a free port of 127.0.0.1, and the URL yielded
once `ready(url)` holds (within 60 s); Serve and Ray are shut down afterwards, whatever happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from ports import free_port

from graph import APP_NAME, app_from_config  # after the root conftest.py applied serve.env

READY_WITHIN_S = 60


def healthz_ok(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or the app not routable yet
        return False


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
        app, http_options = app_from_config(config, **args)
        port = free_port()
        serve.start(http_options={**http_options, "host": "127.0.0.1", "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_WITHIN_S
        while not ready(url):  # serve.run returns once replicas run; be sure the graph answers
            assert time.monotonic() < deadline, f"graph deployed but not ready within {READY_WITHIN_S} s"
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()
