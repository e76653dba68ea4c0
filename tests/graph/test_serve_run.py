"""`serve run serve_config.local.yaml` through the real CLI: it starts its own Ray, deploys, answers, takes new
`user_config` values from `serve deploy` without restarting a replica, and shuts down.

The config is the local one, with three edits only: a free port (8000 may be taken), this session's checkpoint
(so the test does not depend on training) and an ONNX cache in the test's temporary folder. Its own Ray (`RAY_ADDRESS=local`): the shared graph of conftest.py may be
running in this process meanwhile.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml
from ray.util.state import list_actors

from deployments.stale_haproxy import StaleHAProxySettings, stop_stale_haproxies
from tests.support.paths import ROOT
from tests.support.ports import free_port, private_haproxy_env

START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


def test_serve_run_starts_the_local_config_and_answers(checkpoint_dir, tmp_path):
    config = yaml.safe_load((ROOT / "serve_config.local.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["checkpoint"] = str(checkpoint_dir)
    config["applications"][0]["args"]["onnx_cache_dir"] = str(tmp_path / "onnx")  # not the user's ~/.cache
    config_path = tmp_path / "serve_config.local.yaml"
    config_path.write_text(yaml.safe_dump(config))

    # its own Ray (RAY_ADDRESS=local), never one already running on this machine
    # and its own HAProxy ports and files: the shared graph's HAProxy holds this session's
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.update(private_haproxy_env(), PYTHONUNBUFFERED="1")
    log = (tmp_path / "serve_run.log").open("w")
    serve_cli = Path(sys.executable).with_name("serve")
    process = subprocess.Popen(
        [str(serve_cli), "run", str(config_path)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we stop exactly what we started
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"serve run exited early:\n{_tail(tmp_path / 'serve_run.log')}"
            assert time.monotonic() < deadline, (
                f"no healthy answer in {START_TIMEOUT_S}s:\n{_tail(tmp_path / 'serve_run.log')}"
            )
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the app not routable yet
                pass
            time.sleep(1)
        response = requests.post(f"{url}/v1/predict", json={"texts": ["The striker scored twice."]}, timeout=30)
        assert response.status_code == 200, response.text
        assert set(response.json()["results"][0]) == {"topic", "sentiment", "truncated"}
        assert response.json()["model"]["checkpoint"] == checkpoint_dir.name
        # the terminal tells the user where to send requests: the proxy's port, then the ingress's routes
        for line in (f"HTTP port: {port}", "multitask ready: POST /v1/predict"):
            while line not in _tail(tmp_path / "serve_run.log", 1_000_000):
                assert time.monotonic() < deadline + 30, f"no {line!r} line:\n{_tail(tmp_path / 'serve_run.log')}"
                time.sleep(1)
        _check_user_config_update_needs_no_restart(config, tmp_path, url, env)
    finally:
        _stop(process, env)
        log.close()


def _check_user_config_update_needs_no_restart(config: dict, tmp_path: Path, url: str, env: dict) -> None:
    """`serve deploy` of the same config with other user_config values: new limits apply, no replica restarts."""
    match = re.search(r"dashboard at \S*?(http://127\.0\.0\.1:\d+)", _tail(tmp_path / "serve_run.log", 1_000_000))
    assert match, "serve run started no dashboard, which `serve deploy` needs"
    dashboard = match.group(1)
    replicas_before = _replica_actor_ids(dashboard)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    # Ingress, two Encoders (one per core), a replica per head
    expected = sum(d["autoscaling_config"]["initial_replicas"] for d in deployments.values())
    assert len(replicas_before) == expected == 5, replicas_before

    deployments["Ingress"]["user_config"]["max_texts_per_request"] = 2
    deployments["Encoder"]["user_config"]["max_batch_size"] = 8
    updated = tmp_path / "serve_config.updated.yaml"
    updated.write_text(yaml.safe_dump(config))
    serve_cli = Path(sys.executable).with_name("serve")
    done = subprocess.run(
        [str(serve_cli), "deploy", str(updated), "-a", dashboard],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    three = {"texts": ["one", "two", "three"]}
    deadline = time.monotonic() + 60
    while (response := requests.post(f"{url}/v1/predict", json=three, timeout=30)).status_code != 413:
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the new max_texts_per_request never applied"
        time.sleep(1)
    assert response.json()["error_type"] == "too_many_texts"
    assert requests.post(f"{url}/v1/predict", json={"texts": ["one", "two"]}, timeout=30).status_code == 200
    assert _replica_actor_ids(dashboard) == replicas_before  # reconfigured in place


def _replica_actor_ids(dashboard: str) -> set[str]:
    actors = list_actors(
        address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False
    )
    return {actor.actor_id for actor in actors if actor.class_name.startswith("ServeReplica:multitask:")}


def _stop(process: subprocess.Popen, env: dict[str, str]) -> None:
    """Ctrl-C to `serve run` (it shuts Serve and its Ray down), then kill its process group if it lingers, then
    stop its HAProxy if it outlived them: HAProxy leaves the process group, and a `serve run` that did not finish
    its shutdown in time (a loaded machine) leaves it holding the port."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # Ray processes it started and left behind, if any
    except ProcessLookupError:
        pass
    process.wait()
    stop_stale_haproxies(StaleHAProxySettings.from_environ(env))  # only this test's private HAProxy files


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]
