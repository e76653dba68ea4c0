"""Ray's token auth on the three-node cluster, as README's recipe runs it: the dashboard (Jobs API, `serve deploy`)
and the cluster's gRPC (drivers, handles) refuse whoever lacks the cluster's token, and work with it.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -s tests/cluster/test_auth.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.support.paths import ROOT

from .conftest import CLUSTER_CONFIG, ServedCluster, run_serve_cli

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "call_from_another_app.py"
JOB_TIMEOUT_S = 120


def without_the_token(home, token: str | None = None, mode: str = "token") -> dict[str, str]:
    """This process's environment as a client on another machine would have it: no token at all (an empty HOME: no
    ~/.ray/auth_token) or a wrong one, in token mode (serve.env) or with auth off (a client that sends nothing)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE=mode, HOME=str(home))
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return env


def submit_job(dashboard: str, entrypoint: str, token: str | None) -> requests.Response:
    """The Jobs API's submission, as any HTTP client (or attacker) on the network sends it."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(f"{dashboard}/api/jobs/", json={"entrypoint": entrypoint}, headers=headers, timeout=30)


def test_the_dashboard_refuses_jobs_and_deploys_without_the_token(served_cluster: ServedCluster, tmp_path):
    marker = tmp_path / "job-ran"
    entrypoint = f"{sys.executable} -c \"open('{marker}', 'w').write('ran')\""
    missing = submit_job(served_cluster.dashboard, entrypoint, token=None)
    wrong = submit_job(served_cluster.dashboard, entrypoint, token="0" * 64)
    assert (missing.status_code, wrong.status_code) == (401, 403), (missing.text, wrong.text)

    # the same job with the cluster's token runs
    accepted = submit_job(served_cluster.dashboard, entrypoint, token=os.environ["RAY_AUTH_TOKEN"])
    assert accepted.status_code == 200, accepted.text
    job_id = accepted.json()["submission_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    headers = {"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"}
    while (status := requests.get(f"{served_cluster.dashboard}/api/jobs/{job_id}", headers=headers, timeout=30)
           .json()["status"]) not in ("SUCCEEDED", "FAILED", "STOPPED"):  # fmt: skip
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {JOB_TIMEOUT_S} s"
        time.sleep(1)
    assert status == "SUCCEEDED" and marker.read_text() == "ran"

    # `serve deploy` from a shell that sends no token (the dashboard's 401 body), a wrong one (its 403 body), or that
    # has none in token mode (the CLI stops before sending) is refused; with the token, accepted
    home = tmp_path / "home"
    home.mkdir()
    for env, answer in (
        (without_the_token(home, mode="disabled"), "Unauthorized: Missing authentication token"),
        (without_the_token(home, "0" * 64), "Forbidden: Invalid authentication token"),
        (without_the_token(home), "couldn't find an authentication token"),
    ):
        refused = run_serve_cli("deploy", str(CLUSTER_CONFIG), "-a", served_cluster.dashboard, env=env)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "Authentication" in output and answer in output, output[-3000:]
    deployed = run_serve_cli("deploy", str(CLUSTER_CONFIG), "-a", served_cluster.dashboard)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert served_cluster.get("/healthz").status_code == 200
    print(f"\n[cluster] without the token: job submission {missing.status_code}, wrong token {wrong.status_code}; "
          "serve deploy refused (no token sent, a wrong one, none in token mode); with the token: the job ran and serve deploy succeeded")  # fmt: skip


def test_handles_from_another_application_work_with_the_token_only(served_cluster: ServedCluster, tmp_path):
    """The documented example (a driver's handle, then another application's replica calling the classifier by
    its app name) against the cluster: with the token it works; without it, Ray refuses the driver."""
    address = served_cluster.cluster.address

    def run_example(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env={**env, "RAY_ADDRESS": address},
            capture_output=True,
            text=True,
            timeout=240,
            cwd=EXAMPLE.parent,
            check=False,
        )

    done = run_example(dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentiment:" in done.stdout and '"topic"' in done.stdout and "dimension 1024" in done.stdout, done.stdout

    home = tmp_path / "home"
    home.mkdir()
    refused = run_example(without_the_token(home))
    assert refused.returncode != 0 and "sentiment:" not in refused.stdout
    assert "token" in refused.stderr.lower(), refused.stderr[-3000:]
