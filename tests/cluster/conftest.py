"""A three-node Ray cluster on this one machine, with serve_config.yaml deployed on it the production way.

    head        3 CPUs, the dashboard (what `serve deploy` talks to), the Serve controller
    cpu worker  3 CPUs                     -> heads and ingress replicas (with the head node)
    gpu worker  4 CPUs + 1 GPU (declared)  -> the Encoder (`num_gpus: 1`); there is no real GPU here, so the Encoder's
                                              `device: auto` runs it on CPU, but placement is Ray's real scheduling

Nodes are started with Ray's own `ray.cluster_utils.Cluster` (each a raylet of its own, killed for real by
`remove_node`) and the environment `make run` has (serve.env: HAProxy, throughput-optimized Serve). Nodes on one
host share 127.0.0.1, so each gets its own HAProxy stats/metrics ports and worker proxy port (Ray's per-node knobs)
and HAProxy files under a private directory (Ray scopes them by node id). The deploy is the CLI a user runs:
`serve start` (HTTP on a free port of 127.0.0.1: serve_config.yaml's 0.0.0.0:8000 would collide with a `make run`
on this machine; Serve ignores a deploy's http_options once it runs) then `serve deploy serve_config.yaml -a
<dashboard>`, serve_config.yaml unchanged.

Ray's token auth is on, as README's recipe runs it: every node starts with RAY_AUTH_MODE=token (serve.env) and the
cluster's token in RAY_AUTH_TOKEN (a fresh one, as from a secret store; nothing is written to ~/.ray), and the
`serve` CLI deploys with the same two variables in its environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from operations.ports import free_port, haproxy_ports
from tests.support.haproxy_orphans import stop_orphaned_haproxies
from tests.support.paths import ROOT

CLUSTER_CONFIG = ROOT / "serve_config.yaml"
SERVE = str(Path(sys.executable).with_name("serve"))
GIB = 1024**3
SERVICE_APPS = [app["name"] for app in yaml.safe_load(CLUSTER_CONFIG.read_text())["applications"]]
HEAD_NODE = {"num_cpus": 3, "memory": 8 * GIB}
CPU_WORKER = {"num_cpus": 3, "memory": 8 * GIB}
GPU_WORKER = {"num_cpus": 4, "num_gpus": 1, "memory": 17 * GIB}  # the Encoder asks 4 CPUs, 1 GPU, 16 GiB
DEPLOY_TIMEOUT_S = 420  # first start on a fresh machine: ONNX export of the checkpoint on the GPU node


def node_env(worker: bool) -> dict[str, str]:
    """Per-node ports: HAProxy stats and metrics, Serve's fallback proxy, and (workers) the HTTP port of the node's
    proxy, so that three proxies fit on one host."""
    env = haproxy_ports()
    if worker:
        env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(free_port())
    return env


@dataclass
class ServedCluster:
    cluster: object  # ray.cluster_utils.Cluster
    dashboard: str
    url: str
    home: Path  # HOME of every node: the checkpoint and ONNX caches live under it, not in the user's ~/.cache
    headers: dict = field(default_factory=dict)  # sent with every request of tests/support/load.py (none here)
    workers: dict = field(default_factory=dict)  # "cpu" / "gpu" -> ray._private.node.Node

    def add_worker(self, kind: str) -> None:
        resources = GPU_WORKER if kind == "gpu" else CPU_WORKER
        self.workers[kind] = self.cluster.add_node(**resources, env_vars={**node_env(True), "HOME": str(self.home)})

    def node_of(self, node_id: str) -> str:
        """'head', 'cpu' or 'gpu' for a node id; 'lost' for a node removed (until Ray marks its actors dead)."""
        if node_id == self.cluster.head_node.node_id:
            return "head"
        return next((kind for kind, node in self.workers.items() if node.node_id == node_id), "lost")

    def replicas(self) -> dict[str, list[str]]:
        """Live replicas per deployment: the kind of node each runs on."""
        from ray.util.state import list_actors

        placed: dict[str, list[str]] = {}
        for actor in list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")], limit=1000):
            prefix, _, deployment = actor.class_name.rpartition(":")
            if prefix in {f"ServeReplica:{app}" for app in SERVICE_APPS}:
                placed.setdefault(deployment, []).append(self.node_of(actor.node_id))
        return placed

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def diagnosis(self) -> str:
        """What a failed deploy leaves to read: `serve status`, /healthz's answer and the tails of the Serve logs
        of every node (controller, replicas, proxies)."""
        parts = [f"serve status:\n{run_serve_cli('status', '-a', self.dashboard).stdout}"]
        try:
            answer = self.get("/healthz", timeout=5)
            parts.append(f"/healthz: {answer.status_code} {answer.text[:2000]}")
        except requests.RequestException as exc:
            parts.append(f"/healthz: {exc!r}")
        nodes = [self.cluster.head_node, *self.workers.values()]
        for logs in sorted({Path(node.get_logs_dir_path()) / "serve" for node in nodes}):
            for log in sorted(logs.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {log.name}\n" + "\n".join(line[:400] for line in tail))
        return "\n".join(parts)

    def failed_applications(self) -> dict[str, str]:
        """The applications Serve reports DEPLOY_FAILED (a final state: Serve does not retry them by itself), with
        their messages; asked of the dashboard's REST API with the cluster's token."""
        try:
            answer = requests.get(
                f"{self.dashboard}/api/serve/applications/",
                headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"},
                timeout=10,
            )
            applications = answer.json().get("applications") or {} if answer.status_code == 200 else {}
        except (requests.RequestException, ValueError):
            return {}
        return {
            name: app.get("message", "") for name, app in applications.items() if app.get("status") == "DEPLOY_FAILED"
        }

    def wait_healthy(self, within_s: float) -> float:
        """Seconds until /healthz answered 200; fails past `within_s`, or as soon as an application's deploy failed."""
        start = next_check = time.monotonic()
        while True:
            try:
                if self.get("/healthz", timeout=5).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            now = time.monotonic()
            assert now - start < within_s, f"/healthz not 200 within {within_s} s"
            if now >= next_check:
                failed, next_check = self.failed_applications(), now + 10
                assert not failed, f"serve deploy failed after {now - start:.0f} s: {failed}"
            time.sleep(1)


def run_serve_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The `serve` CLI with `env` (default: this process's, which holds the cluster's token)."""
    return subprocess.run(
        [SERVE, *args], check=False, capture_output=True, text=True, timeout=120, env=env or os.environ.copy()
    )


def serve_cli(*args: str) -> str:
    done = run_serve_cli(*args)
    assert done.returncode == 0, f"serve {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@contextmanager
def token_auth(token: str) -> Iterator[None]:
    """Ray's token auth on in this process and in everything it starts (the nodes, the CLI), with `token`; the
    environment as it was afterwards. Ray caches the mode and the token per process, so both are refreshed."""
    from ray._raylet import AuthenticationTokenLoader, Config

    def refresh() -> None:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    previous = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    refresh()
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        refresh()


@pytest.fixture(scope="package")
def served_cluster(tmp_path_factory) -> Iterator[ServedCluster]:
    with token_auth(secrets.token_hex(32)):  # Ray's own format: 256 random bits, hex
        yield from _served_cluster(tmp_path_factory)


def _served_cluster(tmp_path_factory) -> Iterator[ServedCluster]:
    from ray.cluster_utils import Cluster

    assert os.environ["RAY_AUTH_MODE"] == "token"
    home = tmp_path_factory.mktemp("cluster-home")
    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **HEAD_NODE,
            "include_dashboard": True,
            "dashboard_port": dashboard_port,
            # Ray's fixed defaults (GCS 6379, dashboard agent 52365) may be held on this host by a Ray that is not
            # ours (a user's, or one a crashed run left): the head takes free ones, as the workers do (Cluster's own)
            "gcs_server_port": free_port(),
            "dashboard_agent_listen_port": free_port(),
            "env_vars": {**node_env(False), "HOME": str(home)},
        },
    )
    served = ServedCluster(cluster, f"http://127.0.0.1:{dashboard_port}", "", home)
    try:
        served.add_worker("cpu")
        served.add_worker("gpu")
        port = free_port()
        serve_cli("start", "--address", cluster.address, "--http-host", "127.0.0.1", "--http-port", str(port))
        served.url = f"http://127.0.0.1:{port}"
        serve_cli("deploy", str(CLUSTER_CONFIG), "-a", served.dashboard)
        try:
            seconds = served.wait_healthy(within_s=DEPLOY_TIMEOUT_S)
        except AssertionError:
            print(served.diagnosis())
            raise
        print(f"\n[cluster] serve deploy serve_config.yaml: /healthz 200 after {seconds:.0f} s")
        yield served
    finally:
        try:
            serve_cli("shutdown", "-a", served.dashboard, "-y")
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            print(f"serve shutdown failed: {exc}")
        cluster.shutdown()
        stop_orphaned_haproxies()  # a node removed without grace (the node-loss tests) leaves its HAProxy behind
