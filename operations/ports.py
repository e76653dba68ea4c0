"""Ports and files for a second Ray with Serve on a host that already runs one (tests, benchmarks, a trial service
beside `make run`): free TCP ports on 127.0.0.1, and a private set of HAProxy ports and files (serve.env's HAProxy
mode otherwise takes fixed ports, 8404/9101/8500/9500, and /tmp/haproxy-serve)."""

from __future__ import annotations

import random
import socket
import tempfile
from pathlib import Path

# Ray's own processes (GCS clients, raylets, workers, the dashboard agent's gRPC) listen on ports the kernel hands out
# from its ephemeral range, and Ray's workers take 10002-19999. A port found by binding port 0 comes from that same
# ephemeral range, so between our check and Ray binding it one of Ray's processes may take it: with an explicit
# dashboard_port Ray then retries 0 times and `ray.init` fails (it did in CI: "Failed to find a valid port for
# dashboard after 0 retries"). So free ports are drawn from between Ray's worker ports and the ephemeral range.
_LOWEST = 20000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    # Binding the wildcard address fails if anything listens on the port on any address, 127.0.0.1 included.
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on, outside the kernel's ephemeral range (see above), never the same twice in one
    process."""
    candidates = list(range(_LOWEST, max(_ephemeral_start(), _LOWEST + 1000)))
    random.shuffle(candidates)
    for port in candidates:
        if port not in _handed_out and _is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port between {_LOWEST} and the ephemeral range")


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
