"""`make run` in a session of its own, as a user starts the service: real Makefile, serve.env (HAProxy, Ray's token
auth with a token of its own), private ports, Ray temp dir and HAProxy files, `RAY_ADDRESS=local` so that it never
joins another Ray on the machine. Its processes are found by session id, so a test stops exactly what it started.

    service = MakeRun(Path(tempfile.mkdtemp(prefix="mr")), onnx_cache)
    service.start()                          # seconds until /healthz answers 200
    service.serve_cli("deploy", str(changed_config), "-a", service.dashboard())
    service.ctrl_c(); service.wait_stopped(60); service.kill_all()
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from ray.serve._private.constants import RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S

from graph import point_config_at
from operations.ports import free_port, private_haproxy_env
from operations.serve_env import read_serve_env
from operations.stale_haproxy import StaleHAProxySettings
from tests.support.paths import LOCAL_CONFIG, ROOT

HEALTHY_WITHIN_S = 150  # a start on 2 busy cores takes 25-40 s (the ONNX export made before, in the session's cache)
STOPPED_WITHIN_S = 60  # Ctrl-C: Serve drains (5 s, serve.env) and Ray shuts down
# A reload's displaced HAProxy drains its open connections and exits; it usually goes within seconds, but HAProxy
# only promises it by hard-stop-after (Ray's RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S, 120 s): CI once saw one outlive 15 s.
RELOADED_HAPROXY_GONE_WITHIN_S = RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S + 15


@dataclass
class MakeRun:
    """`make run` with private ports and files; each start is a new session, so its processes are findable."""

    work_dir: Path
    onnx_cache: Path  # the export of the shipped checkpoint, made before: as on a machine that ran it once
    sessions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = yaml.safe_load(LOCAL_CONFIG.read_text())
        self.port = free_port()
        config["http_options"]["port"] = self.port
        point_config_at(config, onnx_cache_dir=str(self.onnx_cache))
        self.config = self.work_dir / "serve_config.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))
        haproxy_dir = self.work_dir / "hx"
        self.env = {
            **os.environ,
            "RAY_ADDRESS": "local",
            "RAY_TMPDIR": str(self.work_dir),
            # make run turns Ray's token auth on (serve.env): a token of its own, so that none is written to ~/.ray
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            **private_haproxy_env(haproxy_dir),
        }
        self.haproxy_settings = StaleHAProxySettings.from_environ(self.env)

    def start(self) -> float:
        """Starts `make run` and returns the seconds until /healthz answers 200."""
        venv = Path(sys.prefix)
        log = self.work_dir / f"make-run-{len(self.sessions)}.log"
        started = time.monotonic()
        with log.open("wb") as output:
            make = subprocess.Popen(
                # --assume-old: never reinstall the venv from inside a test
                ["make", f"VENV={venv}", f"--assume-old={venv}/.installed", "run", f"SERVE_CONFIG={self.config}"],
                cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.sessions.append(make.pid)
        while time.monotonic() - started < HEALTHY_WITHIN_S:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            assert make.poll() is None, f"make run exited with {make.returncode}; see {log}"
            time.sleep(0.5)
        pytest.fail(f"/healthz not 200 within {HEALTHY_WITHIN_S} s of make run; see {log}")

    def log_text(self) -> str:
        return (self.work_dir / f"make-run-{len(self.sessions) - 1}.log").read_text(errors="replace")

    def dashboard(self, within_s: float = 30) -> str:
        """The dashboard of the running service's Ray (what `serve deploy -a` takes), from `serve run`'s output."""
        deadline = time.monotonic() + within_s
        while not (match := re.search(r"dashboard at \S*?(http://127\.0\.0\.1:\d+)", self.log_text())):
            assert time.monotonic() < deadline, (
                f"no dashboard address in the output of make run:\n{self.log_text()[-3000:]}"
            )
            time.sleep(0.5)
        return match.group(1)

    def serve_cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """The `serve` CLI in a shell like the one `make run` runs in: serve.env exported (token auth), this
        service's token."""
        serve = Path(sys.executable).with_name("serve")
        env = {**self.env, **read_serve_env()}
        return subprocess.run(
            [str(serve), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def processes(self) -> list[psutil.Process]:
        """Live processes of the sessions this test started (zombies, which hold no ports, left out)."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) in self.sessions and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (psutil.Error, ProcessLookupError):
                pass
        return found

    def haproxies(self) -> list[psutil.Process]:
        """This setup's HAProxy processes: `-f` names one of its per-node config files."""
        found = []
        for process in self.processes():
            args = cmdline(process)
            if "-f" in args[:-1] and self.haproxy_settings.is_node_config(Path(args[args.index("-f") + 1])):
                found.append(process)
        return found

    def the_haproxy(self, within_s: float = RELOADED_HAPROXY_GONE_WITHIN_S) -> psutil.Process:
        """The one HAProxy of the running service, once a reload's previous processes have exited."""
        deadline = time.monotonic() + within_s
        while len(haproxies := self.haproxies()) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(haproxies) == 1, f"expected one HAProxy, found {[cmdline(p) for p in haproxies]}"
        return haproxies[0]

    def crash(self) -> None:
        """`ray stop --force`, scoped to this Ray: SIGKILL every process of it except HAProxy, which Ray does not
        know by name. All of them at once, as when the node dies: they are frozen (SIGSTOP) before any is killed, so
        that no raylet sees its HAProxyManager worker die and kills that worker's process group, HAProxy with it
        (Ray's per-worker process-group cleanup; killed one by one, the outcome depends on the order)."""
        victims = set(self.processes()) - set(self.haproxies())
        for process in victims:
            _signal(process, signal.SIGSTOP)
        for process in victims:
            _signal(process, signal.SIGKILL)

    def ctrl_c(self) -> None:
        """What Ctrl-C does in the terminal of `make run`: SIGINT to its foreground process group."""
        os.killpg(self.sessions[-1], signal.SIGINT)

    def wait_stopped(self, within_s: float) -> list[psutil.Process]:
        deadline = time.monotonic() + within_s
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def kill_all(self) -> None:
        for process in self.processes():
            _signal(process, signal.SIGKILL)
        self.wait_stopped(10)


def replica_actor_ids(dashboard: str, token: str) -> dict[str, set[str]]:
    """Live Serve replicas per `application:deployment`: their actor ids, from the dashboard's state API (what
    `ray list actors` reads), with the cluster's token."""
    response = requests.get(
        f"{dashboard}/api/v0/actors",
        params={"limit": 1000, "filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:500]
    found: dict[str, set[str]] = {}
    for actor in response.json()["data"]["result"]["result"]:
        if actor["class_name"].startswith("ServeReplica:"):
            found.setdefault(actor["class_name"].removeprefix("ServeReplica:"), set()).add(actor["actor_id"])
    return found


def cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)  # psutil checks that the pid was not reused
    except psutil.Error:
        pass


def port_in_use(port: int) -> bool:
    """Something listens on 127.0.0.1:`port` (a bind test would also fail on the closed connections that linger in
    TIME_WAIT after a clean stop)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False
