"""Free TCP ports on 127.0.0.1 for every Ray/Serve/HAProxy port the tests start on, and a private set of HAProxy
ports and files for each Ray a test starts (HAProxy mode otherwise takes fixed ports and /tmp/haproxy-serve)."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def haproxy_ports() -> dict[str, str]:
    """HAProxy stats and metrics and Serve's fallback proxy: the per-node ports of serve.env's HAProxy mode."""
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
    }


def private_haproxy_env(directory: str | Path | None = None) -> dict[str, str]:
    """Fresh HAProxy ports and files under `directory` (default: a new /tmp/hx* folder; keep it short: Ray adds the
    node id, and HAProxy allows socket paths of 97 bytes), so that a Ray started with this environment never collides
    with another on this machine."""
    directory = directory or tempfile.mkdtemp(prefix="hx")
    return {
        **haproxy_ports(),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{directory}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{directory}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{directory}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(directory),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{directory}/server-state",
    }
