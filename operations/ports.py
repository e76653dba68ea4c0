"""Ports and files for a second Ray with Serve on a host that already runs one (tests, benchmarks, a trial service
beside `make run`): free TCP ports on 127.0.0.1, and a private set of HAProxy ports and files (serve.env's HAProxy
mode otherwise takes fixed ports, 8404/9101/8500/9500, and /tmp/haproxy-serve)."""

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
