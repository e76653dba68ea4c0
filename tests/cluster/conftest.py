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
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support.paths import ROOT
from tests.support.ports import free_port, haproxy_ports

CLUSTER_CONFIG = ROOT / "serve_config.yaml"
SERVE = str(Path(sys.executable).with_name("serve"))
GIB = 1024**3
APP_NAME = "multitask"
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
    headers: dict = field(default_factory=dict)
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
            if actor.class_name.startswith(f"ServeReplica:{APP_NAME}:"):
                deployment = actor.class_name.rsplit(":", 1)[1]
                placed.setdefault(deployment, []).append(self.node_of(actor.node_id))
        return placed

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def wait_healthy(self, within_s: float) -> float:
        """Seconds until /healthz answered 200; fails past `within_s`."""
        start = time.monotonic()
        while True:
            try:
                if self.get("/healthz", timeout=5).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            assert time.monotonic() - start < within_s, f"/healthz not 200 within {within_s} s"
            time.sleep(1)


def serve_cli(*args: str) -> str:
    done = subprocess.run(
        [SERVE, *args], check=False, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert done.returncode == 0, f"serve {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="package")
def served_cluster(tmp_path_factory) -> ServedCluster:
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"
    home = tmp_path_factory.mktemp("cluster-home")
    dashboard_port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **HEAD_NODE,
            "include_dashboard": True,
            "dashboard_port": dashboard_port,
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
        seconds = served.wait_healthy(within_s=DEPLOY_TIMEOUT_S)
        print(f"\n[cluster] serve deploy serve_config.yaml: /healthz 200 after {seconds:.0f} s")
        yield served
    finally:
        try:
            serve_cli("shutdown", "-a", served.dashboard, "-y")
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            print(f"serve shutdown failed: {exc}")
        cluster.shutdown()
