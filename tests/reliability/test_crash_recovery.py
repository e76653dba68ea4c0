"""A crashed Ray leaves nothing that blocks the next start: `make run` after a crash is healthy again by itself.

The crash is `ray stop --force` scoped to one Ray: SIGKILL of every Ray process (raylet, GCS, workers, the
`make run` / `serve run` processes), so HAProxyManager cannot stop its HAProxy child, which keeps the HTTP port.
(`ray stop --force` itself would stop every Ray on the machine, so the test kills its own session's processes.)
The service is started by the real `make run` in its own session, with private ports, Ray temp dir and HAProxy
files (serve.env only sets the mode, not these), and `RAY_ADDRESS=local` so it never joins another Ray on the
machine. Teardown kills only the processes of the sessions this test started, HAProxy included.

    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/reliability/test_crash_recovery.py -s
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from deployments.stale_haproxy import StaleHAProxySettings, find_stale_haproxies
from tests.support.paths import LOCAL_CONFIG, ROOT
from tests.support.ports import free_port, private_haproxy_env

pytestmark = pytest.mark.slow

HEALTHY_WITHIN_S = 150  # a start on 2 busy cores takes 25-40 s (the ONNX export made before, in the session's cache)
STOPPED_WITHIN_S = 60  # Ctrl-C: Serve drains (5 s, serve.env) and Ray shuts down


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
        config["applications"][0]["args"]["onnx_cache_dir"] = str(self.onnx_cache)
        self.config = self.work_dir / "serve_config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        haproxy_dir = self.work_dir / "hx"
        self.env = {
            **os.environ,
            "RAY_ADDRESS": "local",
            "RAY_TMPDIR": str(self.work_dir),
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
            args = _cmdline(process)
            if "-f" in args[:-1] and self.haproxy_settings.is_node_config(Path(args[args.index("-f") + 1])):
                found.append(process)
        return found

    def the_haproxy(self, within_s: float = 15) -> psutil.Process:
        """The one HAProxy of the running service, once a reload's previous process has exited."""
        deadline = time.monotonic() + within_s
        while len(haproxies := self.haproxies()) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(haproxies) == 1, f"expected one HAProxy, found {[_cmdline(p) for p in haproxies]}"
        return haproxies[0]

    def crash(self) -> None:
        """`ray stop --force`, scoped to this Ray: SIGKILL every process of it except HAProxy, which Ray does not
        know by name."""
        for process in set(self.processes()) - set(self.haproxies()):
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


def _cmdline(process: psutil.Process) -> list[str]:
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


@pytest.fixture
def make_run(shipped_onnx_cache: Path) -> Iterator[MakeRun]:
    # short: Ray's and HAProxy's unix sockets live under it (at most 107 characters)
    work_dir = Path(tempfile.mkdtemp(prefix="cr"))
    service = MakeRun(work_dir, shipped_onnx_cache)
    try:
        yield service
    finally:
        service.kill_all()
        shutil.rmtree(work_dir, ignore_errors=True)


def test_make_run_after_a_crash_is_healthy_again(make_run: MakeRun) -> None:
    first_start_s = make_run.start()
    haproxy = make_run.the_haproxy()
    assert find_stale_haproxies(make_run.haproxy_settings) == [], "the running service's HAProxy was taken as stale"

    make_run.crash()
    # the repro: Ray is gone, its HAProxy is not, and it still holds the service's port
    leftovers = make_run.wait_stopped(within_s=30)
    assert leftovers == [haproxy], f"expected only the orphaned HAProxy to survive the crash, found {leftovers}"
    assert port_in_use(make_run.port), "the crash freed the HTTP port: nothing left to recover from"
    assert [stale.pid for stale in find_stale_haproxies(make_run.haproxy_settings)] == [haproxy.pid]

    recovered_s = make_run.start()
    # (the stale HAProxy may answer /healthz itself when the new Ingress replica takes the old one's port)
    assert not haproxy.is_running() or haproxy.status() == psutil.STATUS_ZOMBIE, "the stale HAProxy still runs"
    assert make_run.the_haproxy() != haproxy and find_stale_haproxies(make_run.haproxy_settings) == []

    make_run.ctrl_c()
    left = make_run.wait_stopped(within_s=STOPPED_WITHIN_S)
    assert left == [], f"Ctrl-C left processes behind: {[_cmdline(p) for p in left]}"
    assert not port_in_use(make_run.port)
    print(f"\ncrash recovery: first start healthy in {first_start_s:.1f} s, after the crash in {recovered_s:.1f} s")
